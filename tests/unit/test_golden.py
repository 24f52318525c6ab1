"""Regression goldens: the ``simulate --json`` and ``goodput --json`` output of every mode for
fixed seeds, and the greedy tokens of an engine-mode run on ``tiny``, byte for byte.

These were written before the package was reorganised; a refactor must leave them unchanged.
When a change alters a number on purpose, regenerate with ``PDLAB_REGEN_GOLDEN=1 pytest
tests/unit/test_golden.py`` and say in the commit which numbers moved and why.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from pdlab.cli import main

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
REGEN = bool(os.environ.get("PDLAB_REGEN_GOLDEN"))
SLOS = ["--slo", "ttft:p90:1", "--slo", "itl:p99:0.1"]

CASES = {
    "aggregated-sharegpt": ["simulate", "--mode", "aggregated", "--num-gpus", "2", "--workload", "sharegpt",
                            "--rate", "9", "--num-requests", "300", "--seed", "1", *SLOS],
    "chunked-chat-long": ["simulate", "--mode", "chunked", "--chunk-size", "256", "--workload", "chat-long",
                          "--rate", "7", "--num-requests", "300", "--seed", "2", *SLOS],
    "disaggregated-arxiv": ["simulate", "--mode", "disaggregated", "--prefill-gpus", "1", "--decode-gpus", "2",
                            "--link", "pcie4", "--workload", "arxiv", "--rate", "2", "--num-requests", "200",
                            "--seed", "3", *SLOS],
    "aggregated-preempt": ["simulate", "--mode", "aggregated", "--num-blocks", "600", "--workload", "sharegpt",
                           "--rate", "6", "--num-requests", "200", "--seed", "4"],
    "chunked-preempt": ["simulate", "--mode", "chunked", "--num-blocks", "1000", "--workload", "sharegpt",
                        "--rate", "8", "--num-requests", "200", "--seed", "5"],
    "disaggregated-preempt": ["simulate", "--mode", "disaggregated", "--num-blocks", "700", "--workload",
                              "sharegpt", "--rate", "5", "--num-requests", "200", "--seed", "6"],
    "chunked-prefix-mooncake": ["simulate", "--mode", "chunked", "--num-gpus", "2", "--prefix-cache", "--trace",
                                "data/traces/mooncake_conv.jsonl", "--num-requests", "300"],
    "aggregated-tp2-70b": ["simulate", "--mode", "aggregated", "--model", "llama-2-70b", "--tp", "2",
                           "--workload", "azure-conv", "--rate", "3", "--num-requests", "150", "--seed", "7"],
    "round-robin-bursty": ["simulate", "--mode", "chunked", "--num-gpus", "3", "--router", "round-robin",
                           "--burstiness", "4", "--rate", "12", "--num-requests", "300", "--seed", "8", *SLOS],
    "goodput-chunked": ["goodput", "--mode", "chunked", "--workload", "azure-conv", "--num-requests", "150",
                        "--slo", "ttft:p90:1", "--slo", "tpot:p90:0.05", "--num-gpus", "2"],
    "goodput-disaggregated": ["goodput", "--mode", "disaggregated", "--workload", "chat-long", "--num-requests",
                              "120", "--slo", "ttft:p90:0.5", "--slo", "itl:p99:0.1"],
}


def _check(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.json"
    if REGEN:
        path.write_text(text)
        return
    assert path.exists(), f"no golden {path.name}: run with PDLAB_REGEN_GOLDEN=1"
    assert text == path.read_text(), f"{name}: output differs from its golden ({path})"


@pytest.mark.parametrize("name", sorted(CASES))
def test_cli_json_is_unchanged(name, capsys):
    assert main([*CASES[name], "--json"]) == 0
    out, _ = capsys.readouterr()
    _check(name, out)


def _steps_digest(result) -> str:
    rows = "\n".join(repr(tuple(r)) for r in result.steps)
    return hashlib.sha256(rows.encode()).hexdigest()


@pytest.mark.parametrize("mode", ["aggregated", "chunked", "disaggregated"])
def test_step_log_is_unchanged(mode):
    """Every iteration of a run (worker, start, end, prefill tokens, decode tokens, KV blocks)."""
    from pdlab.config import ServingConfig
    from pdlab.run import run_serving
    from pdlab.workload import make_requests
    reqs = make_requests(150, 8.0, "chat-long", seed=11)
    cfg = ServingConfig(mode=mode, num_blocks=900, **({"num_gpus": 2} if mode != "disaggregated" else {}))
    res = run_serving(reqs, cfg)
    _check(f"steps-{mode}", json.dumps({"steps": len(res.steps), "sha256": _steps_digest(res)}) + "\n")


@pytest.mark.parametrize("mode", ["aggregated", "chunked", "disaggregated"])
def test_engine_tokens_are_unchanged(mode):
    """The real engine on ``tiny`` behind the same loop: greedy tokens, steps and counts. The
    seconds are the cost model's (measured seconds differ run to run), so the schedule is fixed."""
    import torch

    from pdlab.engine import model as M
    from pdlab.sim import CostModel
    from pdlab.engine.executor import ModelExecutor
    from pdlab.config import ServingConfig
    from pdlab.run import run_serving
    from pdlab.request import StepResult
    from pdlab.workload import make_requests
    import numpy as np

    torch.set_num_threads(1)
    model = M.load_tiny()
    cm = CostModel.from_names("h100", "llama-3-8b")

    class CostClockEngine(ModelExecutor):
        def run(self, batch):
            res = super().run(batch)
            return StepResult(cm.step_time(batch), res.tokens)

    rng = np.random.default_rng(0)
    from dataclasses import replace
    reqs = [replace(r, prompt_len=min(r.prompt_len, 48), max_new_tokens=min(r.max_new_tokens, 12))
            for r in make_requests(10, 40.0, "sharegpt", seed=3)]
    reqs = [replace(r, prompt_ids=tuple(int(t) for t in rng.integers(0, 256, r.prompt_len))) for r in reqs]
    cfg = ServingConfig(mode=mode, model="tiny", num_blocks=64, chunk_size=32 if mode == "chunked" else None)
    res = run_serving(reqs, cfg, lambda name, role, nb, bs: CostClockEngine(model, nb, bs, device="cpu"))
    out = {"tokens": {s.id: s.output_ids for s in res.sequences}, "steps": len(res.steps),
           "sha256": _steps_digest(res), "summary": res.summary()}
    _check(f"engine-{mode}", json.dumps(out, sort_keys=True) + "\n")
