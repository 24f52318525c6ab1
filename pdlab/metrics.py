"""Latency metrics from per-request records.

    TTFT   arrival -> first output token (queueing + prefill [+ nothing else])
    TPOT   per request: (finish - first token) / (output tokens - 1): the mean streaming pace
    ITL    every gap between consecutive tokens of a request (stalls show here, TPOT hides them)
    E2E    arrival -> last token
    queue  arrival -> first scheduled

An SLO ``(metric, q, seconds)`` holds when the q-th percentile of the metric is at most
``seconds``; rejected requests count as infinitely late. Goodput is the highest request rate at
which every SLO holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from .errors import PdlabError
from .gcpause import gc_paused
from .request import Sequence, Status

METRICS = ("ttft", "tpot", "itl", "e2e", "queue")
PCTS = (50, 90, 99)
_LATE = 1e12          # stands for "never" (a rejected request) inside percentile arithmetic


@dataclass(frozen=True)
class SLO:
    metric: str
    percentile: float
    seconds: float

    @classmethod
    def parse(cls, text: str) -> "SLO":
        """``ttft:p90:0.4`` -> SLO('ttft', 90, 0.4)."""
        parts = text.split(":")
        if len(parts) != 3 or not parts[1].lower().startswith("p"):
            raise PdlabError(f"bad SLO '{text}': expected METRIC:pNN:SECONDS, e.g. ttft:p90:0.4")
        metric = parts[0].lower()
        if metric not in ("ttft", "tpot", "itl", "e2e"):
            raise PdlabError(f"bad SLO '{text}': metric must be one of ttft, tpot, itl, e2e")
        try:
            q, s = float(parts[1][1:]), float(parts[2])
        except ValueError:
            raise PdlabError(f"bad SLO '{text}': percentile and seconds must be numbers") from None
        if not 0 < q <= 100 or not s > 0 or math.isinf(s):
            raise PdlabError(f"bad SLO '{text}': need 0 < percentile <= 100 and seconds > 0")
        return cls(metric, q, s)

    def __str__(self):
        return f"{self.metric}:p{self.percentile:g}:{self.seconds:g}"


#: above this many output tokens, ``summarize`` (without an ITL SLO) counts the gaps between
#: tokens as weighted step gaps instead of one float per token (a million requests' 200M tokens
#: would need several GB); means agree to rounding, percentiles exactly
COMPACT_TOKENS = 20_000_000


def per_request(seqs: Iterable[Sequence], compact: bool = False) -> dict[str, np.ndarray]:
    """Arrays over all requests (rejected ones hold +inf); ``itl`` holds every gap of every
    completed request, ``itl_owner`` the index of the request each gap belongs to. ``compact``:
    ``itl`` holds each distinct step gap once and ``itl_weight`` how many gaps it stands for
    (no ``itl_owner``)."""
    seqs = list(seqs)
    n = len(seqs)
    ttft, tpot, e2e, queue = (np.full(n, np.inf) for _ in range(4))
    n_out = np.zeros(n, dtype=np.int64)
    idx = [i for i, s in enumerate(seqs) if s.status is Status.FINISHED]
    if not idx:
        return {"ttft": ttft, "tpot": tpot, "e2e": e2e, "queue": queue, "itl": np.zeros(0),
                "itl_owner": np.zeros(0, dtype=np.int64), "n_out": n_out}
    done = [seqs[i] for i in idx]
    idx = np.asarray(idx)
    if compact:
        t_first, t_last, lens, itl, weight = _compact_times(done)
    else:
        times, lens = token_times(done)
        last = np.cumsum(lens) - 1                 # index of each request's last token in ``times``
        first = last - lens + 1
        t_first, t_last = times[first], times[last]
    arrival = np.fromiter((s.request.arrival for s in done), float, len(done))
    sched = np.fromiter((s.first_scheduled if s.first_scheduled is not None else np.nan for s in done),
                        float, len(done))
    ttft[idx] = t_first - arrival
    e2e[idx] = t_last - arrival
    queue[idx] = np.where(np.isnan(sched), t_first, sched) - arrival
    n_out[idx] = lens
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot[idx] = np.where(lens > 1, (t_last - t_first) / (lens - 1), np.nan)  # 1 token: no pace
    if compact:
        return {"ttft": ttft, "tpot": tpot, "e2e": e2e, "queue": queue, "itl": itl, "itl_weight": weight,
                "n_out": n_out}
    gaps = np.diff(times)
    keep = np.ones(gaps.size, dtype=bool)
    keep[last[:-1]] = False                    # the step from one request's last token to the next's first
    owner = np.repeat(idx, lens - 1)
    return {"ttft": ttft, "tpot": tpot, "e2e": e2e, "queue": queue, "itl": gaps[keep], "itl_owner": owner,
            "n_out": n_out}


def token_times(seqs: list[Sequence]) -> tuple[np.ndarray, np.ndarray]:
    """Every token time of ``seqs``, concatenated in order, and how many each has. Reads the
    stored pieces (single times, slices of a worker's step times) without building a list per
    sequence."""
    pools: dict[int, tuple[int, object]] = {}   # id(step-time array) -> (offset, array)
    singles: list[float] = []
    starts: list[int] = []                      # per piece: start in the pool (singles: negative)
    counts: list[int] = []
    lens = np.zeros(len(seqs), dtype=np.int64)
    off = 0
    for i, s in enumerate(seqs):
        n = 0
        for p in s._times:
            if type(p) is tuple:
                arr, a, b = p
                got = pools.get(id(arr))
                if got is None:
                    got = pools[id(arr)] = (off, arr)
                    off += len(arr)
                starts.append(got[0] + a)
                counts.append(b - a)
                n += b - a
            else:
                starts.append(-1 - len(singles))
                singles.append(p)
                counts.append(1)
                n += 1
        lens[i] = n
    if not pools:
        return np.asarray(singles, dtype=float), lens
    pool = np.concatenate([np.asarray(arr, dtype=float) for _, arr in pools.values()]
                          + [np.asarray(singles, dtype=float)])
    st = np.asarray(starts, dtype=np.int64)
    st = np.where(st < 0, off - 1 - st, st)      # singles sit after the step-time arrays
    cnt = np.asarray(counts, dtype=np.int64)
    total = int(cnt.sum())
    first = np.cumsum(cnt) - cnt                 # where each piece starts in the output
    idx = np.repeat(st - first, cnt) + np.arange(total)
    return pool[idx], lens


def _compact_times(seqs: list[Sequence]):
    """First and last token time and token count of each of ``seqs``, and their token gaps as
    (distinct gaps, weights): a slice ``times[a:b]`` of a worker's step times holds the gaps
    ``times[j] - times[j - 1]`` for ``a < j < b``, so each step gap is weighted by the slices
    spanning it; the gaps between pieces are listed one by one."""
    n = len(seqs)
    t_first, t_last = np.empty(n), np.empty(n)
    lens = np.zeros(n, dtype=np.int64)
    pools: dict[int, tuple[object, list, list]] = {}     # id(array) -> (array, starts, stops)
    loose: list[float] = []                              # gaps between pieces
    for i, s in enumerate(seqs):
        prev, cnt, first = None, 0, None
        for p in s._times:
            if type(p) is tuple:
                arr, a, b = p
                if b <= a:
                    continue
                got = pools.get(id(arr))
                if got is None:
                    got = pools[id(arr)] = (arr, [], [])
                got[1].append(a)
                got[2].append(b)
                lo, hi = arr[a], arr[b - 1]
                cnt += b - a
            else:
                lo = hi = p
                cnt += 1
            if prev is None:
                first = lo
            else:
                loose.append(lo - prev)
            prev = hi
        t_first[i], t_last[i], lens[i] = first, prev, cnt
    values, weights = [np.asarray(loose, dtype=float)], [np.ones(len(loose), dtype=np.int64)]
    for arr, starts, stops in pools.values():
        t = np.asarray(arr, dtype=float)
        m = t.size
        w = (np.bincount(np.asarray(starts) + 1, minlength=m + 1)
             - np.bincount(np.asarray(stops), minlength=m + 1)).cumsum()[1:m]   # weight of gap j = t[j] - t[j-1]
        keep = w > 0
        values.append(np.diff(t)[keep])
        weights.append(w[keep])
    return t_first, t_last, lens, np.concatenate(values), np.concatenate(weights)


def weighted_stats(x: np.ndarray, w: np.ndarray) -> dict:
    """``stats`` of the values ``x`` each repeated ``w`` times, without repeating them: the
    percentiles numpy's linear method would give, the mean up to rounding."""
    ok = np.isfinite(x) & (w > 0)
    x, w = x[ok], w[ok]
    if x.size == 0:
        return {"mean": None, **{f"p{p}": None for p in PCTS}}
    order = np.argsort(x, kind="stable")
    x, cw = x[order], np.cumsum(w[order])
    n = int(cw[-1])
    out = {"mean": float(np.dot(x, w[order].astype(float)) / n)}
    for p in PCTS:
        h = (n - 1) * (p / 100)
        lo = int(np.floor(h))
        frac = h - lo
        a = x[np.searchsorted(cw, lo, side="right")]
        b = x[np.searchsorted(cw, min(lo + 1, n - 1), side="right")]
        d = b - a
        out[f"p{p}"] = float(b - d * (1 - frac) if frac >= 0.5 else a + d * frac)   # numpy's _lerp
    return out


def stats(x: np.ndarray) -> dict:
    """Mean and percentiles of the finite values (None when there are none)."""
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"mean": None, **{f"p{p}": None for p in PCTS}}
    qs = np.percentile(x, PCTS)
    return {"mean": float(x.mean()), **{f"p{p}": float(q) for p, q in zip(PCTS, qs)}}


def slo_value(arrays: dict, slo: SLO) -> float:
    """The metric's percentile with rejected requests counted as never served."""
    x = arrays[slo.metric]
    if slo.metric == "itl":
        # every rejected or unfinished request contributes one infinitely late gap
        late = int(np.sum(~np.isfinite(arrays["ttft"])))
        x = np.concatenate([x, np.full(late, np.inf)]) if late else x
    else:
        x = x[~np.isnan(x)]
    if x.size == 0:
        return 0.0
    v = float(np.percentile(np.minimum(x, _LATE), slo.percentile))
    return math.inf if v >= _LATE / 10 else v


def slo_report(arrays: dict, slos: list[SLO]) -> dict:
    rows, ok_req = [], np.isfinite(arrays["ttft"])
    for slo in slos:
        v = slo_value(arrays, slo)
        rows.append({"metric": slo.metric, "percentile": slo.percentile, "target_s": slo.seconds,
                     "value_s": None if math.isinf(v) else v, "met": v <= slo.seconds})
        if slo.metric == "itl":
            # a request meets an ITL SLO when its own gaps meet it at the same percentile
            own = np.zeros(len(ok_req), dtype=bool)
            itl, owner = arrays["itl"], arrays["itl_owner"]
            if itl.size:
                order = np.argsort(owner, kind="stable")
                splits = np.flatnonzero(np.diff(owner[order])) + 1
                for idx in np.split(order, splits):
                    own[owner[idx[0]]] = np.percentile(itl[idx], slo.percentile) <= slo.seconds
            own |= arrays["n_out"] == 1
            ok_req &= own
        else:
            x = arrays[slo.metric]
            ok_req &= np.isnan(x) | (x <= slo.seconds)
    return {"all_met": all(r["met"] for r in rows), "slos": rows,
            "requests_within": float(ok_req.mean()) if ok_req.size else 0.0}


def summarize(seqs: list[Sequence], slos: list[SLO] | None = None, gpus: int = 1) -> dict:
    with gc_paused():     # no cycles are made here; a collection would rescan every token list
        return _summarize(seqs, slos, gpus)


def _summarize(seqs: list[Sequence], slos: list[SLO] | None, gpus: int) -> dict:
    compact = (not any(s.metric == "itl" for s in slos or ())
               and sum(s.num_tokens - s.prompt_len for s in seqs) > COMPACT_TOKENS)
    arrays = per_request(seqs, compact=compact)
    done = [s for s in seqs if s.status is Status.FINISHED]
    rejected = [s for s in seqs if s.status is Status.REJECTED]
    lost = len(seqs) - len(done) - len(rejected)
    if lost:   # the event loop must never leave a request behind; say so loudly if it did
        raise RuntimeError(f"{lost} requests neither finished nor rejected")
    if done:
        t0 = min(s.request.arrival for s in seqs)
        t1 = max(s.finish_time for s in done)
        duration = max(t1 - t0, 1e-12)
    else:
        duration = 0.0
    out_tokens = int(arrays["n_out"].sum())
    out = {
        "num_requests": len(seqs), "completed": len(done), "rejected": len(rejected),
        "reject_reasons": sorted({s.reject_reason for s in rejected})[:5],
        "gpus": gpus, "duration_s": duration,
        "throughput_rps": len(done) / duration if duration else 0.0,
        "throughput_tok_s": out_tokens / duration if duration else 0.0,
        "output_tokens": out_tokens,
    }
    for m in ("ttft", "tpot", "itl", "e2e", "queue"):
        out[f"{m}_s"] = weighted_stats(arrays[m], arrays["itl_weight"]) if compact and m == "itl" \
            else stats(arrays[m])
    if slos:
        out["slo_attainment"] = slo_report(arrays, list(slos))
    return out


class _Unknown(Exception):
    def __init__(self, rate: float):
        self.rate = rate


def goodput_search_parallel(meets_many: Callable[[list[float]], list[bool]], width: int = 1,
                            **kw) -> tuple[float, list[float]]:
    """``goodput_search`` evaluating up to ``width`` rates per round: the rates the sequential
    search may ask next (its decision tree, breadth first, from what is known so far) are
    evaluated together by ``meets_many``, and the sequential search is replayed on the answers.
    The result is the sequential one whatever ``width`` is. Returns (goodput, the rates the
    sequential search asked, in order)."""
    known: dict[float, bool] = {}

    def replay(assumed: dict) -> tuple[float | None, float | None, list[float]]:
        """(result, None, path) if the search completes on known + assumed answers, else
        (None, first unknown rate, path)."""
        path: list[float] = []

        def meets(rate):
            path.append(rate)
            if rate in known:
                return known[rate]
            if rate in assumed:
                return assumed[rate]
            raise _Unknown(rate)
        try:
            return goodput_search(meets, **kw), None, path
        except _Unknown as u:
            return None, u.rate, path

    while True:
        result, rate, path = replay({})
        if rate is None:
            return result, path
        batch, frontier = [rate], [({}, rate)]
        while frontier and len(batch) < width:          # breadth first over assumed outcomes
            nxt = []
            for assumed, r in frontier:
                for outcome in (True, False):
                    a = {**assumed, r: outcome}
                    r2 = replay(a)[1]
                    if r2 is not None and r2 not in batch and len(batch) < width:
                        batch.append(r2)
                        nxt.append((a, r2))
            frontier = nxt
        for r, ok in zip(batch, meets_many(batch)):
            known[r] = ok


def goodput_search(meets: Callable[[float], bool], start: float = 1.0, rel_tol: float = 0.02,
                   max_rate: float = 1e5, max_iter: int = 40) -> float:
    """Highest rate with ``meets(rate)`` true, assuming it holds below some threshold:
    double until it fails, then bisect to ``rel_tol``. 0.0 when even tiny rates fail."""
    return goodput_search_resumable(meets, start, rel_tol, None, max_rate, max_iter)[0]


def goodput_search_resumable(meets: Callable[[float], bool], start: float, tol: float, state: tuple | None = None,
                             max_rate: float = 1e5, max_iter: int = 40) -> tuple[float, tuple]:
    """``goodput_search``'s search (double from ``start`` until a rate fails, or halve down
    until one passes; then bisect to ``tol``), resumable: it returns ``(goodput, state)``
    and, given that state, continues the same bisection to a finer ``tol``, asking exactly the
    rates a fresh search at that ``tol`` would ask. ``state`` is ``(lo, hi, iterations, done)``."""
    if state is None:
        lo, hi, it = 0.0, start, 0
        while meets(hi):
            lo, hi = hi, hi * 2
            it += 1
            if hi > max_rate or it > max_iter:
                return lo, (lo, hi, it, True)
        if lo == 0.0:
            probe = hi / 2
            while probe > start * 1e-4 and not meets(probe):
                hi, probe = probe, probe / 2
            if probe <= start * 1e-4:
                return 0.0, (0.0, hi, it, True)
            lo = probe
        state = (lo, hi, it, False)
    lo, hi, it, done = state
    while not done and hi - lo > tol * lo and it < max_iter:
        mid = (lo + hi) / 2
        if meets(mid):
            lo = mid
        else:
            hi = mid
        it += 1
    return lo, (lo, hi, it, done)
