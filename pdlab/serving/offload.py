"""A host-memory KV tier (``--offload-gb``): prefix blocks evicted from a replica's GPU cache are
kept in its host memory (LRU, a capacity in blocks) and copied back over PCIe when a later prompt
starts with them.

A reload is taken only when the copy beats recomputing (Mooncake's condition: transfer time against
the prefill it saves); the block manager asks ``worth`` with the two times. The copy's seconds are
charged to the iteration that first computes with those blocks (``Batch.reload_s``), so they show
in that request's TTFT as transfer time. ``recompute_s(tokens, context)`` comes from whoever knows
what a prefill costs (the cost model, in ``pdlab.run``): this module knows no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable


class HostTier:
    def __init__(self, capacity_blocks: int, block_size: int, bytes_per_token: int, gbps: float,
                 latency_s: float = 0.0, recompute_s: Callable[[int, int], float] | None = None):
        if capacity_blocks < 0:
            raise ValueError(f"host tier capacity must be >= 0 blocks, got {capacity_blocks}")
        self.capacity = capacity_blocks
        self.block_size, self.bytes_per_token = block_size, bytes_per_token
        self.gbps, self.latency_s = gbps, latency_s
        self.recompute_s = recompute_s
        self._lru: OrderedDict[int, None] = OrderedDict()     # prefix hashes held here, oldest first
        self.publish = None                                   # publish(tier, kind, hash): KV events
        self.stored = self.evicted = 0                        # blocks offloaded / dropped for room
        self.declined = 0                                     # reloads refused: recompute was faster

    def __len__(self) -> int:
        return len(self._lru)

    def has(self, h: int) -> bool:
        return h in self._lru

    def put(self, h: int) -> None:
        """A prefix block leaves the GPU: keep it here (the oldest goes if the tier is full)."""
        if not self.capacity:
            return
        if h in self._lru:
            self._lru.move_to_end(h)
            return
        self._lru[h] = None
        self.stored += 1
        if self.publish is not None:
            self.publish("host", "stored", h)
        if len(self._lru) > self.capacity:
            old, _ = self._lru.popitem(last=False)
            self.evicted += 1
            if self.publish is not None:
                self.publish("host", "removed", old)

    def touch(self, h: int) -> None:
        if h in self._lru:
            self._lru.move_to_end(h)

    def transfer_s(self, tokens: int) -> float:
        """Seconds to copy ``tokens`` tokens of KV back to the GPU."""
        return self.latency_s + tokens * self.bytes_per_token / (self.gbps * 1e9)

    def worth(self, tokens: int, context: int) -> bool:
        """Reload ``tokens`` (after ``context`` cached ones) only if that beats recomputing them."""
        if self.recompute_s is None:
            return True
        ok = self.transfer_s(tokens) < self.recompute_s(tokens, context)
        self.declined += not ok
        return ok


def capacity_blocks(offload_gb: float, block_size: int, bytes_per_token: int) -> int:
    """Blocks of ``block_size`` tokens that ``offload_gb`` GB of host memory hold."""
    return int(offload_gb * 1e9 // (block_size * bytes_per_token))


def attach_host_tiers(config, workers, recompute_s=None) -> None:
    """Give every worker's block manager a host tier of ``config.offload_gb`` (0: none)."""
    from ..hardware import parse_link
    if not config.offload_gb:
        return
    gbps, lat = parse_link(config.offload_link)
    for w in workers:
        bpt = w.executor.kv_bytes_per_token
        w.sched.bm.host = HostTier(capacity_blocks(config.offload_gb, config.block_size, bpt), config.block_size,
                                   bpt, gbps, lat, recompute_s)
