"""Facts about prefix reuse in a run: hit rates on the GPU and in host memory, prompt tokens
computed again, TTFT split into queueing / transfer / compute, each replica's load over time,
and the upper bound a single unbounded cache would reach on the same requests.

``prefix_summary(result)`` adds these as new keys of ``RunResult.summary()`` (``pdlab simulate
--json``) whenever the prefix cache is on.
"""

from __future__ import annotations

import numpy as np

from .metrics import stats
from .request import Sequence, Status
from .serving.kv import prefix_hashes


def upper_bound_hit_rate(seqs, block_size: int) -> float:
    """Share of prompt tokens a single cache that never evicts would serve, requests in arrival
    order: each prompt reuses the longest prefix of full blocks any earlier prompt had (at least
    one token is always computed, as in ``BlockManager.match_prefix``)."""
    seen: set[int] = set()
    hits = total = 0
    for s in sorted(seqs, key=lambda s: (s.arrival, s.id)):
        if not isinstance(s, Sequence):
            s = Sequence(s)
        hashes = prefix_hashes(s, block_size)
        k, cap = 0, (s.prompt_len - 1) // block_size
        while k < min(cap, len(hashes)) and hashes[k] in seen:
            k += 1
        hits += k * block_size
        total += s.prompt_len
        seen.update(hashes)
    return hits / total if total else 0.0


def ttft_split(seqs) -> dict:
    """TTFT of each finished request as queueing (arrival to first scheduled), transfer (prefix KV
    copied back from host memory) and compute (the rest: prefill iterations, waiting between
    chunks), as stats over requests."""
    done = [s for s in seqs if s.status is Status.FINISHED and s.token_times]
    ttft = np.array([s.token_times[0] - s.arrival for s in done])
    queue = np.array([(s.first_scheduled if s.first_scheduled is not None else s.token_times[0]) - s.arrival
                      for s in done])
    transfer = np.array([s.reload_s for s in done])
    return {"queueing": stats(queue), "transfer": stats(transfer), "compute": stats(ttft - queue - transfer)}


def replica_load(result, bins: int = 24) -> dict:
    """Mean KV blocks in use per replica in ``bins`` equal windows of the run, and how many
    requests each replica took: does one replica carry the load?"""
    cols = result.steps.columns()
    names = result.workers
    taken = {n: 0 for n in names}
    for s in result.sequences:
        if s.worker in taken:
            taken[s.worker] += 1
    if not len(cols.end):
        return {"workers": names, "t_s": [], "kv_blocks": [[] for _ in names], "requests": list(taken.values())}
    edges = np.linspace(0.0, float(cols.end.max()), bins + 1)
    which = np.clip(np.searchsorted(edges, cols.end, side="right") - 1, 0, bins - 1)
    kv = []
    for i in range(len(names)):
        m = cols.worker == i
        sums = np.bincount(which[m], weights=cols.kv_blocks_used[m], minlength=bins)
        cnt = np.bincount(which[m], minlength=bins)
        kv.append([round(float(v), 1) for v in np.divide(sums, np.maximum(cnt, 1))])
    centres = [round(float(v), 3) for v in (edges[:-1] + edges[1:]) / 2]
    return {"workers": names, "t_s": centres, "kv_blocks": kv, "requests": list(taken.values())}


def prefix_summary(result) -> dict:
    c = result.prefix or {}
    looked = c.get("prompt_tokens_looked_up", 0)
    prompt_tokens = sum(s.prompt_len for s in result.sequences if s.status is not Status.REJECTED)
    cols = result.steps.columns()
    prefill = int(cols.prefill_tokens.sum()) if len(cols.prefill_tokens) else 0
    bound = upper_bound_hit_rate([s for s in result.sequences if s.status is not Status.REJECTED],
                                 result.config.block_size)
    out = {
        "prefix_hit_rate_device": c.get("hit_tokens_device", 0) / looked if looked else 0.0,
        "prefix_hit_rate_host": c.get("hit_tokens_host", 0) / looked if looked else 0.0,
        "prefix_hit_rate_upper_bound": bound,
        "prefill_tokens_computed": prefill,
        # computed although an unbounded cache would have had them (preemption recompute included)
        "prefill_tokens_recomputed": int(prefill - prompt_tokens + round(bound * prompt_tokens)),
        "ttft_split_s": ttft_split(result.sequences),
        "replica_load": replica_load(result),
        "router": result.config.router,
        "prefix_counters": c,
    }
    return out
