"""Figure builders: every figure has its traces, names its clock, and shows what it claims to."""

import math

import numpy as np
import plotly.graph_objects as go
import pytest

from pdlab import analysis, viz
from pdlab.lab import dashboards as pw, experiments as ex
from pdlab.sim import CostModel
from pdlab.metrics import SLO


@pytest.fixture(scope="module")
def runs():
    return {
        "aggregated": ex.simulate("chat-long", 120, 6.0, mode="aggregated"),
        "chunked": ex.simulate("chat-long", 120, 6.0, mode="chunked", chunk_size=512),
        "disaggregated": ex.simulate("chat-long", 120, 6.0, mode="disaggregated"),
    }


def _arr(x):
    return np.asarray(x, dtype=float)


def test_clock_label_names_model_and_gpu(runs):
    assert viz.clock_label(runs["aggregated"]) == "simulated (cost model: llama-3-8b on h100)"
    assert viz.sim_label("opt-13b", "a100-80gb", tp=2) == "simulated (cost model: opt-13b on a100-80gb x tp2)"


def test_batch_timeline_one_row_per_worker_and_tokens_add_up(runs):
    r = runs["disaggregated"]
    f = viz.batch_timeline(r, max_steps=10_000)
    assert len(f.data) == 2 * len(r.workers)           # (all tokens, decode tokens) per worker
    assert "simulated (cost model" in f.layout.title.text
    total = sum(_arr(t.y).sum() for t in f.data if t.legendgroup == "prefill")
    assert total == sum(s[3] + s[4] for s in r.steps)
    # the decode worker's bars are all decode: its "all tokens" bar equals its decode bar
    all_dec, dec = f.data[2], f.data[3]
    assert np.array_equal(_arr(all_dec.y), _arr(dec.y))
    assert f.layout.yaxis.type == "log"


def test_batch_timeline_window(runs):
    r = runs["aggregated"]
    lo, hi = 5.0, 6.0
    f = viz.batch_timeline(r, t_range=(lo, hi))
    x = _arr(f.data[0].x)
    assert x.size and x.min() >= lo - 1.0 and x.max() <= hi + 1.0
    assert tuple(f.layout.xaxis.range) == (lo, hi)


def test_raster_marks_every_token_and_stalls(runs):
    r = runs["aggregated"]
    f = viz.token_raster(r, max_requests=1000, stall_s=0.1)
    n_tokens = sum(len(s.token_times) for s in r.sequences)
    assert _arr(f.data[1].x).size == n_tokens
    stall_x = _arr(f.data[2].x)
    n_stalls = int(np.isnan(stall_x).sum())           # one NaN closes each stall segment
    expected = sum(int((np.diff(s.token_times) > 0.1).sum()) for s in r.sequences)
    assert n_stalls == expected > 0
    assert f.layout.shapes, "the long prefill is shaded"


def test_raster_points_keeps_old_signature(runs):
    xs, ys, qx, qy = viz.raster_points(runs["chunked"], max_requests=5)
    assert len(xs) == len(ys) and len(qx) == len(qy) == 15


def test_chunked_freezes_less_than_aggregated(runs):
    agg, ch = analysis.max_gaps(runs["aggregated"]), analysis.max_gaps(runs["chunked"])
    assert agg.max() > 3 * ch.max()
    assert np.mean(agg > 0.1) > np.mean(ch > 0.1)


def test_cdf_and_tail(runs):
    arrays = viz.metric_arrays(runs, "itl")
    f = viz.cdf(arrays, "itl", slo=0.05)
    assert [t.name for t in f.data] == list(runs)
    y = _arr(f.data[0].y)
    assert np.all(np.diff(y) >= 0) and y[-1] == pytest.approx(1.0)
    t = viz.cdf(arrays, "itl", tail=True, log_x=True, slo=0.05)
    yt = _arr(t.data[0].y)
    assert np.all(np.diff(yt) <= 1e-12) and yt.min() > 0
    assert t.layout.yaxis.type == "log"


def test_log_axes_spanning_decades_label_only_powers_of_ten(runs):
    t = viz.cdf(viz.metric_arrays(runs, "itl"), "itl", tail=True, log_x=True)
    for axis in (t.layout.xaxis, t.layout.yaxis):          # both span 2+ decades here
        assert axis.type == "log" and axis.dtick == 1 and axis.minor.ticks == "outside"
    assert t.layout.yaxis.tickformat == ".1~p"             # 0.001% stays 0.001%, not "0%"
    tl = viz.batch_timeline(runs["aggregated"])             # 1 to thousands of tokens
    assert tl.layout.yaxis.dtick == 1
    narrow = viz.sweep_lines([1, 2], {"a": [10.0, 14.0]}, "t", "x", "y", log_y=True)
    assert narrow.layout.yaxis.tickmode == "auto"           # under a decade: plotly's own ticks
    w = viz.empty_widget()                                  # a widget refreshed wide, then narrow
    viz.refresh(w, t)
    viz.refresh(w, viz.cdf({"a": np.array([0.010, 0.011, 0.012])}, "itl", tail=True, log_x=True))
    assert w.layout.xaxis.tickmode == "auto"
    linear = viz.cdf(viz.metric_arrays(runs, "ttft"), "ttft")
    assert linear.layout.xaxis.dtick is None


def test_lines_on_log_axes_are_placed_in_log_units():
    """plotly places annotations on log axes at log10(value): a raw value sends them to 1e50."""
    f = viz.percentile_bars({"a": {"itl_s": {"p50": 0.01, "p90": 0.02, "p99": 0.03}}}, "itl", slo=0.05, log_y=True)
    ann = f.layout.annotations[0]
    assert ann.y == pytest.approx(math.log10(50))
    f = viz.percentile_bars({"a": {"itl_s": {"p50": 0.01, "p90": 0.02, "p99": 0.03}}}, "itl", slo=0.05)
    assert f.layout.annotations[0].y == pytest.approx(50)


def test_percentile_bars_values(runs):
    s = {k: r.summary() for k, r in runs.items()}
    f = viz.percentile_bars(s, "ttft")
    for trace, (k, summ) in zip(f.data, s.items()):
        assert _arr(trace.y)[2] == pytest.approx(summ["ttft_s"]["p99"] * 1e3)


def test_kv_occupancy_counts_preemptions():
    r = ex.simulate("chat-long", 150, 8.0, mode="chunked", chunk_size=512, num_blocks=600)
    f = viz.kv_occupancy(r)
    pre = sum(s.num_preemptions for s in r.sequences)
    assert pre > 0 and f"{pre} preemptions" in f.layout.title.text
    y = _arr(f.data[0].y)
    assert 0 <= y.min() and y.max() <= 1.0


def test_slo_curves_and_goodput_bars(runs):
    reqs = ex.chat_long(80, 4.0)
    slos = [SLO("ttft", 90, 0.5), SLO("itl", 99, 0.05)]
    from pdlab.config import ServingConfig
    cfgs = {"aggregated": ServingConfig(mode="aggregated"), "chunked": ServingConfig(mode="chunked")}
    sw = ex.sweep_rates(reqs, [2.0, 4.0], cfgs, slos, progress=False)
    f = viz.slo_curves([2.0, 4.0], sw, slos, per_gpu={"aggregated": 1, "chunked": 1}, goodputs={"chunked": 3.0})
    assert len(f.data) == len(slos) * len(cfgs)
    for a in f.layout.annotations:
        if a.text.startswith("SLO"):
            assert a.y < 4, "SLO labels on the log axes are in log units"
    g = viz.goodput_bars({"aggregated": 1.0, "chunked": 2.5}, slos=slos)
    assert list(g.data[0].y) == [1.0, 2.5]


def test_frontier_highlight_and_reference():
    pts = [{"chunk": 256, "ttft": 0.3, "itl": 0.01}, {"chunk": 1024, "ttft": 0.1, "itl": 0.05}]
    f = viz.frontier(pts, slo_itl=0.03, highlight=1024, extra={"aggregated": {"ttft": 0.09, "itl": 0.2}})
    assert list(f.data[0].text) == ["256", "1024"]
    assert list(f.data[-1].x) == [100.0]             # the circled current budget
    assert f.data[1].name == "aggregated"


def test_piggybacked_decodes_are_nearly_free():
    cm = CostModel.from_names("h100", "llama-3-8b")
    d, p, both = viz.piggyback_times(cm, chunk=512, decodes=32, context=1024).values()
    assert p < both < p + 0.5 * d
    f = viz.piggyback_bars(cm)
    assert len(f.data[0].y) == 3


def test_kv_capacity_and_decode_throughput():
    cms = {m: CostModel.from_names("h100", m) for m in ("llama-3-8b", "llama-2-7b")}
    f = viz.kv_capacity(cms, contexts=(1024, 4096), max_num_seqs=256)
    assert _arr(f.data[0].y)[0] == cms["llama-3-8b"].kv_capacity_tokens() // 1024
    g = viz.decode_throughput(cms["llama-3-8b"], context=2048, max_batch=512)
    tps = _arr(g.data[0].y)
    assert tps[-1] > 10 * tps[0]


def test_busy_share_and_first_gaps(runs):
    b = analysis.busy_share(runs["disaggregated"])
    assert set(b) == {"prefill0", "decode0"} and all(0 <= v <= 1.0 + 1e-9 for v in b.values())
    assert b["decode0"] > b["prefill0"]
    g = analysis.first_gaps(runs["disaggregated"])
    assert g.size and np.all(g > 0)


def test_refresh_updates_in_place_and_replaces_when_shapes_differ(runs):
    w = viz.empty_widget()
    viz.refresh(w, viz.token_raster(runs["aggregated"], stall_s=0.1))
    n = len(w.data)
    first = w.data[1]
    with viz.bare():
        viz.refresh(w, viz.token_raster(runs["chunked"], stall_s=0.1))
    assert len(w.data) == n and w.data[1] is first      # same trace objects, new data
    assert "chunked" in w.layout.title.text
    viz.refresh(w, viz.percentile_bars({"x": runs["chunked"].summary()}, "itl"))
    assert [t.type for t in w.data] == ["bar"] and not w.layout.shapes


def test_bare_skips_the_template_only_inside():
    with viz.bare():
        f = viz.cdf({"a": np.array([1.0, 2.0])}, "ttft")
    assert "plot_bgcolor" not in f.layout.to_plotly_json().get("template", {}).get("layout", {})
    g = viz.cdf({"a": np.array([1.0, 2.0])}, "ttft")
    assert g.layout.to_plotly_json()["template"]["layout"]["plot_bgcolor"] == "white"   # plotly_white


def test_widget_flag_returns_figurewidget(runs):
    assert isinstance(viz.batch_timeline(runs["chunked"], widget=True), go.FigureWidget)
    assert isinstance(viz.token_raster(runs["chunked"], widget=True), go.FigureWidget)


def test_longest_stall_holds_the_prefills_that_caused_it(runs):
    agg, chunked = analysis.longest_stall(runs["aggregated"]), analysis.longest_stall(runs["chunked"])
    assert agg["gap_s"] == pytest.approx(float(analysis.max_gaps(runs["aggregated"]).max()))
    cm = CostModel.from_names("h100", "llama-3-8b")
    # aggregated: the freeze is prefill-only iterations, and lasts at least as long as they take
    assert agg["prefill_iterations"] >= 1 and agg["prefill_tokens"] >= 4096
    assert agg["gap_s"] >= cm.prefill_time(agg["prefill_tokens"] // agg["prefill_iterations"]) * 0.99
    assert chunked["gap_s"] < agg["gap_s"]


def test_transfer_times_measured_solid_simulated_dashed():
    f = viz.transfer_times({"per-block": ([16, 256], [0.001, 0.004])}, {"per-block": ([16, 256], [0.0008, 0.005])},
                           "measured on CPU (gloo)", "simulated Link 1.2 GB/s")
    assert [t.name for t in f.data] == ["per-block (measured)", "per-block (simulated Link)"]
    assert list(f.data[0].y) == [1.0, 4.0] and f.data[1].line.dash == "dash"
    assert "measured on CPU (gloo)" in f.layout.title.text and "simulated Link" in f.layout.title.text
    assert f.layout.xaxis.type == f.layout.yaxis.type == "log"


def test_side_by_side_names_both_clocks_and_leaves_missing_bars_empty():
    f = viz.side_by_side({"1P1D": 0.2, "aggregated x1": 0.5}, {"1P1D": 0.1}, "TTFT p50", "ms",
                         "measured on CPU (gloo)", "simulated (cost model: tiny on cpu)")
    assert [t.name for t in f.data] == ["measured", "simulated"]
    assert list(f.data[0].y) == [200.0, 500.0] and list(f.data[1].y) == [100.0, None]
    assert "measured on CPU (gloo)" in f.layout.title.text and "simulated (cost model" in f.layout.title.text
