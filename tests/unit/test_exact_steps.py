"""The simulator's fast paths are exact: the same workload gives the same run with them on and
with ``exact_steps`` (every decode walked sequence by sequence), in every mode, with preemption,
prefix caching and several replicas."""

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from pdlab import ServingConfig, run_serving
from pdlab.metrics import per_request
from pdlab.request import Request

# (gap, prompt length, output length, prefix id): requests sharing a prefix id share their
# first 512-token blocks (as in the Mooncake trace)
requests_st = st.lists(st.tuples(st.floats(0, 0.5), st.integers(1, 1200), st.integers(1, 300),
                                 st.integers(0, 3)), min_size=1, max_size=60)


def make(rows, prefix: bool):
    out, t = [], 0.0
    for i, (gap, p, o, pid) in enumerate(rows):
        t += gap
        hashes = tuple(pid * 1000 + j for j in range(-(-p // 512))) if prefix else None
        out.append(Request(i, t, p, o, block_hashes=hashes))
    return out


def assert_same(reqs, cfg):
    fast = run_serving(reqs, cfg)
    exact = run_serving(reqs, ServingConfig(**{**cfg.__dict__, "exact_steps": True}))
    assert list(fast.steps) == list(exact.steps)
    for a, b in zip(fast.sequences, exact.sequences):
        assert (a.id, a.status, a.num_tokens, a.num_preemptions, a.finish_time, a.first_scheduled) == \
               (b.id, b.status, b.num_tokens, b.num_preemptions, b.finish_time, b.first_scheduled)
        assert a.token_times == b.token_times
        assert a.num_token_times() == len(b.token_times)
    pa, pb = per_request(fast.sequences), per_request(exact.sequences)
    for k in pa:
        np.testing.assert_allclose(pa[k], pb[k], rtol=1e-9, atol=0)
    from pdlab.request import Status
    # (a prefix-cache run can strand a preempted sequence that holds cached blocks while
    # waiting: a scheduler issue of its own, equal on both paths; summary() refuses such runs)
    if all(s.status in (Status.FINISHED, Status.REJECTED) for s in exact.sequences):
        assert fast.summary() == exact.summary()
    return fast


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests_st, st.sampled_from(["aggregated", "chunked", "disaggregated"]),
       st.sampled_from([None, 40, 90, 300]), st.integers(1, 3), st.sampled_from([None, 64, 256]),
       st.booleans(), st.sampled_from([4, 16]), st.sampled_from(["least-loaded", "round-robin"]))
# a recompute after preemption that ends one token short: that token is a decode, not a chunk
@example([(0.0, 270, 84, 1), (0.0, 225, 65, 0)], "chunked", 40, 1, 64, True, 16, "least-loaded")
def test_fast_path_equals_exact_steps(rows, mode, num_blocks, replicas, chunk, prefix, block_size, router):
    cfg = ServingConfig(mode=mode, num_blocks=num_blocks, chunk_size=chunk, prefix_cache=prefix,
                        block_size=block_size, router=router, max_num_seqs=32,
                        num_gpus=replicas if mode != "disaggregated" else None,
                        prefill_gpus=replicas, decode_gpus=max(1, replicas - 1))
    assert_same(make(rows, prefix), cfg)


def test_fast_path_equals_exact_steps_under_pressure():
    """A busy run with many preemptions (the fallback to the per-sequence path and back)."""
    from pdlab.workload import make_requests
    reqs = make_requests(120, 12.0, "sharegpt", seed=3)
    for mode in ("aggregated", "chunked", "disaggregated"):
        res = assert_same(reqs, ServingConfig(mode=mode, num_blocks=500))
        assert sum(s.num_preemptions for s in res.sequences) > 0


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 512), st.integers(0, 10**7), st.sampled_from(["llama-3-8b", "llama-2-70b", "opt-13b", "tiny"]),
       st.sampled_from([1, 2, 4]), st.sampled_from(["h100", "a100-80gb", "l4"]), st.floats(0, 1e-3))
def test_decode_step_time_is_time_for_bit_for_bit(n, ctx, model, tp, gpu, prefill_overhead):
    from pdlab.sim import CostModel
    from pdlab.sim.costmodel import StepShape
    if model == "tiny" and tp > 1:
        tp = 1
    cm = CostModel.from_names(gpu, model, tp).with_efficiency(prefill_overhead_s=prefill_overhead)
    assert cm.decode_step_time(n, ctx) == cm.time_for(StepShape(n, n, n, decode_ctx=ctx))
    assert cm.decode_step_time(n, ctx) == cm.time_for(StepShape.decode(n, 0)._replace(decode_ctx=ctx))


@pytest.mark.parametrize("profile", ["data/profiles/a100-80gb-opt-13b-vllm.json",
                                     "data/profiles/a100-80gb-opt-13b-distserve.json"])
def test_fast_path_equals_exact_steps_with_fitted_profiles(profile):
    """Fitted engines add per-sequence, per-token and per-block terms (and a step-profile kind):
    the steady-decode fast path prices them exactly as the per-sequence path does."""
    from pdlab.workload import make_requests
    reqs = make_requests(120, 2.0, "sharegpt", seed=11)
    for mode in ("aggregated", "chunked", "disaggregated"):
        kw = {"prefill_tp": 2} if mode == "disaggregated" and profile.endswith("distserve.json") else {}
        assert_same(reqs, ServingConfig(mode=mode, model="opt-13b", gpu="a100-80gb", profile=profile, **kw))
