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
