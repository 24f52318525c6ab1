"""``run_serving``: serve requests with a configuration on one of the two clocks. The one entry
point for the CLI, the labs and the benchmarks.

By default every worker gets the simulated GPU (``CostModelExecutor``) and a KV cache as large
as the cost model says fits; pass an ``executor_factory`` (``pdlab.engine.executor.factory``) to
run the real engine behind the same scheduler and loop.
"""

from __future__ import annotations

from typing import Iterable

from .config import ServingConfig
from .request import Request
from .serving import Cluster, ExecutorFactory, RunResult
from .serving.cluster import StepHook
from .sim import CostModel, CostModelExecutor, Efficiency


def cost_model_for(config: ServingConfig) -> CostModel:
    """The simulated replica of ``config``: its GPU, model, TP and efficiency profile."""
    eff = Efficiency.load(config.profile) if config.profile else None
    return CostModel.from_names(config.gpu, config.model, config.tp, eff)


def sim_clock(config: ServingConfig) -> str:
    tp = f" x tp{config.tp}" if config.tp > 1 else ""
    return f"simulated (cost model: {config.model} on {config.gpu}{tp})"


def run_serving(requests: Iterable[Request], config: ServingConfig,
                executor_factory: ExecutorFactory | None = None, clock: str | None = None,
                on_step: StepHook | None = None) -> RunResult:
    """Serve ``requests`` with ``config``. ``clock`` names where the seconds come from (set it
    with a real engine, e.g. "measured on NVIDIA H100"); ``on_step(worker, batch, result)`` sees
    every iteration as it starts."""
    config = config.validate()
    cm = cost_model_for(config)
    num_blocks = config.num_blocks or cm.num_blocks(config.block_size)
    if executor_factory is None:
        shared = CostModelExecutor(cm)            # stateless: one serves every worker
        executor_factory = lambda name, role, nb, bs: shared  # noqa: E731
        clock = clock or sim_clock(config)
    # a host-tier reload is taken only when it beats recomputing: the cost model says what a prefill costs
    # (what reuse saves: computing ``tokens`` more tokens before the last one, on top of ``context``)
    recompute = ((lambda tokens, context: cm.prefill_time(tokens + 1, context) - cm.prefill_time(1, context + tokens))
                 if config.offload_gb else None)
    return Cluster(config, executor_factory, num_blocks, clock or "", on_step, recompute).run(requests)
