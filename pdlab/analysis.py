"""Run analysis: facts about a ``RunResult`` that labs, figures and reports share (the longest
freeze of each stream, where to look for a stall, how busy each worker was)."""

from __future__ import annotations

import numpy as np

from .request import Status


def max_gaps(result) -> np.ndarray:
    """Per finished request, its longest gap between two tokens (0 for one-token answers):
    the moment its stream froze longest."""
    out = []
    for s in result.sequences:
        if s.status is Status.FINISHED:
            t = s.token_times
            out.append(float(np.max(np.diff(t))) if len(t) > 1 else 0.0)
    return np.array(out)


def first_gaps(result) -> np.ndarray:
    """Per finished request with 2+ tokens, the pause between its first and second token. In
    disaggregated serving the KV transfer sits exactly here (TTFT does not see it)."""
    return np.array([s.token_times[1] - s.token_times[0] for s in result.sequences
                     if s.status is Status.FINISHED and len(s.token_times) > 1])


def stall_window(result, span: float = 3.0) -> tuple[float, float]:
    """A ``span``-second window around the arrival of the longest prompt that arrived mid-run
    (where a stall is easiest to see)."""
    seqs = [s for s in result.sequences if s.token_times]
    if not seqs:
        return (0.0, span)
    mid = seqs[len(seqs) // 4: 3 * len(seqs) // 4] or seqs
    s = max(mid, key=lambda q: (q.prompt_len, -abs(q.request.arrival - mid[len(mid) // 2].request.arrival)))
    t = s.request.arrival
    return (t - span / 3, t + span * 2 / 3)


def busy_share(result) -> dict[str, float]:
    """Per worker, the share of the run's wall time it spent running iterations."""
    c = result.steps.columns()
    if not c.start.size:
        return {w: 0.0 for w in result.workers}
    dur = max(c.end.max() - c.start.min(), 1e-12)
    return {w: float((c.end[c.worker == i] - c.start[c.worker == i]).sum() / dur)
            for i, w in enumerate(result.workers)}


def overload(result, min_ratio: float = 1.05) -> dict | None:
    """Whether the offered load outran the deployment, and by how much; None if it kept up.

    Offered: the tokens (prompt + output) of every request over the span in which they arrived.
    Served: the tokens processed inside that span (a prompt counts once its first token is out).
    A system that keeps up serves about what is offered (the last requests' service time is a
    small lag); an overloaded one serves its capacity while its queue, and so its TTFT, grows
    through the run. Both must show: a short run's lag alone never warns. Rejected requests
    (reported on their own) count in neither."""
    from bisect import bisect_right
    seqs = [s for s in result.sequences if s.status is not Status.REJECTED]
    if len(seqs) < 8:
        return None
    arrivals = np.array([s.request.arrival for s in seqs])
    t0, t1 = float(arrivals.min()), float(arrivals.max())
    span = t1 - t0
    if span <= 0:
        return None
    offered = sum(s.prompt_len + s.max_new_tokens for s in seqs) / span
    served, ttft = 0, np.full(len(seqs), np.inf)
    for i, s in enumerate(seqs):
        t = s.token_times                  # built on demand: once per sequence
        if t:
            served += (s.prompt_len if t[0] <= t1 else 0) + bisect_right(t, t1)
            ttft[i] = t[0] - arrivals[i]
    served /= span
    order = np.argsort(arrivals, kind="stable")
    q = len(order) // 4

    def median_ttft(idx):
        v = ttft[idx]
        v = v[np.isfinite(v)]
        return float(np.median(v)) if v.size else float("inf")

    first, last = median_ttft(order[:q]), median_ttft(order[-q:])
    ratio = offered / max(served, 1e-12)
    if ratio < min_ratio or not (last > 2 * first and last > 1.0):
        return None
    return {"offered_tok_s": offered, "served_tok_s": served, "ratio": ratio, "span_s": span,
            "ttft_p50_first_quarter_s": first, "ttft_p50_last_quarter_s": last}


def longest_stall(result) -> dict | None:
    """The run's longest gap between two tokens of one stream and what the worker ran inside it:
    its iterations and their prefill tokens (several long prompts prefilled back to back make a
    stall longer than any one of their prefills). None when no stream has two tokens."""
    best = None
    for s in result.sequences:
        t = s.token_times if s.status is Status.FINISHED else ()
        if len(t) > 1:
            d = np.diff(t)
            k = int(np.argmax(d))
            if best is None or d[k] > best[0]:
                best = (float(d[k]), t[k], t[k + 1], s.worker)
    if best is None:
        return None
    gap, t0, t1, name = best
    # the stream's worker (disaggregated: its later tokens come from a decode worker, so any)
    w = result.workers.index(name) if name in result.workers and result.config.mode != "disaggregated" else None
    eps = 1e-9
    steps = [st for st in result.steps.window(t0, t1)
             if st.start >= t0 - eps and st.end <= t1 + eps and (w is None or st.worker == w)]
    return {"gap_s": gap, "start": t0, "end": t1, "iterations": len(steps),
            "prefill_tokens": int(sum(st.prefill_tokens for st in steps)),
            "prefill_iterations": sum(1 for st in steps if st.prefill_tokens > 0)}
