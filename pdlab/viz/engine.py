"""Figures for labs 00 and 01: the real engine's steps, prefill vs decode scaling, and the
roofline of a model on a GPU preset. Every figure says which clock its numbers come from:
"measured on <device>" (ModelExecutor) or "simulated (cost model: <model> on <gpu>)".

    step_times_figure     one bar per engine step of a single request: the prefill, then decodes
    phase_scaling_figure  measured step time vs prompt length (prefill) and vs decode batch size
    roofline_figure       attainable TFLOP/s vs arithmetic intensity for a GPU preset, with a
                          decode step and a prefill marked (``update_roofline`` moves them)
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..hardware import GpuSpec
from ..models import ModelSpec, arithmetic_intensity
from ..sim.costmodel import CostModel, ridge_point
from .style import DECODE, LAYOUT, PREFILL, decade_ticks


def _fig(widget: bool, fig: go.Figure) -> go.Figure:
    return go.FigureWidget(fig) if widget else fig


# ---- lab 00: one request, step by step --------------------------------------------------------
def step_times_figure(step_seconds, prompt_len: int, device: str, upto: int | None = None,
                      widget: bool = False) -> go.Figure:
    """Bars of measured step times (ms): step 0 is the prefill of ``prompt_len`` tokens, each
    later step one decode. ``upto`` shows only the first steps (a slider moves it)."""
    fig = go.Figure(layout={**LAYOUT, "title": f"One request, step by step (measured on {device})",
                            "xaxis_title": "engine step", "yaxis_title": "step time (ms)", "bargap": 0.15,
                            # the whole request's steps: a slider replaying it fills the axis in
                            "xaxis_range": [-0.6, len(step_seconds) - 0.4]})
    fig.add_bar(name=f"prefill ({prompt_len} tokens)", marker_color=PREFILL)
    fig.add_bar(name="decode (1 token each)", marker_color=DECODE)
    update_step_times(fig, step_seconds, upto)
    return _fig(widget, fig)


def update_step_times(fig, step_seconds, upto: int | None = None) -> None:
    ms = 1e3 * np.asarray(step_seconds, dtype=float)
    n = len(ms) if upto is None else max(1, min(int(upto), len(ms)))
    with fig.batch_update():
        fig.data[0].x, fig.data[0].y = [0], ms[:1].tolist()
        fig.data[1].x, fig.data[1].y = list(range(1, n)), ms[1:n].tolist()


# ---- lab 01: the two phases measured ----------------------------------------------------------
def phase_scaling_figure(prompt_lengths, prefill_s, batch_sizes, decode_s, device: str,
                         context: int | None = None) -> go.Figure:
    """Left: prefill step time vs prompt length. Right: decode step time vs batch size. Each
    with the time per token (dashed, right-hand scale is the same ms): prefill time grows with
    the tokens, decode time barely moves while the batch grows, so per-token cost falls."""
    ctx = f", context {context}" if context else ""
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "prefill: one prompt", f"decode: one token per sequence{ctx}"))
    pl, ps = np.asarray(prompt_lengths), 1e3 * np.asarray(prefill_s, dtype=float)
    bs, ds = np.asarray(batch_sizes), 1e3 * np.asarray(decode_s, dtype=float)
    fig.add_scatter(x=pl, y=ps, mode="lines+markers", name="prefill step", line_color=PREFILL, row=1, col=1)
    fig.add_scatter(x=pl, y=ps / pl, mode="lines+markers", name="prefill ms per token",
                    line=dict(color=PREFILL, dash="dash"), row=1, col=1)
    fig.add_scatter(x=bs, y=ds, mode="lines+markers", name="decode step", line_color=DECODE, row=1, col=2)
    fig.add_scatter(x=bs, y=ds / bs, mode="lines+markers", name="decode ms per token",
                    line=dict(color=DECODE, dash="dash"), row=1, col=2)
    fig.update_xaxes(type="log", title_text="prompt tokens", row=1, col=1)
    fig.update_xaxes(type="log", title_text="sequences in the decode batch", row=1, col=2)
    fig.update_yaxes(type="log", title_text="ms", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    # legend under the plots: on the right it covers the right-hand subplot's title in a notebook
    fig.update_layout(**{**LAYOUT, "height": 460, "margin": dict(l=60, r=20, t=80, b=110),
                         "legend": dict(orientation="h", yanchor="top", y=-0.22, x=0.5, xanchor="center"),
                         "title": f"Prefill vs decode, measured on {device} (tiny model, paged engine)"})
    return decade_ticks(fig)


def roofline_points(gpu: GpuSpec, model: ModelSpec, decode_batch: int, prefill_tokens: int,
                    context: int = 1024) -> list[dict]:
    """The linear layers of one decode step (``decode_batch`` tokens) and one prefill
    (``prefill_tokens``): arithmetic intensity, attainable TFLOP/s on ``gpu`` and the cost
    model's step time (default efficiencies: simulated)."""
    cm = CostModel(gpu, model)
    peak = gpu.tflops
    out = []
    for label, tokens, seconds in (
            (f"decode, batch {decode_batch}", decode_batch, cm.decode_time(decode_batch, context)),
            (f"prefill, {prefill_tokens} tokens", prefill_tokens, cm.prefill_time(prefill_tokens))):
        ai = arithmetic_intensity(model, tokens)
        out.append({"label": label, "tokens": tokens, "intensity": ai,
                    "attainable_tflops": min(peak, gpu.hbm_tbps * ai),
                    "bound": "memory" if ai < ridge_point(gpu) else "compute", "step_s": seconds})
    return out


def roofline_figure(gpu: GpuSpec, model: ModelSpec, decode_batch: int = 8, prefill_tokens: int = 1024,
                    widget: bool = False) -> go.Figure:
    fig = go.Figure(layout=dict(**LAYOUT, xaxis=dict(type="log", title="arithmetic intensity (FLOP per byte of weights)"),
                                yaxis=dict(type="log", title="attainable TFLOP/s")))
    fig.add_scatter(mode="lines", name="roof", line=dict(color="black"))
    fig.add_scatter(mode="markers+text", name="decode step", marker=dict(color=DECODE, size=13),
                    textposition="top center")
    fig.add_scatter(mode="markers+text", name="prefill", marker=dict(color=PREFILL, size=13),
                    textposition="bottom center")
    update_roofline(fig, gpu, model, decode_batch, prefill_tokens)
    return _fig(widget, fig)


def update_roofline(fig, gpu: GpuSpec, model: ModelSpec, decode_batch: int, prefill_tokens: int) -> list[dict]:
    """Redraw the roof for ``gpu`` and move both points; returns ``roofline_points``."""
    pts = roofline_points(gpu, model, decode_batch, prefill_tokens)
    ridge = ridge_point(gpu)
    x = np.logspace(0, 4, 60)
    with fig.batch_update():
        fig.data[0].x, fig.data[0].y = x, np.minimum(gpu.tflops, gpu.hbm_tbps * x)
        for trace, p in zip(fig.data[1:], pts):
            trace.x, trace.y = [p["intensity"]], [p["attainable_tflops"]]
            trace.text = [f"{p['label']}: {1e3 * p['step_s']:.2f} ms ({p['bound']}-bound)"]
        fig.layout.title = (f"Roofline of {model.name}'s linear layers on {gpu.name.upper()} "
                            f"(ridge {ridge:.0f} FLOP/B; times simulated by the cost model)")
    return pts


def engine_steps_figure(results: dict) -> go.Figure:
    """Measured decode step times of the real engine against the roofline (weights + K/V over
    the measured copy bandwidth) and the plain-torch peer, one line per context, from a
    ``bench/engine_steps.py`` results file."""
    rows = results["decode"]
    fig = go.Figure()
    for i, ctx in enumerate(sorted({r["context"] for r in rows})):
        pts = sorted((r for r in rows if r["context"] == ctx), key=lambda r: r["batch"])
        b = [r["batch"] for r in pts]
        dash = ("solid", "dot", "dash")[i % 3]
        fig.add_trace(go.Scatter(x=b, y=[r["step_ms"] for r in pts], mode="lines+markers", line=dict(color=DECODE, dash=dash),
                                 name=f"pdlab engine, context {ctx}"))
        fig.add_trace(go.Scatter(x=b, y=[r["roofline_ms"] for r in pts], mode="lines", line=dict(color="black", dash=dash),
                                 name=f"roofline, context {ctx}"))
        if all("peer_ms" in r for r in pts):
            fig.add_trace(go.Scatter(x=b, y=[r["peer_ms"] for r in pts], mode="markers", marker=dict(color="#7f7f7f", symbol="x"),
                                     name=f"plain-torch peer, context {ctx}"))
    fig.update_xaxes(title="decode batch (sequences)", type="log")
    fig.update_yaxes(title="step time (ms)", rangemode="tozero")
    fig.update_layout(**LAYOUT)
    fig.update_layout(title_text=f"Decode steps measured on an {results['gpu']} ({results['model']}): "
                                 f"roofline = (weights + K/V) / {results['copy_tbps']:.2f} TB/s copy")
    return fig
