"""The simulated GPU: an executor that computes nothing and returns what the cost model predicts."""

from __future__ import annotations

from ..request import Batch, StepResult
from .costmodel import CostModel


class CostModelExecutor:
    """``run(batch) -> StepResult(seconds)``: the roofline's seconds, no tokens. Stateless, so
    one serves every worker of a cluster. It reads only a batch's totals, so the loop may hand it
    a worker's steady decodes as a count (``Batch.group_decodes``) instead of a list."""

    lazy_decodes = True

    def __init__(self, cost_model: CostModel):
        self.cost_model = cost_model
        self.kv_bytes_per_token = cost_model.model.kv_bytes_per_token

    def run(self, batch: Batch) -> StepResult:
        return StepResult(self.cost_model.step_time(batch))

    def decode_seconds(self, n: int, context: int) -> float:
        """``run``'s seconds for a batch of ``n`` decodes over ``context`` KV tokens, nothing else."""
        return self.cost_model.decode_step_time(n, context)

    def transfer_kv(self, src, src_blocks, dst_blocks) -> None:
        """Nothing to move: the simulated KV has no bytes."""
