"""Lab 07's figures and dashboard: each figure plots the numbers of the runs it is given, names
its clock, and the dashboard's sliders rerun the simulation."""

import numpy as np
import pytest

from pdlab import viz
from pdlab.config import ServingConfig
from pdlab.lab import routing as rt
from pdlab.request import Request
from pdlab.run import cost_model_for, run_serving, sim_clock
from pdlab.sessions import SessionSpec, make_sessions


def _reqs(n=50):
    rng = np.random.default_rng(0)
    return [Request(i, i / 4.0, 512 * 3 - int(rng.integers(1, 100)), 20,
                    block_hashes=(int(rng.integers(3)), 100 + int(rng.integers(2)), 10**6 + i)) for i in range(n)]


@pytest.fixture(scope="module")
def summaries():
    out = {}
    for r, gb in (("round-robin", 0.0), ("kv-aware", 0.0), ("kv-aware + host", 1.0)):
        cfg = ServingConfig(num_gpus=2, prefix_cache=True, router=r.split(" ")[0], num_blocks=300, offload_gb=gb)
        s = run_serving(_reqs(), cfg).summary()
        s["clock"] = sim_clock(cfg)
        out[r] = s
    return out


def test_conversation_cost_counts_only_the_new_part_with_a_cache():
    spec = SessionSpec(turns=6, system_len=0)
    reqs = make_sessions(40, 1.0, spec, seed=3)
    turns = [r for r in reqs if r.session_id == reqs[0].session_id]
    t = viz.prefix.conversation_tokens(turns)
    assert list(t["without_cache"]) == [r.prompt_len for r in turns]
    assert t["with_cache"][0] == turns[0].prompt_len          # the first turn has nothing cached
    for k in range(1, len(turns)):                            # later turns: the history's whole blocks are hits
        assert t["with_cache"][k] == turns[k].prompt_len - 16 * (turns[k - 1].prompt_len // 16)
    f = viz.prefix.conversation_cost(turns)
    assert [list(d.y) for d in f.data] == [list(t["without_cache"]), list(t["with_cache"])]


def test_router_bars_plot_each_runs_numbers(summaries):
    f = viz.prefix.router_bars(summaries)
    assert "simulated (cost model" in f.layout.title.text
    by = {d.name: d for d in f.data}
    assert list(by["hit rate, GPU"].y) == [s["prefix_hit_rate_device"] for s in summaries.values()]
    assert list(by["hit rate, host tier"].y) == [s["prefix_hit_rate_host"] for s in summaries.values()]
    assert list(by["TTFT p90"].y) == [s["ttft_s"]["p90"] for s in summaries.values()]
    assert by["unbounded cache"].y[0] == max(s["prefix_hit_rate_upper_bound"] for s in summaries.values())


def test_replica_load_has_a_line_per_replica_naming_its_share(summaries):
    s = summaries["kv-aware"]
    f = viz.prefix.replica_load(s)
    assert len(f.data) == 2
    total = sum(s["replica_load"]["requests"])
    for d, n in zip(f.data, s["replica_load"]["requests"]):
        assert f"{100 * n / total:.0f}% of requests" in d.name
        assert len(d.x) == len(d.y) == len(s["replica_load"]["t_s"])


def test_ttft_split_stacks_to_the_mean_ttft(summaries):
    f = viz.prefix.ttft_split_bars(summaries)
    total = np.sum([np.asarray(d.y, float) for d in f.data], axis=0)
    assert total == pytest.approx([s["ttft_s"]["mean"] for s in summaries.values()], rel=1e-9)
    assert f.data[1].name == "transfer" and f.data[1].y[2] > 0 and f.data[1].y[0] == 0


def test_weight_sweep_sorts_points_and_marks_the_current_weight():
    pts = [{"overlap_weight": 4, "hit_rate": 0.9, "ttft_p90": 0.1}, {"overlap_weight": 0, "hit_rate": 0.7, "ttft_p90": 0.2}]
    f = viz.prefix.weight_sweep(pts, current=4, clock="simulated (x)")
    assert list(f.data[0].x) == [0, 4] and list(f.data[0].y) == [0.7, 0.9] and list(f.data[1].y) == [0.2, 0.1]
    assert any("weight 4" in a.text for a in f.layout.annotations)


def test_offload_breakeven_crosses_where_copy_equals_recompute():
    cm = cost_model_for(ServingConfig())
    even = viz.prefix.breakeven_gbps(cm, 4096)
    recompute = cm.prefill_time(4097, 0) - cm.prefill_time(1, 4096)
    assert 4096 * cm.model.kv_bytes_per_token / (even * 1e9) == pytest.approx(recompute)
    f = viz.prefix.offload_breakeven(cm, 4096)
    copy, rec = f.data
    i = int(np.argmin(np.abs(np.asarray(copy.x) - even)))
    assert copy.y[0] > rec.y[0] and copy.y[-1] < rec.y[-1]      # slow links lose, fast links win
    assert copy.y[i] == pytest.approx(rec.y[i], rel=0.15)


def test_routing_dashboard_sliders_rerun_and_add_points():
    d = rt.RoutingDashboard(n=60)
    before = list(d.figures["sweep"].data[0].x)
    d.controls["overlap_weight"].value = 3.0
    assert list(d.figures["sweep"].data[0].x) == sorted(before + [3.0])
    d.controls["load_weight"].value = 0.0              # pure affinity: one replica takes everything
    rl = d.summary()["replica_load"]
    assert max(rl["requests"]) == sum(rl["requests"])
    assert "simulated (cost model" in d.status_line.value
