"""The router: which worker of the front pool a new request goes to.

    round-robin   in turn
    least-loaded  fewest unfinished sequences
    session       sticky: every turn of a session to the replica of its first turn (least-loaded)
    kv-aware      lowest cost, Dynamo's KV router: per replica
                      overlap_weight * (new_blocks + load_weight * queued_prefill_blocks)
                      + load_weight * active_blocks
                  new_blocks: the prompt's blocks that replica would have to compute (host-tier
                  hits count ``host_weight`` of a device hit); queued_prefill_blocks: prefill
                  already waiting there; active_blocks: the KV it holds or will hold. With
                  load_weight 1 this is Dynamo's ``overlap_weight * prefill_blocks + decode_blocks``;
                  load_weight 0 is pure affinity (the hot spot). ``temperature > 0`` samples a
                  replica with softmax(-cost / max cost / temperature) instead of taking the lowest.

The kv-aware router knows caches only through a ``pdlab.serving.kvindex`` index (KV events, or an
approximation from its own decisions); it reads a scheduler's load numbers, never its blocks.
"""

from __future__ import annotations

import math
import random

from ..config import ROUTERS
from ..request import Sequence
from .kv import prefix_hashes


class Router:
    def __init__(self, policy: str, workers: list, config=None, index=None):
        if policy not in ROUTERS:
            raise ValueError(f"unknown router {policy!r} (choose from: {', '.join(ROUTERS)})")
        self.policy, self.workers, self._next = policy, workers, 0
        self.index = index
        self.overlap_weight = getattr(config, "overlap_weight", 1.0)
        self.load_weight = getattr(config, "load_weight", 1.0)
        self.temperature = getattr(config, "router_temperature", 0.0)
        self.host_weight = getattr(config, "host_weight", 0.75)
        self.block_size = getattr(config, "block_size", 16)
        self._rng = random.Random(getattr(config, "router_seed", 0))
        self._session: dict = {}
        self.last_costs: list[float] = []     # kv-aware: the costs of the last decision (figures, tests)

    def pick(self, seq: Sequence, now: float = 0.0):
        if self.policy == "round-robin":
            w = self.workers[self._next % len(self.workers)]
            self._next += 1
            return w
        if self.policy == "kv-aware":
            return self.pick_kv(seq, now, self.workers)
        if self.policy == "session":
            sid = seq.request.session_id
            if sid is not None and sid in self._session:
                return self._session[sid]
            w = self._least_loaded()
            if sid is not None:
                self._session[sid] = w
            return w
        return self._least_loaded()

    def _least_loaded(self):
        return min(self.workers, key=lambda w: w.sched.load)   # first wins ties: deterministic

    def costs(self, seq: Sequence, now: float, workers) -> list[float]:
        """The kv-aware cost of ``seq`` on each of ``workers``."""
        hashes = prefix_hashes(seq, self.block_size)
        need = -(-seq.prompt_len // self.block_size)
        ow, lw, hw = self.overlap_weight, self.load_weight, self.host_weight
        out = []
        for w in workers:
            dev, host = self.index.overlap(w.index, hashes, now) if self.index is not None and ow else (0, 0)
            queued, active = w.sched.kv_load()
            new = max(0.0, need - dev - hw * host)
            out.append(ow * (new + lw * queued) + lw * active)
        return out

    def choose(self, costs: list[float]) -> int:
        """Index of the lowest cost (first wins ties), or a softmax sample at a temperature."""
        if self.temperature > 0 and len(costs) > 1:
            top = max(costs) or 1.0
            logits = [-c / top / self.temperature for c in costs]
            m = max(logits)
            weights = [math.exp(x - m) for x in logits]
            return self._rng.choices(range(len(costs)), weights)[0]
        return min(range(len(costs)), key=costs.__getitem__)

    def pick_kv(self, seq: Sequence, now: float, workers):
        self.last_costs = costs = self.costs(seq, now, workers)
        w = workers[self.choose(costs)]
        if self.index is not None:
            self.index.routed(w.index, prefix_hashes(seq, self.block_size), now)
        return w
