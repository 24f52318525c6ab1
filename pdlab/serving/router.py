"""The router: which worker of the front pool a new request goes to."""

from __future__ import annotations

from ..config import ROUTERS
from ..request import Sequence


class Router:
    def __init__(self, policy: str, workers: list):
        if policy not in ROUTERS:
            raise ValueError(f"unknown router {policy!r} (choose from: {', '.join(ROUTERS)})")
        self.policy, self.workers, self._next = policy, workers, 0

    def pick(self, seq: Sequence):
        if self.policy == "round-robin":
            w = self.workers[self._next % len(self.workers)]
            self._next += 1
            return w
        return min(self.workers, key=lambda w: w.sched.load)   # first wins ties: deterministic
