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
from array import array
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


class StepLog:
    """The ``StepRecord`` of every iteration, in the order they ended. Kept as one typed array per
    field (48 bytes an iteration rather than a tuple of boxed numbers: a million-request run has
    millions of iterations); it reads like a list of StepRecords (len, iteration, indexing,
    slicing, ``append``)."""

    __slots__ = ("_cols",)

    def __init__(self, records=()):
        self._cols = (array("q"), array("d"), array("d"), array("q"), array("q"), array("q"))
        for r in records:
            self.append(r)

    def add(self, worker: int, start: float, end: float, prefill_tokens: int, decode_tokens: int,
            kv_blocks_used: int) -> None:
        """Append one iteration without building its record."""
        w, s, e, p, d, k = self._cols
        w.append(worker)
        s.append(start)
        e.append(end)
        p.append(prefill_tokens)
        d.append(decode_tokens)
        k.append(kv_blocks_used)

    def append(self, record) -> None:
        self.add(*record)

    def extend(self, records) -> None:
        for r in records:
            self.append(r)

    def __len__(self) -> int:
        return len(self._cols[0])

    def __iter__(self):
        return map(StepRecord._make, zip(*self._cols))

    def __getitem__(self, i):
        if isinstance(i, slice):
            out = StepLog()
            out._cols = tuple(c[i] for c in self._cols)
            return out
        return StepRecord(*(c[i] for c in self._cols))

    def __eq__(self, other) -> bool:
        return list(self) == list(other)

    def __repr__(self) -> str:
        return f"StepLog({len(self)} iterations)"

    def columns(self) -> StepColumns:
        """The log as one numpy array per field (what the figures plot)."""
        w, s, e, p, d, k = (np.array(c) for c in self._cols)
        return StepColumns(w.astype(int), s.astype(float), e.astype(float), p.astype(int), d.astype(int),
                           k.astype(int))

    def window(self, lo: float, hi: float) -> "StepLog":
        """The iterations that overlap [lo, hi]."""
        c = self.columns()
        keep = np.flatnonzero((c.end >= lo) & (c.start <= hi))
        out = StepLog()
        out._cols = tuple(array(col.typecode, (col[j] for j in keep.tolist())) for col in self._cols)
        return out
