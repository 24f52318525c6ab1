"""Latency distributions, SLOs and capacity, one line or bar per label (usually a mode).

    cdf               empirical CDFs of TTFT / TPOT / ITL, one line per label, SLO line
    percentile_bars   p50 / p90 / p99 of a metric per label, SLO line
    slo_curves        an SLO metric vs request rate per label, the SLO line, goodput marked
    goodput_bars      goodput per GPU per label
    frontier          TTFT vs ITL over chunk sizes (the chunked-prefill trade-off)
    sweep_lines       a metric vs a knob, one line per label
    value_bars        one labelled value per bar
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..metrics import per_request
from .style import (MODE_COLORS, color_for, decade_ticks, fig as _fig, hline, palette, subtitle as _subtitle,
                    vline)


# ---- latency distributions ---------------------------------------------------------------------
def cdf_points(v: np.ndarray, max_points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    v = np.sort(np.asarray(v, dtype=float)[np.isfinite(v)])
    if v.size == 0:
        return np.zeros(0), np.zeros(0)
    y = np.arange(1, v.size + 1) / v.size
    if v.size > max_points:   # thin the curve, keep the tail exact
        idx = np.unique(np.concatenate([np.linspace(0, v.size - 1, max_points).astype(int),
                                        np.arange(max(0, v.size - 50), v.size)]))
        v, y = v[idx], y[idx]
    return v, y


def cdf(values_by_label: dict[str, np.ndarray], metric: str, widget: bool = False,
        slo: float | None = None, clock: str | None = None, log_x: bool = False, tail: bool = False,
        slo_text: str = "SLO") -> go.Figure:
    """Empirical CDFs of one latency metric, one line per label (mode); the SLO as a dashed line.
    ``tail=True`` draws the share of values *above* x on a log axis instead, where the rare long
    stalls that a CDF hides near 1.0 stand out (p99 is where the curve crosses 1%)."""
    unit = "gaps between tokens" if metric == "itl" else "requests"
    name = metric.upper() if metric in ("ttft", "tpot", "itl", "e2e", "queue") else metric
    f = _fig(widget, title=_subtitle(f"{name} distribution" + (" (tail)" if tail else ""), clock),
             xaxis_title=f"{name} (ms)" + (", log scale" if log_x else ""),
             yaxis_title=(f"share of {unit} longer than x (log)" if tail else f"fraction of {unit}"))
    if log_x:
        f.update_xaxes(type="log")
    if tail:
        f.update_yaxes(type="log", tickformat=".1~p")
    else:
        f.update_yaxes(range=[0, 1.02])
    colors = palette(values_by_label)
    for i, (label, v) in enumerate(values_by_label.items()):
        x, y = cdf_points(v)
        if tail:
            n = max(1, np.isfinite(np.asarray(v, dtype=float)).sum())
            y = np.maximum(1.0 - y, 0.5 / n)
        f.add_scatter(x=x * 1e3, y=y, mode="lines", name=label, line=dict(color=colors[label], width=2))
    if slo is not None:
        vline(f, slo * 1e3, f"{slo_text} {slo * 1e3:g} ms", log=log_x)
    return decade_ticks(f)


def percentile_bars(summaries: dict[str, dict], metric: str, widget: bool = False,
                    slo: float | None = None, clock: str | None = None, log_y: bool = False) -> go.Figure:
    """p50 / p90 / p99 of ``metric`` for each labelled summary (from ``RunResult.summary``)."""
    f = _fig(widget, title=_subtitle(f"{metric.upper()} percentiles", clock), barmode="group",
             yaxis_title="ms" + (" (log scale)" if log_y else ""))
    if log_y:
        f.update_yaxes(type="log")
    colors = palette(summaries)
    for i, (label, s) in enumerate(summaries.items()):
        st = s[f"{metric}_s"]
        y = [(st[p] or 0) * 1e3 for p in ("p50", "p90", "p99")]
        f.add_bar(x=["p50", "p90", "p99"], y=y, name=label, marker_color=colors[label],
                  text=[f"{v:.0f}" if v >= 10 else f"{v:.1f}" for v in y], textposition="outside")
    if slo is not None:
        hline(f, slo * 1e3, f"SLO {slo * 1e3:g} ms", log=log_y)
    return decade_ticks(f)


def metric_arrays(results: dict[str, object], metric: str) -> dict[str, np.ndarray]:
    return {k: per_request(r.sequences)[metric] for k, r in results.items()}


# ---- capacity and SLOs ---------------------------------------------------------------------------
def slo_curves(rates, summaries_by_label: dict[str, list[dict]], slos, per_gpu: dict[str, int] | None = None,
               goodputs: dict[str, float] | None = None, widget: bool = False, clock: str | None = None) -> go.Figure:
    """One panel per SLO: the SLO's metric (at its percentile) vs request rate, one line per
    label, the target as a dashed line. ``summaries_by_label[label][i]`` is the summary at
    ``rates[i]`` (computed with ``slos``); with ``per_gpu`` the x axis is requests/s per GPU.
    ``goodputs`` (per GPU when ``per_gpu``) are marked as dotted vertical lines."""
    slos = list(slos)
    base = make_subplots(rows=1, cols=len(slos), subplot_titles=[f"{s.metric.upper()} p{s.percentile:g}" for s in slos])
    f = _fig(widget, base, title=_subtitle("Latency under load vs the SLOs", clock), height=430,
             margin=dict(l=60, r=20, t=90, b=90), legend=dict(orientation="h", y=-0.22, x=0.5, xanchor="center",
                                                               yanchor="top"))
    rates = np.asarray(rates, dtype=float)
    colors = palette(summaries_by_label)
    for j, slo in enumerate(slos):
        for i, (label, sums) in enumerate(summaries_by_label.items()):
            x = rates / (per_gpu or {}).get(label, 1)
            y = []
            for s in sums:
                row = s["slo_attainment"]["slos"][j]
                y.append(row["value_s"] * 1e3 if row["value_s"] is not None else np.nan)
            f.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=label, legendgroup=label,
                                   showlegend=(j == 0), line=dict(color=colors[label])), row=1, col=j + 1)
            if goodputs and label in goodputs and goodputs[label] > 0:
                f.add_vline(x=goodputs[label], line_dash="dot", line_color=colors[label], row=1, col=j + 1)
        hline(f, slo.seconds * 1e3, f"SLO {slo.seconds * 1e3:g} ms", log=True, col=j + 1)
        f.update_yaxes(type="log", title_text="ms (log scale)" if j == 0 else None, row=1, col=j + 1)
        f.update_xaxes(title_text="requests/s" + (" per GPU" if per_gpu else ""), row=1, col=j + 1)
    return decade_ticks(f)


def goodput_bars(goodput_per_gpu: dict[str, float], widget: bool = False, clock: str | None = None,
                 slos=None) -> go.Figure:
    """Goodput per GPU (the highest rate at which every SLO holds, divided by GPUs) per label."""
    title = "Goodput per GPU" + (f" under {', '.join(map(str, slos))}" if slos else "")
    f = _fig(widget, title=_subtitle(title, clock), yaxis_title="requests/s per GPU meeting the SLOs")
    labels = list(goodput_per_gpu)
    y = [goodput_per_gpu[k] for k in labels]
    colors = palette(labels)
    f.add_bar(x=labels, y=y, marker_color=[colors[k] for k in labels],
              text=[f"{v:.2f}" for v in y], textposition="outside", showlegend=False)
    return f


def frontier(points: list[dict], slo_itl: float | None = None, slo_ttft: float | None = None,
             highlight: float | None = None, extra: dict[str, dict] | None = None, widget: bool = False,
             clock: str | None = None, ttft_q: str = "p90", itl_q: str = "p99.9") -> go.Figure:
    """The chunked-prefill trade-off: each point is one token budget, x = TTFT, y = ITL
    (``points``: dicts with ``chunk``, ``ttft``, ``itl`` in seconds). Small budgets sit
    bottom-right (smooth streams, slow first tokens), large ones top-left (fast first tokens,
    stalls). ``extra`` adds labelled reference points (e.g. aggregated); ``highlight`` circles
    one budget."""
    f = _fig(widget, title=_subtitle("TTFT vs ITL over token budgets", clock),
             xaxis_title=f"TTFT {ttft_q} (ms, log scale)", yaxis_title=f"ITL {itl_q} (ms, log scale)")
    f.update_xaxes(type="log")
    f.update_yaxes(type="log")
    pts = sorted(points, key=lambda p: p["chunk"])
    x = [p["ttft"] * 1e3 for p in pts]
    y = [p["itl"] * 1e3 for p in pts]
    f.add_scatter(x=x, y=y, mode="lines+markers+text", text=[f"{p['chunk']:g}" for p in pts],
                  textposition="middle right", marker=dict(size=9, color=MODE_COLORS["chunked"]),
                  line=dict(color=MODE_COLORS["chunked"]), name="chunked (label = token budget)")
    for i, (label, p) in enumerate((extra or {}).items()):
        f.add_scatter(x=[p["ttft"] * 1e3], y=[p["itl"] * 1e3], mode="markers+text", text=[label],
                      textposition="top center", marker=dict(size=12, symbol="x", color=color_for(label, i)),
                      name=label)
    hl = [p for p in pts if highlight is not None and p["chunk"] == highlight]
    f.add_scatter(x=[p["ttft"] * 1e3 for p in hl], y=[p["itl"] * 1e3 for p in hl], mode="markers",
                  marker=dict(size=20, color="rgba(0,0,0,0)", line=dict(color="black", width=2)),
                  name="current budget")
    if slo_itl is not None:
        hline(f, slo_itl * 1e3, f"ITL SLO {slo_itl * 1e3:g} ms", log=True)
    if slo_ttft is not None:
        vline(f, slo_ttft * 1e3, f"TTFT SLO {slo_ttft * 1e3:g} ms", log=True)
    return decade_ticks(f)


def sweep_lines(x, ys: dict[str, list], title: str, xaxis_title: str, yaxis_title: str,
                clock: str | None = None, log_x: bool = False, log_y: bool = False, hlines: dict | None = None,
                widget: bool = False) -> go.Figure:
    """Generic "metric vs knob" lines (one per label), e.g. stall length vs long-prompt size.
    ``hlines``: {label: y} reference lines (an SLO)."""
    f = _fig(widget, title=_subtitle(title, clock), xaxis_title=xaxis_title, yaxis_title=yaxis_title)
    if log_x:
        f.update_xaxes(type="log")
    if log_y:
        f.update_yaxes(type="log")
    colors = palette(ys)
    for label, y in ys.items():
        f.add_scatter(x=list(x), y=list(y), mode="lines+markers", name=label, line=dict(color=colors[label]))
    for label, y in (hlines or {}).items():
        hline(f, y, label, log=log_y)
    return decade_ticks(f)


def value_bars(values: dict[str, float], title: str, yaxis_title: str, clock: str | None = None,
               fmt: str = "{:.2f}", colors: dict[str, str] | None = None, widget: bool = False,
               hlines: dict | None = None, log_y: bool = False) -> go.Figure:
    """One bar per label with its value printed on it (a GPU's busy share, a pause per link)."""
    f = _fig(widget, title=_subtitle(title, clock), yaxis_title=yaxis_title)
    labels = list(values)
    y = [values[k] for k in labels]
    auto = palette(labels)
    f.add_bar(x=labels, y=y, marker_color=[(colors or {}).get(k, auto[k]) for k in labels],
              text=[fmt.format(v) for v in y], textposition="outside", showlegend=False)
    if log_y:
        f.update_yaxes(type="log")
    else:
        f.update_yaxes(range=[0, max(y + [1e-9]) * 1.2])
    for label, v in (hlines or {}).items():
        hline(f, v, label, log=log_y)
    return decade_ticks(f)
