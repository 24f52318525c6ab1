"""Counters of a run's prefix reuse, read from the workers' caches once the run is over."""

from __future__ import annotations


def prefix_counters(workers, index=None, local_prefills: int = 0) -> dict:
    bms = [w.sched.bm for w in workers]
    queried = sum(b.queries for b in bms)
    out = {
        "prompt_tokens_looked_up": queried,
        "hit_tokens_device": sum(b.hits for b in bms),
        "hit_tokens_host": sum(b.host_hits for b in bms),
    }
    hosts = [b.host for b in bms if b.host is not None]
    if hosts:
        out["host_blocks_stored"] = sum(h.stored for h in hosts)
        out["host_blocks_evicted"] = sum(h.evicted for h in hosts)
        out["host_reloads_declined"] = sum(h.declined for h in hosts)
    if index is not None:
        out["router_index"] = "kv-events" if index.exact else f"approximate (ttl {index.ttl:g} s)"
        if index.exact:
            out["kv_events"] = index.events
    if local_prefills:
        out["local_prefills"] = local_prefills
    return out
