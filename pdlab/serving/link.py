"""A KV link: a FIFO pipe with a bandwidth and a latency (one per decode worker's inbound side)."""

from __future__ import annotations


class Link:
    def __init__(self, name: str, gbps: float, latency_s: float):
        self.name, self.gbps, self.latency_s = name, gbps, latency_s
        self.free_at = 0.0
        self.bytes_moved = 0

    def send(self, now: float, nbytes: int) -> tuple[float, float]:
        """Queue ``nbytes`` at ``now``; returns (start, end) of its transfer."""
        start = max(now, self.free_at)
        end = start + self.latency_s + nbytes / (self.gbps * 1e9)
        self.free_at = end
        self.bytes_moved += nbytes
        return start, end
