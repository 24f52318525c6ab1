"""What a KV-aware router knows about each replica's prefix cache, without reading its block
manager: an index of block hashes per replica.

    EventIndex   fed by KV events (blocks stored on / removed from a replica's GPU or host tier),
                 the way Dynamo's KV router listens to its workers: exact, as of the last event
    ApproxIndex  no events: predicts contents from the router's own decisions (a request sent to
                 a replica leaves its prefix there) and forgets them after a TTL, as Dynamo's
                 ``--no-kv-events`` mode and llm-d's approximate prefix-cache scorer do

Both answer ``overlap(worker, hashes, now) -> (device blocks, host blocks)``: how many leading
blocks of a prompt the replica holds on its GPU, and how many more right after those in host memory.
"""

from __future__ import annotations


class EventIndex:
    exact = True

    def __init__(self, num_workers: int):
        self.device: list[set[int]] = [set() for _ in range(num_workers)]
        self.host: list[set[int]] = [set() for _ in range(num_workers)]
        self.events = 0

    def apply(self, worker: int, tier: str, kind: str, h: int) -> None:
        """One KV event from replica ``worker``."""
        self.events += 1
        where = (self.device if tier == "device" else self.host)[worker]
        if kind == "stored":
            where.add(h)
        else:
            where.discard(h)

    def publisher(self, worker: int):
        return lambda tier, kind, h: self.apply(worker, tier, kind, h)

    def overlap(self, worker: int, hashes, now: float) -> tuple[int, int]:
        dev, host = self.device[worker], self.host[worker]
        i, n = 0, len(hashes)
        while i < n and hashes[i] in dev:
            i += 1
        j = i
        while j < n and (hashes[j] in host or hashes[j] in dev):
            j += 1
        return i, j - i

    def routed(self, worker: int, hashes, now: float) -> None:
        """Events say what is cached: a routing decision adds nothing."""


class ApproxIndex:
    exact = False

    def __init__(self, num_workers: int, ttl_s: float = 120.0):
        if not ttl_s > 0:
            raise ValueError(f"router TTL must be > 0 s, got {ttl_s}")
        self.ttl = ttl_s
        self.expiry: list[dict[int, float]] = [{} for _ in range(num_workers)]
        self._since_purge = 0

    def overlap(self, worker: int, hashes, now: float) -> tuple[int, int]:
        seen = self.expiry[worker]
        i, n = 0, len(hashes)
        while i < n and seen.get(hashes[i], -1.0) > now:
            i += 1
        return i, 0

    def routed(self, worker: int, hashes, now: float) -> None:
        """``worker`` will hold this prompt's blocks (we predict) until ``now + ttl``."""
        seen, until = self.expiry[worker], now + self.ttl
        for h in hashes:
            seen[h] = until
        self._since_purge += 1
        if self._since_purge >= 256:          # forget expired entries now and then: bounded memory
            self._since_purge = 0
            for d in self.expiry:
                for h in [h for h, t in d.items() if t <= now]:
                    del d[h]


def build_index(config, workers):
    """The index a kv-aware router (or the per-request disaggregation decider) reads: KV events
    from every worker's caches, or the approximation. None when nothing needs one."""
    if not (config.router == "kv-aware" or config.disagg_threshold is not None):
        return None
    if not config.kv_events:
        return ApproxIndex(len(workers), config.router_ttl)
    index = EventIndex(len(workers))
    for w in workers:
        bm = w.sched.bm
        bm.publish = index.publisher(w.index)
        if bm.host is not None:
            bm.host.publish = bm.publish
    return index
