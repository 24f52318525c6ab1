"""The lessons of the labs, asserted on the simulator (cost model: llama-3-8b on H100)."""

import pytest

from pdlab import ServingConfig, run_serving
from pdlab.workload import Lengths, make_requests

MIX = Lengths("mix", a=256, b=128, long_len=8192, long_share=0.05)


@pytest.fixture(scope="module")
def mix_requests():
    # short chats plus occasional 8k-token prompts, 2 GPUs' worth of traffic
    return make_requests(1500, 16, "sharegpt", seed=3)


def summary(reqs, **kw):
    return run_serving(reqs, ServingConfig(model="llama-3-8b", gpu="h100", **kw)).summary()


def test_aggregated_itl_tail_is_worse_than_chunked(mix_requests):
    agg = summary(mix_requests, mode="aggregated", num_gpus=2)
    chk = summary(mix_requests, mode="chunked", num_gpus=2, chunk_size=512)
    assert agg["completed"] == chk["completed"] == len(mix_requests)
    assert agg["itl_s"]["p99"] > 3 * chk["itl_s"]["p99"]


def test_disaggregation_removes_prefill_stalls_from_decode(mix_requests):
    agg = summary(mix_requests, mode="aggregated", num_gpus=2)
    dis = summary(mix_requests, mode="disaggregated", prefill_gpus=1, decode_gpus=1)
    # decode iterations never contain a prompt: the ITL tail is the decode step itself
    assert dis["itl_s"]["p99"] < agg["itl_s"]["p99"] / 3
    assert dis["itl_s"]["p99"] < 1.5 * dis["itl_s"]["p50"]


def test_tighter_chunk_budget_lowers_itl_and_raises_ttft():
    reqs = make_requests(800, 6, MIX, seed=5)
    tight = summary(reqs, mode="chunked", chunk_size=256)
    loose = summary(reqs, mode="chunked", chunk_size=4096)
    assert tight["itl_s"]["p99"] < loose["itl_s"]["p99"]
    assert tight["ttft_s"]["mean"] > loose["ttft_s"]["mean"]


def test_slow_link_makes_disaggregation_lose():
    reqs = make_requests(300, 4, "sharegpt", seed=1)
    fast = summary(reqs, mode="disaggregated", link="nvlink")
    slow = summary(reqs, mode="disaggregated", link="eth-25g")
    # llama-3-8b KV: 128 KiB per token, a 2k-token prompt is 268 MB: ~86 ms over 25 GbE
    assert slow["ttft_s"]["p50"] == fast["ttft_s"]["p50"]   # TTFT comes from the prefill pool
    assert slow["e2e_s"]["p50"] > fast["e2e_s"]["p50"] + 0.05
