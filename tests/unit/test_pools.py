"""Per-pool parallelism (--prefill-tp / --decode-tp) and where the first token comes from
(--first-token-from, --proxy-overhead) in disaggregated serving."""

import json

import numpy as np
import pytest

from pdlab.cli import main
from pdlab.config import ServingConfig
from pdlab.metrics import per_request
from pdlab.request import Status
from pdlab.run import cost_model_for, run_serving
from pdlab.sim import CostModel
from pdlab.workload import make_requests

BASE = dict(mode="disaggregated", model="opt-13b", gpu="a100-80gb")


def _reqs(n=60, rate=2.0, seed=3):
    return make_requests(n, rate, "sharegpt", seed=seed)


def test_pool_tp_defaults_to_tp_and_gpus_count_both_pools():
    cfg = ServingConfig(**BASE, tp=2).validate()
    assert cfg.pool_tp("prefill") == cfg.pool_tp("decode") == cfg.pool_tp("mixed") == 2
    assert cfg.gpus == 4
    cfg = ServingConfig(**BASE, prefill_tp=2, decode_tp=1, prefill_gpus=1, decode_gpus=3).validate()
    assert (cfg.pool_tp("prefill"), cfg.pool_tp("decode")) == (2, 1)
    assert cfg.gpus == 1 * 2 + 3 * 1


def test_each_pool_is_priced_and_sized_by_its_own_tp():
    cfg = ServingConfig(**BASE, prefill_tp=2, decode_tp=1)
    seen = {}

    def hook(worker, batch, result):
        seen.setdefault(worker.role, []).append((CostModel.shape(batch), result.seconds))

    res = run_serving(_reqs(), cfg, on_step=hook)
    tp2 = CostModel.from_names("a100-80gb", "opt-13b", tp=2)
    tp1 = CostModel.from_names("a100-80gb", "opt-13b", tp=1)
    for role, cm in (("prefill", tp2), ("decode", tp1)):
        assert seen[role]
        assert all(sec == cm.time_for(shape) for shape, sec in seen[role])
    assert cost_model_for(cfg, "prefill").tp == 2 and cost_model_for(cfg, "decode").tp == 1
    # the prefill pool's two GPUs hold more KV than the decode pool's one
    cl_blocks = {role: tp.num_blocks(cfg.block_size) for role, tp in (("prefill", tp2), ("decode", tp1))}
    assert cl_blocks["prefill"] > cl_blocks["decode"]
    assert res.num_blocks == cl_blocks["prefill"]
    assert all(s.status is Status.FINISHED for s in res.sequences)


def test_explicit_pool_tp_equal_to_tp_changes_nothing():
    a = run_serving(_reqs(), ServingConfig(**BASE)).summary()
    b = run_serving(_reqs(), ServingConfig(**BASE, prefill_tp=1, decode_tp=1)).summary()
    assert a == b


def test_first_token_from_decode_arrives_after_the_transfer_and_proxy():
    reqs = _reqs()
    pre = run_serving(reqs, ServingConfig(**BASE, prefill_tp=2))
    dec = run_serving(reqs, ServingConfig(**BASE, prefill_tp=2, first_token_from="decode", proxy_overhead_s=0.02))
    moved = 0
    for p, d in zip(pre.sequences, dec.sequences):
        if d.transfer_end is None:        # a one-token answer never leaves the prefill worker
            continue
        moved += 1
        assert d.token_times[0] == d.transfer_end
        # prefill timing is the same; the first token now waits for the KV and the proxy
        assert d.token_times[0] >= p.token_times[0] + 0.02
        assert d.transfer_end - d.transfer_start >= 0.02
        assert d.token_times[1] > d.token_times[0]
    assert moved > 40
    ttft_p = per_request(pre.sequences)["ttft"]
    ttft_d = per_request(dec.sequences)["ttft"]
    assert np.median(ttft_d - ttft_p) > 0.02


def test_json_says_which_pools_and_first_token_path(capsys):
    rc = main(["simulate", "--mode", "disaggregated", "--model", "opt-13b", "--gpu", "a100-80gb",
               "--prefill-tp", "2", "--decode-tp", "1", "--first-token-from", "decode", "--proxy-overhead", "0.005",
               "--rate", "1", "--num-requests", "30", "--json"])
    d = json.loads(capsys.readouterr()[0])
    assert rc == 0
    assert (d["gpus"], d["prefill_tp"], d["decode_tp"]) == (3, 2, 1)
    assert d["first_token_from"] == "decode" and d["proxy_overhead_s"] == 0.005


@pytest.mark.parametrize("argv, msg", [
    (["--mode", "aggregated", "--prefill-tp", "2"], "--prefill-tp needs --mode disaggregated"),
    (["--mode", "chunked", "--decode-tp", "2"], "--decode-tp needs --mode disaggregated"),
    (["--mode", "chunked", "--first-token-from", "decode"], "--first-token-from decode needs --mode disaggregated"),
    (["--mode", "aggregated", "--proxy-overhead", "0.1"], "--proxy-overhead needs --mode disaggregated"),
    (["--mode", "disaggregated", "--first-token-from", "router"], "unknown --first-token-from 'router'"),
    (["--mode", "disaggregated", "--proxy-overhead", "-1"], "--proxy-overhead must be >= 0"),
    (["--mode", "disaggregated", "--model", "opt-13b", "--decode-tp", "3"], "--decode-tp 3 does not divide"),
    (["--mode", "disaggregated", "--prefill-tp", "0"], "--prefill-tp must be >= 1"),
])
def test_bad_pool_options_are_one_line_exit_2(capsys, argv, msg):
    rc = main(["simulate", *argv, "--num-requests", "5"])
    err = capsys.readouterr()[1]
    assert rc == 2 and msg in err and err.count("\n") == 1


def test_compare_json_names_the_pools(capsys):
    from pdlab.paths import MEASURED
    run = MEASURED / "distserve-opt13b-a100" / "distserve-c21d11-300-3.csv"
    assert main(["compare", "--measured", str(run), "--model", "opt-13b", "--gpu", "a100-80gb", "--mode",
                 "disaggregated", "--prefill-tp", "2", "--first-token-from", "decode", "--json"]) == 0
    d = json.loads(capsys.readouterr()[0])
    assert (d["gpus"], d["prefill_tp"], d["decode_tp"], d["first_token_from"]) == (3, 2, 1, "decode")
    assert d["profile"] == "ideal" and d["runs"][0]["requests"] == 300
