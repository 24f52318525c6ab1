"""What happens in a serving run, by name: the events the loop processes and the record of
every iteration it keeps.

    Arrival       a request reaches the router
    StepDone      a worker's iteration ends (its executor said how long it took)
    TransferDone  a sequence's KV has crossed the link to a decode worker
    StepRecord    one iteration, as figures and analyses read it (``RunResult.steps``)

``EventQueue`` merges the arrivals (already sorted) with the events the loop schedules; at equal
times a scheduled event comes before an arrival, and scheduled events keep their order.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..request import Batch, Sequence, StepResult

if TYPE_CHECKING:
    from .worker import Worker


@dataclass(slots=True)
class Arrival:
    seq: Sequence


@dataclass(slots=True)
class StepDone:
    worker: "Worker"
    batch: Batch
    result: StepResult
    start: float


@dataclass(slots=True)
class TransferDone:
    seq: Sequence
    src: "Worker"
    dst: "Worker"
    blocks: list[int]          # the blocks reserved for the KV on ``dst``


class EventQueue:
    def __init__(self, arrivals: list[Sequence]):
        self._arrivals = arrivals     # sorted by (arrival, id)
        self._next = 0
        self._heap: list = []
        self._tie = 0

    def push(self, time: float, event) -> None:
        self._tie += 1
        heapq.heappush(self._heap, (time, self._tie, event))

    def __bool__(self) -> bool:
        return bool(self._heap) or self._next < len(self._arrivals)

    def next_times(self) -> tuple[float, float]:
        """(time of the next scheduled event, time of the next arrival); inf where none."""
        inf = float("inf")
        i = self._next
        return (self._heap[0][0] if self._heap else inf,
                self._arrivals[i].arrival if i < len(self._arrivals) else inf)

    def pop(self):
        """(time, event) of the next event."""
        heap, i = self._heap, self._next
        if heap and (i >= len(self._arrivals) or heap[0][0] <= self._arrivals[i].arrival):
            time, _, event = heapq.heappop(heap)
            return time, event
        self._next = i + 1
        seq = self._arrivals[i]
        return seq.arrival, Arrival(seq)


class StepRecord(NamedTuple):
    """One iteration of one worker."""

    worker: int              # index into ``RunResult.workers``
    start: float             # s
    end: float               # s
    prefill_tokens: int
    decode_tokens: int
    kv_blocks_used: int      # after the iteration


class StepColumns(NamedTuple):
    worker: np.ndarray
    start: np.ndarray
    end: np.ndarray
    prefill_tokens: np.ndarray
    decode_tokens: np.ndarray
    kv_blocks_used: np.ndarray

    def select(self, mask: np.ndarray) -> "StepColumns":
        return StepColumns(*(c[mask] for c in self))


class StepLog(list):
    """The ``StepRecord`` of every iteration, in the order they ended."""

    def columns(self) -> StepColumns:
        """The log as one numpy array per field (what the figures plot)."""
        if not self:
            return StepColumns(*(np.zeros(0, dtype=t) for t in (int, float, float, int, int, int)))
        arr = np.array(self, dtype=float)
        return StepColumns(arr[:, 0].astype(int), arr[:, 1], arr[:, 2], arr[:, 3].astype(int),
                           arr[:, 4].astype(int), arr[:, 5].astype(int))

    def window(self, lo: float, hi: float) -> "StepLog":
        """The iterations that overlap [lo, hi]."""
        return StepLog(s for s in self if s.end >= lo and s.start <= hi)
