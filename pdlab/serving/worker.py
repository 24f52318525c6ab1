"""A worker: one replica (``tp`` GPUs) with its scheduler, block manager and executor.

An iteration is the same three calls on either clock:

    start(now)    schedule -> run: the scheduler picks a Batch, the executor says how long it takes
    finish(step)  postprocess: token counts advance, tokens are emitted, finished sequences leave
"""

from __future__ import annotations

from typing import Protocol

from ..request import Batch, StepResult
from .events import StepDone
from .link import Link
from .scheduler import Scheduler


class Executor(Protocol):
    """Runs a batch: ``CostModelExecutor`` (the simulated clock) or ``ModelExecutor`` (the real
    engine, measured seconds). ``kv_bytes_per_token`` sizes what a KV transfer moves."""

    kv_bytes_per_token: int

    def run(self, batch: Batch) -> StepResult: ...

    def transfer_kv(self, src: "Executor", src_blocks: list[int], dst_blocks: list[int]) -> None: ...


class Worker:
    def __init__(self, index: int, name: str, role: str, scheduler: Scheduler, executor: Executor,
                 inbound: Link | None = None):
        self.index, self.name, self.role = index, name, role
        self.sched = scheduler
        self.executor = executor
        self.inbound = inbound          # disaggregated decode worker: the link KV arrives over
        self.busy = False

    def start(self, now: float) -> StepDone | None:
        """Begin the next iteration if idle and there is work; its StepDone is due at
        ``now + result.seconds``."""
        if self.busy:
            return None
        batch = self.sched.schedule(now)
        if not batch:
            return None
        batch.num_running = len(self.sched.running)
        result = self.executor.run(batch)
        if batch.reload_s:          # prefix KV copied back from host memory before the step computes
            result.seconds += batch.reload_s
        self.busy = True
        return StepDone(self, batch, result, now)

    def finish(self, step: StepDone, now: float) -> None:
        self.busy = False
        self.sched.postprocess(step.batch, step.result, now)
