"""The diagnose and plan figures: right traces, right data, the clock named."""

import numpy as np

from pdlab.config import ServingConfig
from pdlab.diagnose import observe, report
from pdlab.metrics import SLO
from pdlab.viz import diagnosis as vd
from pdlab.workload import make_requests


def _rep():
    cfg = ServingConfig(mode="aggregated")
    obs = observe.simulate(make_requests(80, 8.0, "chat-long"), cfg)
    return report(obs, cfg, [SLO("ttft", 90, 0.5)]), obs


def test_symptom_bars_and_histograms():
    rep, obs = _rep()
    f = vd.symptom_bars(rep["diagnosis"], rep["clock"])
    assert list(f.data[0].x) == [r["name"] for r in rep["diagnosis"]["rows"]]
    assert "simulated" in f.layout.title.text
    h = vd.length_histograms(rep["evidence"]["lengths"], rep["clock"])
    assert sum(h.data[0].y) == 80 and sum(h.data[1].y) == 80


def test_itl_around_long_splits_the_gaps():
    rep, obs = _rep()
    f = vd.itl_around_long(obs, rep["evidence"]["long_prompts"]["long_threshold_tokens"], rep["clock"])
    assert len(f.data) == 2
    n = [int(t.name.split("(")[1].split()[0]) for t in f.data]
    short = ~(obs.prompt_len >= rep["evidence"]["long_prompts"]["long_threshold_tokens"])[obs.itl_owner]
    assert sum(n) == int(short.sum())
    assert np.all(np.diff(f.data[0].y) >= 0)        # a CDF


def test_pareto_figure_marks_the_front_and_the_winner():
    pts = [{"label": "a", "mode": "chunked", "rate": 1.0, "met": True, "tok_s_per_user": 10, "tok_s_per_gpu": 100},
           {"label": "b", "mode": "disaggregated", "rate": 2.0, "met": False, "tok_s_per_user": 5, "tok_s_per_gpu": 50}]
    plan = {"points": pts, "pareto": pts[:1], "best": {"at": {"tok_s_per_user": 10, "tok_s_per_gpu": 100}},
            "clock": "simulated (cost model: x on y)"}
    f = vd.pareto(plan)
    names = [t.name for t in f.data]
    assert names == ["chunked", "disaggregated", "Pareto front", "best"]
    assert f.data[1].marker.symbol == ("circle-open",)


def test_diagnose_dashboard_slider_redraws():
    from pdlab.lab.diagnose_dashboard import DiagnoseDashboard
    dash = DiagnoseDashboard(n=60, rate=2.0)
    before = list(dash.figures["symptoms"].data[0].y)
    dash.controls["rate"].value = 14.0
    assert list(dash.figures["symptoms"].data[0].y) != before
    assert "verdict" in dash.status_line.value
