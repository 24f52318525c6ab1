"""Executors: ``run(batch) -> StepResult(seconds, tokens)``. The event loop advances virtual time
by whatever an executor says a step took, so the same scheduling code runs on either clock:

    CostModelExecutor  computes nothing; returns the roofline cost model's prediction
    ModelExecutor      runs the real toy model and returns real tokens and measured seconds
                       (``pdlab.model_executor``; needs torch)
"""

from __future__ import annotations

from typing import Protocol

from .costmodel import CostModel
from .request import Batch, StepResult


class Executor(Protocol):
    def run(self, batch: Batch) -> StepResult: ...


class CostModelExecutor:
    """A simulated GPU: the seconds ``cost_model`` predicts, no tokens."""

    def __init__(self, cost_model: CostModel):
        self.cost_model = cost_model

    def run(self, batch: Batch) -> StepResult:
        return StepResult(self.cost_model.step_time(batch))

    def transfer_kv(self, src, src_blocks, dst_blocks) -> None:
        """Nothing to move: the simulated KV has no bytes."""
