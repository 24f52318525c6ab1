"""Plotly figure builders. Every figure a lab or report shows is built here (and unit-tested);
notebooks only call these. Builders take a ``RunResult`` (or its summary) and return a
``go.Figure``; pass ``widget=True`` for a ``go.FigureWidget`` that sliders can update in place.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .metrics import per_request
from .request import Status

MODE_COLORS = {"aggregated": "#d62728", "chunked": "#1f77b4", "disaggregated": "#2ca02c"}
PREFILL, DECODE = "#ff7f0e", "#1f77b4"
LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=50, b=50), height=380)


def _fig(widget: bool, **layout) -> go.Figure:
    f = go.FigureWidget() if widget else go.Figure()
    f.update_layout(**{**LAYOUT, **layout})
    return f


def clock_label(result) -> str:
    c = result.config
    return f"simulated: {c.model} on {c.gpu}" + (f" x tp{c.tp}" if c.tp > 1 else "")


def token_raster(result, max_requests: int = 60, t_range: tuple[float, float] | None = None,
                 widget: bool = False) -> go.Figure:
    """One row per request, a mark at every emitted token: a stall is a horizontal gap, and a
    long prompt that freezes every stream shows as a vertical white band."""
    f = _fig(widget, title=f"Token raster ({result.config.mode}; {clock_label(result)})",
             xaxis_title="time (s)", yaxis_title="request")
    xs, ys, qx, qy = raster_points(result, max_requests, t_range)
    f.add_scattergl(x=qx, y=qy, mode="lines", line=dict(color="#cccccc", width=1), name="queued / prefill",
                    connectgaps=False)
    f.add_scattergl(x=xs, y=ys, mode="markers", marker=dict(size=3, color=MODE_COLORS.get(result.config.mode)),
                    name="token")
    return f


def raster_points(result, max_requests: int = 60, t_range=None):
    """(token x, token y, waiting-line x, waiting-line y) for the raster (None breaks lines)."""
    seqs = [s for s in result.sequences if s.status is Status.FINISHED]
    if t_range is not None:
        lo, hi = t_range
        seqs = [s for s in seqs if s.token_times[-1] >= lo and s.request.arrival <= hi]
    seqs = seqs[:max_requests]
    xs, ys, qx, qy = [], [], [], []
    for row, s in enumerate(seqs):
        xs.extend(s.token_times)
        ys.extend([row] * len(s.token_times))
        qx.extend([s.request.arrival, s.token_times[0], None])
        qy.extend([row, row, None])
    return xs, ys, qx, qy


def batch_timeline(result, max_steps: int = 400, widget: bool = False) -> go.Figure:
    """Per worker, each iteration as a bar: height = tokens, split into prefill and decode."""
    steps = result.steps[:max_steps]
    f = _fig(widget, title=f"Iterations ({result.config.mode}; {clock_label(result)})", barmode="stack",
             xaxis_title="time (s)", yaxis_title="tokens in iteration")
    if not steps:
        return f
    arr = np.array([s[:5] for s in steps], dtype=float)
    names = result.workers
    for w in np.unique(arr[:, 0]).astype(int):
        m = arr[:, 0] == w
        start, end = arr[m, 1], arr[m, 2]
        mid = (start + end) / 2
        for col, color, label in ((3, PREFILL, "prefill"), (4, DECODE, "decode")):
            f.add_bar(x=mid, y=arr[m, col], width=end - start, marker_color=color, marker_line_width=0,
                      name=f"{names[w]} {label}", legendgroup=label, offsetgroup=str(w))
    return f


def cdf(values_by_label: dict[str, np.ndarray], metric: str, widget: bool = False,
        slo: float | None = None) -> go.Figure:
    """Empirical CDFs of one latency metric, one line per label (mode)."""
    f = _fig(widget, title=f"{metric.upper()} distribution", xaxis_title=f"{metric.upper()} (ms)",
             yaxis_title="fraction of " + ("gaps" if metric == "itl" else "requests"))
    for label, v in values_by_label.items():
        x, y = cdf_points(v)
        f.add_scatter(x=x * 1e3, y=y, mode="lines", name=label, line=dict(color=MODE_COLORS.get(label)))
    if slo is not None:
        f.add_vline(x=slo * 1e3, line_dash="dash", annotation_text="SLO")
    return f


def cdf_points(v: np.ndarray, max_points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    v = np.sort(v[np.isfinite(v)])
    if v.size == 0:
        return np.zeros(0), np.zeros(0)
    y = np.arange(1, v.size + 1) / v.size
    if v.size > max_points:   # thin the curve, keep the tail exact
        idx = np.unique(np.concatenate([np.linspace(0, v.size - 1, max_points).astype(int),
                                        np.arange(max(0, v.size - 50), v.size)]))
        v, y = v[idx], y[idx]
    return v, y


def percentile_bars(summaries: dict[str, dict], metric: str, widget: bool = False) -> go.Figure:
    """p50 / p90 / p99 of ``metric`` for each labelled summary (from ``RunResult.summary``)."""
    f = _fig(widget, title=f"{metric.upper()} percentiles", barmode="group", yaxis_title="ms")
    for label, s in summaries.items():
        st = s[f"{metric}_s"]
        f.add_bar(x=["p50", "p90", "p99"], y=[(st[p] or 0) * 1e3 for p in ("p50", "p90", "p99")],
                  name=label, marker_color=MODE_COLORS.get(label))
    return f


def metric_arrays(results: dict[str, object], metric: str) -> dict[str, np.ndarray]:
    return {k: per_request(r.sequences)[metric] for k, r in results.items()}


def kv_occupancy(result, widget: bool = False) -> go.Figure:
    """KV blocks in use after every iteration, per worker, as a share of the cache."""
    f = _fig(widget, title="KV cache occupancy", xaxis_title="time (s)", yaxis_title="share of blocks used",
             yaxis_range=[0, 1.05])
    if not result.steps:
        return f
    arr = np.array(result.steps, dtype=float)
    for w in np.unique(arr[:, 0]).astype(int):
        m = arr[:, 0] == w
        f.add_scattergl(x=arr[m, 2], y=arr[m, 5] / result.num_blocks, mode="lines", name=result.workers[w])
    return f
