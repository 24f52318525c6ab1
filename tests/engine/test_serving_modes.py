"""Scheduling changes latency, never the answer: greedy tokens are identical in every serving
mode, at every chunk budget, under preemption, and equal to the plain dense forward."""

from __future__ import annotations

import pytest

from pdlab.engine import model as M
from pdlab import ServingConfig, run_serving
from pdlab.engine.executor import factory
from pdlab.request import Status

from engine_support import reference_tokens, small_config, story_requests

MODES = [
    ("aggregated", None),
    ("chunked", 7),
    ("chunked", 32),
    ("chunked", 512),
    ("disaggregated", None),
    ("disaggregated", 16),      # chunked prefill on the prefill worker too
]


def serve(model, requests, mode, chunk=None, num_blocks=64, block_size=16, backend="torch",
          device="cpu", max_num_seqs=256, graphs="auto"):
    cfg = ServingConfig(mode=mode, model="tiny", gpu="cpu", chunk_size=chunk, num_blocks=num_blocks,
                        block_size=block_size, max_num_seqs=max_num_seqs)
    res = run_serving(requests, cfg, executor_factory=factory(model, backend=backend, device=device, graphs=graphs))
    assert all(s.status == Status.FINISHED for s in res.sequences), [s for s in res.sequences]
    return res, {s.id: list(s.output_ids) for s in res.sequences}


@pytest.fixture(scope="module")
def workload():
    return story_requests(gap=0.002)


@pytest.fixture(scope="module")
def expected(tiny, workload):
    return reference_tokens(tiny, workload)


@pytest.mark.parametrize("mode,chunk", MODES)
def test_modes_match_dense_reference(tiny, workload, expected, mode, chunk):
    res, got = serve(tiny, workload, mode, chunk)
    assert got == expected
    if mode == "disaggregated":
        assert res.transfers == sum(r.max_new_tokens > 1 for r in workload)
    if chunk == 7:       # the budget really chunked the longer prompts
        assert any(p > 0 and d > 0 for _, _, _, p, d, _ in res.steps), "no mixed prefill+decode step"


def test_measured_seconds_drive_the_clock(tiny, workload):
    res, _ = serve(tiny, workload, "chunked", 32)
    for s in res.sequences:
        assert len(s.token_times) == s.max_new_tokens
        assert s.token_times == sorted(s.token_times) and s.token_times[0] > s.arrival
    assert all(end > start for _, start, end, *_ in res.steps)


@pytest.mark.parametrize("mode,chunk", [("aggregated", None), ("chunked", 16)])
def test_preemption_recomputes_to_the_same_tokens(tiny, workload, expected, mode, chunk):
    """A cache of 14 blocks of 8 tokens cannot hold every stream: sequences are preempted,
    recomputed (prompt + the tokens they had already produced) and still say the same thing."""
    res, got = serve(tiny, workload, mode, chunk, num_blocks=14, block_size=8)
    assert sum(s.num_preemptions for s in res.sequences) > 0
    assert got == expected


def test_numba_backend_on_the_simulator_matches():
    """The Numba kernels (CUDA simulator on a CPU) give the same greedy tokens as the torch
    backend and the dense reference, on a model small enough for the simulator."""
    model = M.build(small_config(num_layers=1), seed=7)
    reqs = story_requests(max_new=(4, 3, 3), prompts=["Once upon", "Tom and Lily went", "Sam"])
    expected = reference_tokens(model, reqs)
    for mode, chunk in [("chunked", 8), ("disaggregated", None)]:
        _, got = serve(model, reqs, mode, chunk, num_blocks=16, block_size=16, backend="numba")
        assert got == expected, mode


@pytest.mark.gpu
@pytest.mark.parametrize("backend,graphs", [("torch", False), ("numba", False), ("numba", True)])
def test_modes_match_on_gpu(tiny, workload, expected, backend, graphs):
    """On a GPU, with decode steps replayed from CUDA graphs (numba) and launched eagerly."""
    model = M.load_tiny(device="cuda")
    for mode, chunk in MODES:
        _, got = serve(model, workload, mode, chunk, backend=backend, device="cuda", graphs=graphs)
        assert got == expected, (backend, graphs, mode, chunk)
