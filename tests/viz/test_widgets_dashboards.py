"""Dashboards: every control is wired (changing it changes a figure), sliders only fire on
release, and an update stays interactive."""

import ipywidgets as W
import numpy as np
import pytest

from pdlab.lab import dashboards as pw, experiments as ex

SMALL = dict(n=80)


def _snapshot(fig):
    out = []
    for t in fig.data:
        for key in ("x", "y"):
            v = getattr(t, key, None)
            out.append(None if v is None else np.asarray(v, dtype=object))
    out.append(fig.layout.title.text)
    out.append(str([(a.text, a.y) for a in fig.layout.annotations]))
    out.append(str([(sh.y0, sh.x0) for sh in fig.layout.shapes]))
    return out


def _same(a, b):
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if x is None or y is None or x.shape != y.shape or not all(
                    (p == q) or (p != p and q != q) for p, q in zip(x.ravel(), y.ravel())):
                return False
        elif x != y:
            return False
    return True


def _changed(dash, name, value):
    before = {k: _snapshot(f) for k, f in dash.figures.items()}
    status = dash.status_line.value
    n = dash.updates
    dash.controls[name].value = value
    assert dash.updates == n + 1, f"{name}: no update ran"
    after = {k: _snapshot(f) for k, f in dash.figures.items()}
    return any(not _same(before[k], after[k]) for k in before) or status != dash.status_line.value


def _other_value(ctrl):
    if isinstance(ctrl, (W.Dropdown, W.SelectionSlider)):
        opts = [o[1] if isinstance(o, tuple) else o for o in ctrl.options]
        return next(o for o in reversed(opts) if o != ctrl.value)
    return ctrl.max if ctrl.value != ctrl.max else ctrl.min


DASHES = {
    "kv": lambda: pw.KVCacheDashboard(**SMALL),
    "interference": lambda: pw.InterferenceDashboard(**SMALL),
    "chunked": lambda: pw.ChunkedDashboard(**SMALL),
    "piggyback": lambda: pw.PiggybackDashboard(),
    "disagg": lambda: pw.DisaggDashboard(**SMALL),
}


@pytest.mark.parametrize("kind", list(DASHES))
def test_every_control_changes_the_view(kind):
    dash = DASHES[kind]()
    assert dash.figures and all(len(f.data) for f in dash.figures.values())
    for name, ctrl in dash.controls.items():
        assert _changed(dash, name, _other_value(ctrl)), f"{kind}: moving {name} changed nothing"


@pytest.mark.parametrize("kind", list(DASHES))
def test_sliders_update_on_release(kind):
    dash = DASHES[kind]()
    sliders = [c for c in dash.controls.values() if isinstance(c, (W.IntSlider, W.FloatSlider, W.SelectionSlider))]
    assert sliders
    assert all(c.continuous_update is False for c in sliders)


def test_interference_slider_changes_the_raster_data():
    dash = pw.InterferenceDashboard(**SMALL)
    before = np.asarray(dash.figures["raster"].data[1].x)
    dash.controls["long_len"].value = 32768
    after = np.asarray(dash.figures["raster"].data[1].x)
    assert not np.array_equal(before, after)


def test_chunked_dashboard_adds_frontier_points_and_sweeps():
    dash = pw.ChunkedDashboard(**SMALL)
    assert len(dash.figures["frontier"].data[0].x) == 1
    dash.controls["chunk"].value = 2048
    assert len(dash.figures["frontier"].data[0].x) == 2
    dash.sweep()
    assert len(dash.figures["frontier"].data[0].x) == len(ex.CHUNKS)


def test_disagg_goodput_button():
    dash = pw.DisaggDashboard(n=60, rate=8.0)
    assert dash.goodput_box.layout.display == "none"        # no empty chart before the click
    g = dash.find_goodput()
    assert set(g) == {"aggregated", "chunked", "disaggregated"} and all(v >= 0 for v in g.values())
    assert list(dash.goodput_fig.data[0].x) == list(g)
    assert dash.goodput_box.layout.display is None          # shown once there is something to show


def test_update_is_interactive():
    """A loose bound for CI; bench/widget_latency.py measures the real p95."""
    dash = pw.InterferenceDashboard(n=200)
    dash.controls["rate"].value = 7.0
    assert dash.last_update_s < 2.0


def test_simulate_is_cached():
    a = ex.simulate("chat-long", 50, 3.0, mode="chunked", chunk_size=256)
    b = ex.simulate("chat-long", 50, 3.0, mode="chunked", chunk_size=256)
    assert a is b


def test_point_percentiles():
    r = ex.simulate("chat-long", 80, 4.0, mode="chunked", chunk_size=512)
    p = ex.point(r)
    assert p["chunk"] == 512 and p["ttft"] > 0 and p["itl"] > 0
    assert ex.point(r, itl_pct=100)["itl"] >= p["itl"]


def test_static_mode_shows_a_snapshot(monkeypatch):
    """scripts/labs_html.py sets PDLAB_STATIC=1: a dashboard renders as values + PNG figures."""
    pytest.importorskip("kaleido")
    import shutil
    if not (shutil.which("chromium") or shutil.which("google-chrome")):
        pytest.skip("kaleido needs a Chromium")
    monkeypatch.setenv("PDLAB_STATIC", "1")
    dash = pw.PiggybackDashboard()
    bundle = dash._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" not in bundle
    html = bundle["text/html"]
    assert html.count("data:image/png;base64,") == len(dash.figures)
    assert "decodes riding along = <b>32</b>" in html


def test_live_mode_is_a_widget(monkeypatch):
    monkeypatch.delenv("PDLAB_STATIC", raising=False)
    dash = pw.PiggybackDashboard()
    assert "application/vnd.jupyter.widget-view+json" in dash._repr_mimebundle_()


def test_progress_yields_every_item():
    assert list(ex.progress([3, 1, 2], "x")) == [3, 1, 2]
