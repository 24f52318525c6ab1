"""pdlab plan: the two-stage search finds what an exhaustive sweep finds; the space, the counting,
the Pareto front; SLOs nothing meets give the closest and exit 0; bad input exit 2."""

import json

import pytest

from pdlab import plan as P
from pdlab.cli import main
from pdlab.metrics import SLO
from pdlab.workload import make_requests

SLOS = [SLO("ttft", 90, 0.5), SLO("tpot", 90, 0.05)]


@pytest.fixture(scope="module")
def small():
    """2 GPUs: aggregated and chunked (two token budgets) as 2 replicas or one tp2, disaggregated 1P:1D."""
    space = P.Space(num_gpus=2, chunks=(256, 2048), routers=("least-loaded",))
    reqs = make_requests(160, 1.0, "sharegpt", seed=3)
    return space, reqs


def test_winner_is_the_best_of_an_exhaustive_sweep(small):
    space, reqs = small
    res = P.plan(reqs, space, SLOS, jobs=1)
    ref = P.exhaustive(reqs, space, SLOS, jobs=1)
    assert res["met"] and res["best"]["label"] == ref[0]["label"], [(r["label"], r["goodput_rps"]) for r in ref]
    # the refined number is what the exhaustive sweep computes for that configuration
    assert res["best"]["goodput_rps"] == ref[0]["goodput_rps"]
    assert len(res["candidates"]) == res["configurations"] == len(ref) == 7
    # the branch and bound left some out, and each of those is below the winner in the exhaustive sweep too
    left = {c["label"] for c in res["candidates"] if c["stage"] == "coarse"}
    assert left and all(r["goodput_rps_per_gpu"] < ref[0]["goodput_rps_per_gpu"] for r in ref if r["label"] in left)
    fine = {r["label"]: r["goodput_rps"] for r in ref}
    assert all(c["goodput_rps"] == fine[c["label"]] for c in res["candidates"] if c["stage"] == "refined")
    labels = [c["label"] for c in res["candidates"]]
    assert len(set(labels)) == len(labels)
    refined = [c for c in res["candidates"] if c["stage"] == "refined"]
    assert refined == sorted(refined, key=lambda c: -c["goodput_rps_per_gpu"])
    assert res["best"]["binding"] in [str(s) for s in SLOS]


def test_space_covers_modes_budgets_splits_pool_tp_and_routers():
    cfgs, skipped = P.Space(num_gpus=8).configs()
    labels = [P.label(c) for c in cfgs]
    assert not skipped and len(set(labels)) == len(labels)
    assert all(c.gpus == 8 for c in cfgs)
    assert {"aggregated", "chunked", "disaggregated"} == {c.mode for c in cfgs}
    assert {c.chunk_size for c in cfgs if c.mode == "chunked"} == set(P.CHUNKS)
    assert {c.router for c in cfgs if c.mode != "disaggregated" and c.replicas > 1} == {"round-robin", "least-loaded"}
    dis = [c for c in cfgs if c.mode == "disaggregated"]
    assert {(c.pool_tp("prefill"), c.pool_tp("decode")) for c in dis} >= {(1, 1), (2, 1), (1, 2), (4, 4)}
    assert "disaggregated 2P(tp2):1D(tp4)" in labels
    cached, _ = P.Space(num_gpus=2, prefix_cache=True).configs()
    assert "kv-aware" in {c.router for c in cached}


def test_a_model_that_does_not_fit_is_left_out_with_the_reason():
    cfgs, skipped = P.Space(model="llama-2-70b", num_gpus=4).configs()
    assert all(c.tp >= 2 or c.mode == "disaggregated" for c in cfgs)
    assert any("no room for a KV cache" in s for s in skipped)


def test_pareto_front_is_not_dominated():
    pts = [{"label": str(i), "mode": "chunked", "rate": 1.0, "met": True, "tok_s_per_user": u, "tok_s_per_gpu": g}
           for i, (u, g) in enumerate([(10, 100), (20, 90), (15, 80), (30, 50), (5, 120), (30, 40)])]
    front = P.pareto_front(pts)
    assert [(p["tok_s_per_user"], p["tok_s_per_gpu"]) for p in front] == [(5, 120), (10, 100), (20, 90), (30, 50)]


def test_request_counting_is_stricter_than_percentiles(small):
    """DistServe counts a request good only when it meets both SLOs: never more goodput."""
    space, reqs = small
    cfg = P.Space(num_gpus=2, modes=("chunked",), chunks=(512,), tps=(1,), routers=("least-loaded",)).configs()[0][0]
    by_req = P.evaluate((cfg, reqs, SLOS, "request", 0.02, 0, 1.0, None))
    by_pct = P.evaluate((cfg, reqs, SLOS, "percentile", 0.02, 0, 1.0, None))
    # resuming a 10% bracket to 2% asks the same rates as a fresh 2% search
    coarse = P.evaluate((cfg, reqs, SLOS, "request", 0.10, 0, 1.0, None))
    resumed = P.evaluate((cfg, reqs, SLOS, "request", 0.02, 0, 1.0, coarse))
    assert [p["rate"] for p in resumed["points"]] == [p["rate"] for p in by_req["points"]]
    assert coarse["rates_tried"] < by_req["rates_tried"]
    assert 0 < by_req["goodput_rps"] <= by_pct["goodput_rps"] * 1.03


def test_cli_plan_json(capsys):
    rc = main(["plan", "--workload", "azure-conv", "--num-requests", "80", "--num-gpus", "2", "--jobs", "1",
               "--slo", "ttft:p90:1", "--slo", "tpot:p90:0.05", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and d["met"] and {"best", "candidates", "pareto", "met", "count"} <= d.keys()
    assert d["best"]["goodput_rps_per_gpu"] == max(c["goodput_rps_per_gpu"] for c in d["candidates"]
                                                   if c["stage"] == "refined")


def test_unmeetable_slos_give_the_closest_and_exit_0(capsys):
    rc = main(["plan", "--workload", "arxiv", "--num-requests", "40", "--num-gpus", "1", "--jobs", "1",
               "--slo", "ttft:p90:0.001"])
    out = capsys.readouterr().out
    assert rc == 0 and "no configuration meets the SLOs. Closest:" in out
    rc = main(["plan", "--workload", "arxiv", "--num-requests", "40", "--num-gpus", "1", "--jobs", "1",
               "--slo", "ttft:p90:0.001", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and d["met"] is False and d["best"] is None and d["closest"]["label"]


@pytest.mark.parametrize("argv, what", [
    (["plan", "--num-gpus", "2"], "at least one --slo"),
    (["plan", "--slo", "ttft:p90:1"], "--num-gpus"),
    (["plan", "--num-gpus", "2", "--slo", "ttft:p90:1", "--count", "both"], "--count"),
    (["plan", "--num-gpus", "1", "--slo", "ttft:p90:1", "--model", "llama-2-70b"], "no configuration"),
])
def test_bad_plan_input_exit_2(capsys, argv, what):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert what in err and len(err.strip().splitlines()) == 1
