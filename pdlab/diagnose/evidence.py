"""The design questions, answered with numbers for one observation.

    Q1 lengths      input and output length distributions (percentiles, histograms)
    Q2 phases       prompt-heavy or decode-heavy: GPU-seconds spent in prefill vs decode
    Q3 multi-turn   share of requests that continue an earlier one
    Q4 reuse        share of prompt blocks an unlimited prefix cache could reuse, and the hit rate
    Q5 long prompts what decode latency does while a large prefill runs (ITL inside vs outside)
    Q6 binding SLO  which of the SLOs binds (value / target), and per-request attainment
    Q7 KV capacity  KV occupancy and preemptions: is memory or compute the limit?

Plus the two facts the symptom table needs beside them: queueing (how much of TTFT is waiting,
does TTFT grow with prompt length) and the decode pace against an unloaded decode step.
Every function returns plain numbers (JSON-ready); None means "not in this observation".
"""

from __future__ import annotations

import numpy as np

from ..metrics import SLO
from ..sim import CostModel
from .observe import Observation


def _pcts(x: np.ndarray) -> dict:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if not x.size:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {"mean": float(x.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def _hist(x: np.ndarray, bins: int = 24) -> dict:
    """Log-spaced histogram (lengths span decades)."""
    x = np.asarray(x, dtype=float)
    edges = np.unique(np.rint(np.geomspace(max(1.0, x.min()), max(2.0, x.max() + 1), bins + 1)))
    counts, edges = np.histogram(x, edges)
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def lengths(obs: Observation) -> dict:
    return {"input": {**_pcts(obs.prompt_len), "hist": _hist(obs.prompt_len)},
            "output": {**_pcts(obs.output_len), "hist": _hist(obs.output_len)},
            "input_tokens": int(obs.prompt_len.sum()), "output_tokens": int(obs.output_len.sum())}


def phase_work(obs: Observation, cm: CostModel) -> dict:
    """GPU-seconds of prefill and of decode. From the iteration log when simulated (a mixed
    iteration is split by what the cost model says each part would take alone); from the cost
    model over the request lengths when measured (decode at the concurrency Little's law gives)."""
    ctx = int(obs.prompt_len.mean() + obs.output_len.mean() / 2)
    if obs.steps is not None and obs.steps.start.size:
        c = obs.steps
        dur = c.end - c.start
        pre = _per_value(c.prefill_tokens, lambda t: cm.prefill_time(t) if t else 0.0)
        dec = _per_value(c.decode_tokens, lambda b: cm.decode_time(b, ctx) if b else 0.0)
        share = np.where(pre + dec > 0, pre / np.maximum(pre + dec, 1e-30), 0.0)
        prefill_s, decode_s = float((dur * share).sum()), float((dur * (1 - share)).sum())
        how = "iteration log (mixed iterations split by the cost model)"
    else:
        prefill_s = float(sum(cm.prefill_time(int(p)) for p in obs.prompt_len))
        ok = np.isfinite(obs.ttft)
        span = _span(obs)
        decode_time = np.nansum(np.where(ok, obs.tpot * np.maximum(obs.output_len - 1, 0), 0.0))
        batch = max(1, int(round(decode_time / span))) if span else 1
        decode_s = float(obs.output_len.sum() / batch * cm.decode_time(batch, ctx))
        how = f"cost model over the lengths (decode batch {batch} from the measured pace)"
    total = prefill_s + decode_s
    share = prefill_s / total if total else 0.0
    verdict = "prompt-heavy" if share >= 0.6 else "decode-heavy" if share <= 0.4 else "balanced"
    return {"prefill_gpu_s": prefill_s, "decode_gpu_s": decode_s, "prefill_share": share,
            "verdict": verdict, "how": how,
            "token_ratio_in_out": float(obs.prompt_len.sum() / max(1, obs.output_len.sum()))}


def _per_value(x: np.ndarray, f) -> np.ndarray:
    """``f`` of every entry, computed once per distinct value (iteration logs repeat a few)."""
    u, inv = np.unique(x, return_inverse=True)
    return np.array([f(int(v)) for v in u])[inv]


def _span(obs: Observation) -> float:
    arr = np.array([r.arrival for r in obs.requests])
    if (arr >= 0).all() and np.isfinite(obs.ttft).any():
        end = arr + np.where(np.isfinite(obs.ttft), obs.ttft + np.nan_to_num(obs.tpot) * (obs.output_len - 1), 0)
        return float(end.max() - arr.min())
    return 0.0


def reuse(obs: Observation) -> dict:
    """Multi-turn share and reusable-prefix share from session ids or prefix block ids.

    A request *continues* an earlier one when it carries the same session id, or (without
    session ids) when an earlier prompt, block for block, is a prefix of it. The reusable share
    counts the leading prompt blocks an unlimited prefix cache would already hold."""
    reqs = sorted(obs.requests, key=lambda r: (r.arrival, r.id))
    sessions = [r.session_id for r in reqs]
    have_hashes = any(r.block_hashes for r in reqs)
    out = {"multi_turn_share": None, "reusable_share": None, "hit_rate": obs.prefix_hit_rate,
           "prefix_cache": obs.prefix_cache, "how": None}
    if any(s is not None for s in sessions):
        seen, cont = set(), 0
        for s in sessions:
            cont += s is not None and s in seen
            seen.add(s)
        out["multi_turn_share"] = cont / len(reqs)
        out["how"] = "session ids"
    if have_hashes:
        seen, ends, cont, hit, total = set(), set(), 0, 0, 0
        for r in reqs:
            h = r.block_hashes or ()
            k = 0
            while k < len(h) and h[k] in seen:
                k += 1
            hit += k
            total += len(h)
            cont += any(x in ends for x in h[:k])
            seen.update(h)
            if h:
                ends.add(h[-1])
        out["reusable_share"] = hit / total if total else 0.0
        if out["multi_turn_share"] is None:
            out["multi_turn_share"] = cont / len(reqs)
            out["how"] = "prefix block ids (an earlier prompt is a prefix of this one)"
    return out


def long_prompts(obs: Observation) -> dict:
    """Decode latency while a large prefill runs: gaps of the other requests' streams that
    overlap a long prompt's prefill window (first scheduled -> first token) against the rest.
    A prompt is long when it is at least the 90th percentile and twice the median."""
    p = obs.prompt_len
    cut = max(float(np.percentile(p, 90)), 2.0 * float(np.median(p)))
    is_long = p >= cut
    out = {"long_threshold_tokens": int(cut), "long_share": float(is_long.mean()), "itl_inside": None,
           "itl_outside": None, "itl_ratio": None, "ttft_short_inside": None, "ttft_short_outside": None,
           "ttft_ratio": None}
    if obs.itl_start is None or obs.prefill_start is None or not is_long.any() or is_long.all():
        return out
    lo, hi = obs.prefill_start[is_long], obs.first_token[is_long]
    ok = np.isfinite(lo) & np.isfinite(hi)
    lo, hi = lo[ok], hi[ok]
    if not lo.size:
        return out
    cover = _coverage(lo, hi)
    short_gap = ~is_long[obs.itl_owner]
    g0, g1 = obs.itl_start[short_gap], obs.itl_start[short_gap] + obs.itl[short_gap]
    inside = cover(g1) - cover(g0) > 1e-12
    gaps = obs.itl[short_gap]
    if inside.any() and (~inside).any():
        a, b = float(np.percentile(gaps[inside], 99)), float(np.percentile(gaps[~inside], 99))
        out.update(itl_inside=a, itl_outside=b, itl_ratio=a / b if b > 0 else None,
                   gaps_inside=int(inside.sum()), gaps_outside=int((~inside).sum()))
    # TTFT of short requests whose wait (arrival -> first token) overlaps a long prefill
    arr = np.array([r.arrival for r in obs.requests])
    sh = ~is_long & np.isfinite(obs.ttft)
    w_in = cover(arr[sh] + obs.ttft[sh]) - cover(arr[sh]) > 1e-12
    t = obs.ttft[sh]
    if w_in.any() and (~w_in).any():
        a, b = float(np.percentile(t[w_in], 90)), float(np.percentile(t[~w_in], 90))
        out.update(ttft_short_inside=a, ttft_short_outside=b, ttft_ratio=a / b if b > 0 else None)
    return out


def _coverage(lo: np.ndarray, hi: np.ndarray):
    """C(t): the length of the union of [lo_i, hi_i] before t. A window [a, b] overlaps the
    union exactly when C(b) > C(a)."""
    order = np.argsort(lo)
    lo, hi = lo[order], np.maximum.accumulate(hi[order])
    starts, ends = [lo[0]], [hi[0]]
    for a, b in zip(lo[1:], hi[1:]):
        if a <= ends[-1]:
            ends[-1] = max(ends[-1], b)
        else:
            starts.append(a)
            ends.append(b)
    starts, ends = np.array(starts), np.array(ends)
    cum = np.cumsum(ends - starts)
    xs = np.ravel(np.column_stack([starts, ends]))
    ys = np.ravel(np.column_stack([np.concatenate([[0.0], cum[:-1]]), cum]))   # flat between intervals
    return lambda t: np.interp(t, xs, ys)


def binding(obs: Observation, slos: list[SLO]) -> dict:
    """For each SLO its value and value / target; the binding one has the largest ratio. Also
    DistServe's count: the share of requests that meet every SLO at once."""
    rows, ok = [], np.isfinite(obs.ttft)
    for s in slos:
        x = _metric(obs, s.metric)
        if x is None:
            rows.append({"slo": str(s), "value_s": None, "ratio": None, "met": None, "requests_within": None})
            continue
        v = float(np.percentile(np.where(np.isnan(x), 0.0, np.minimum(x, 1e12)), s.percentile)) if x.size else 0.0
        per = np.isnan(x) | (x <= s.seconds) if s.metric != "itl" else np.ones(obs.n, dtype=bool)
        if s.metric != "itl":
            ok &= per
        rows.append({"slo": str(s), "value_s": None if v >= 1e11 else v, "ratio": v / s.seconds,
                     "met": v <= s.seconds, "requests_within": float(per.mean())})
    known = [r for r in rows if r["ratio"] is not None]
    bind = max(known, key=lambda r: r["ratio"])["slo"] if known else None
    return {"slos": rows, "binding": bind, "all_met": all(r["met"] for r in known) if known else None,
            "requests_within_all": float(ok.mean()) if slos else None}


def _metric(obs: Observation, m: str):
    if m == "ttft":
        return obs.ttft
    if m == "tpot":
        return obs.tpot
    if m == "itl":
        if obs.itl is None:
            return None
        late = int(np.sum(~np.isfinite(obs.ttft)))
        return np.concatenate([obs.itl, np.full(late, np.inf)])
    if m == "e2e":
        return obs.ttft + np.nan_to_num(obs.tpot) * np.maximum(obs.output_len - 1, 0)
    return None


def kv(obs: Observation) -> dict:
    out = {"preempted_share": None, "preemptions": None, "occupancy_p90": None, "occupancy_max": None,
           "busy_share": None, "rejected": obs.rejected}
    if obs.preemptions is not None:
        out["preemptions"] = int(obs.preemptions.sum())
        out["preempted_share"] = float((obs.preemptions > 0).mean())
    if obs.steps is not None and obs.steps.start.size and obs.num_blocks:
        c = obs.steps
        occ = c.kv_blocks_used / obs.num_blocks
        w = c.end - c.start                          # time-weighted: a long step counts longer
        order = np.argsort(occ)
        cw = np.cumsum(w[order]) / max(w.sum(), 1e-30)
        out["occupancy_p90"] = float(occ[order][np.searchsorted(cw, 0.9).clip(0, occ.size - 1)])
        out["occupancy_max"] = float(occ.max())
        span = max(float(c.end.max() - c.start.min()), 1e-12)
        out["busy_share"] = float(w.sum() / span / max(1, len(obs.roles)))
    return out


def queueing(obs: Observation, cm: CostModel) -> dict:
    """How much of TTFT is waiting, and whether TTFT grows with prompt length (Spearman rank
    correlation). The unloaded TTFT is the cost model's prefill of the 90th-percentile prompt."""
    ok = np.isfinite(obs.ttft)
    unloaded = cm.prefill_time(int(np.percentile(obs.prompt_len, 90)))
    out = {"ttft": _pcts(obs.ttft), "unloaded_ttft_p90_s": unloaded, "queue_share": None,
           "ttft_vs_prompt_rho": None, "queue_estimated": obs.queue is None}
    if ok.sum() >= 2:
        t, p = obs.ttft[ok], obs.prompt_len[ok]
        if obs.queue is not None:
            q = obs.queue[ok]
        else:    # measured: the wait is what the prompt's own prefill does not explain
            q = np.maximum(0.0, t - np.array([cm.prefill_time(int(x)) for x in p]))
        out["queue_share"] = float(q.sum() / max(t.sum(), 1e-30))
        out["queue"] = _pcts(q)
        out["ttft_vs_prompt_rho"] = _spearman(p, t)
    return out


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata
    return rankdata(x)


def decode_pace(obs: Observation, cm: CostModel) -> dict:
    """TPOT and ITL against one unloaded decode step (a single sequence at the mean context)."""
    ctx = int(obs.prompt_len.mean() + obs.output_len.mean() / 2)
    one = cm.decode_time(1, ctx)
    tp = _pcts(obs.tpot)
    out = {"tpot": tp, "itl": _pcts(obs.itl) if obs.itl is not None else None, "unloaded_step_s": one,
           "tpot_p90_over_unloaded": tp["p90"] / one if tp["p90"] is not None else None,
           "mean_decode_batch": None}
    if obs.steps is not None and obs.steps.start.size:
        d = obs.steps.decode_tokens
        out["mean_decode_batch"] = float(d[d > 0].mean()) if (d > 0).any() else 0.0
    return out


def gather(obs: Observation, cm: CostModel, slos: list[SLO]) -> dict:
    """Every answer, keyed by question."""
    return {"lengths": lengths(obs), "phases": phase_work(obs, cm), "reuse": reuse(obs),
            "long_prompts": long_prompts(obs), "binding": binding(obs, slos), "kv": kv(obs),
            "queueing": queueing(obs, cm), "decode": decode_pace(obs, cm)}
