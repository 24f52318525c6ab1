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
from .sim import CostModel, CostModelExecutor
from .sim.profiles import load_profile


def cost_model_for(config: ServingConfig, role: str | None = None) -> CostModel:
    """The simulated replica of ``config`` that runs ``role`` ('prefill', 'decode', 'mixed'; None:
    ``config.tp``): its GPU, model, the pool's TP and the profile (an efficiency profile's
    roofline, or a step profile's own step-time model)."""
    tp = config.tp if role is None else config.pool_tp(role)
    return load_profile(config.profile).cost_model(config.gpu, config.model, tp, config.block_size)


def pool_roles(config: ServingConfig) -> tuple[str, ...]:
    """The worker roles a configuration runs."""
    return ("prefill", "decode") if config.mode == "disaggregated" else ("mixed",)


def sim_clock(config: ServingConfig) -> str:
    if config.mode == "disaggregated" and config.pool_tp("prefill") != config.pool_tp("decode"):
        tp = f" x prefill tp{config.pool_tp('prefill')} / decode tp{config.pool_tp('decode')}"
    else:
        tp = f" x tp{config.tp}" if config.tp > 1 else ""
    return f"simulated (cost model: {config.model} on {config.gpu}{tp})"


def run_serving(requests: Iterable[Request], config: ServingConfig,
                executor_factory: ExecutorFactory | None = None, clock: str | None = None,
                on_step: StepHook | None = None, cost_models: dict | None = None) -> RunResult:
    """Serve ``requests`` with ``config``. ``clock`` names where the seconds come from (set it
    with a real engine, e.g. "measured on NVIDIA H100"); ``on_step(worker, batch, result)`` sees
    every iteration as it starts. ``cost_models`` ({role: cost model}) replaces what
    ``config.profile`` gives (a fit tries candidates this way)."""
    config = config.validate()
    models = cost_models or {role: cost_model_for(config, role) for role in pool_roles(config)}
    if config.num_blocks:
        num_blocks: int | dict = config.num_blocks
    else:   # what fits beside the weights on each pool's TP GPUs
        per_role = {role: cm.num_blocks(config.block_size) for role, cm in models.items()}
        num_blocks = next(iter(per_role.values())) if len(set(per_role.values())) == 1 else per_role
    if executor_factory is None:
        shared = {role: CostModelExecutor(cm) for role, cm in models.items()}   # stateless: one per pool
        executor_factory = lambda name, role, nb, bs: shared[role]  # noqa: E731
        clock = clock or sim_clock(config)
    # a host-tier reload is taken only when it beats recomputing: the cost model says what a prefill costs
    # (what reuse saves: computing ``tokens`` more tokens before the last one, on top of ``context``)
    cm = models.get("mixed") or models.get("prefill") or next(iter(models.values()))
    recompute = ((lambda tokens, context: cm.prefill_time(tokens + 1, context) - cm.prefill_time(1, context + tokens))
                 if config.offload_gb else None)
    return Cluster(config, executor_factory, num_blocks, clock or "", on_step, recompute).run(requests)
