"""What a run did, iteration by iteration and token by token.

    batch_timeline    per worker, every iteration as a bar split into prefill and decode tokens
    token_raster      per request, a mark at every emitted token: a stall is a gap (red)
    kv_occupancy      KV blocks in use over time, per worker (preemptions counted)
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..request import Status
from ..serving.events import StepLog
from .style import DECODE, PALETTE, PREFILL, STALL, clock_label, decade_ticks, fig as _fig, hline, subtitle as _subtitle


def _window(result, t_range):
    if t_range is None:
        return -np.inf, np.inf
    return t_range


# ---- what the scheduler did ------------------------------------------------------------------
def batch_timeline(result, max_steps: int = 400, widget: bool = False,
                   t_range: tuple[float, float] | None = None) -> go.Figure:
    """Per worker (one row each), every iteration as a bar from its start to its end. The bar's
    height is the tokens it ran (log scale): orange up to all its tokens, blue up to its decode
    tokens, so a pure decode iteration is all blue and a prefill-only one all orange. A wide
    orange bar with no blue around it is the moment every stream waits."""
    lo, hi = _window(result, t_range)
    c = StepLog(result.steps.window(lo, hi)[:max_steps]).columns()
    names = result.workers
    n_w = len(names)
    base = make_subplots(rows=n_w, cols=1, shared_xaxes=True, vertical_spacing=0.08 if n_w > 1 else 0.0,
                         subplot_titles=[f"{n} ({r})" for n, r in zip(names, result.roles)] if n_w > 1 else None)
    f = _fig(widget, base, title=_subtitle(f"Iterations ({result.config.mode})", clock_label(result)),
             barmode="overlay", bargap=0, height=max(320, 170 * n_w + 130))
    top = max(2.0, float((c.prefill_tokens + c.decode_tokens).max()) if c.start.size else 2.0)
    f.update_yaxes(title_text="tokens (log)", type="log", range=[0, np.log10(top) + 0.15])
    f.update_xaxes(title_text="time (s)", row=n_w, col=1)
    for w in range(n_w):
        m = c.worker == w
        start, end = c.start[m], c.end[m]
        mid, width = (start + end) / 2, np.maximum(end - start, 1e-9)
        total, dec = c.prefill_tokens[m] + c.decode_tokens[m], c.decode_tokens[m]
        f.add_trace(go.Bar(x=mid, y=total, width=width, marker_color=PREFILL, marker_line_width=0.3,
                           marker_line_color="white",
                           name="prefill tokens (bar = all tokens)", legendgroup="prefill", showlegend=(w == 0),
                           customdata=np.column_stack([c.prefill_tokens[m], dec, (end - start) * 1e3]),
                           hovertemplate="t=%{x:.3f}s: %{customdata[0]} prefill + %{customdata[1]} decode tokens,"
                                         " %{customdata[2]:.1f} ms<extra>" + names[w] + "</extra>"),
                    row=w + 1, col=1)
        f.add_trace(go.Bar(x=mid, y=dec, width=width, marker_color=DECODE, marker_line_width=0,
                           name="decode tokens", legendgroup="decode", showlegend=(w == 0), hoverinfo="skip"),
                    row=w + 1, col=1)
    if t_range is not None:
        f.update_xaxes(range=list(t_range))
    return decade_ticks(f)


def raster_points(result, max_requests: int = 60, t_range=None, stall_s: float | None = None):
    """(token x, token y, waiting-line x, waiting-line y) numpy arrays for the raster (NaN breaks
    lines). With ``stall_s``, also (stall x, stall y): the gaps longer than ``stall_s``."""
    seqs = [s for s in result.sequences if s.status is Status.FINISHED]
    if t_range is not None:
        lo, hi = t_range
        seqs = [s for s in seqs if s.token_times[-1] >= lo and s.request.arrival <= hi]
    seqs = seqs[:max_requests]
    nan = np.nan
    xs, ys, qx, qy, sx, sy = [np.zeros(0)], [np.zeros(0)], [], [], [np.zeros(0)], [np.zeros(0)]
    for row, s in enumerate(seqs):
        t = np.asarray(s.token_times)
        xs.append(t)
        ys.append(np.full(t.size, row))
        qx.extend((s.request.arrival, t[0], nan))
        qy.extend((row, row, nan))
        if stall_s is not None and t.size > 1:
            k = np.flatnonzero(np.diff(t) > stall_s)
            if k.size:
                sx.append(np.column_stack([t[k], t[k + 1], np.full(k.size, nan)]).ravel())
                sy.append(np.column_stack([np.full(k.size, row), np.full(k.size, row), np.full(k.size, nan)]).ravel())
    out = (np.concatenate(xs), np.concatenate(ys).astype(float), np.array(qx, dtype=float), np.array(qy, dtype=float))
    if stall_s is None:
        return out
    return (*out, np.concatenate(sx), np.concatenate(sy).astype(float))


def token_raster(result, max_requests: int = 60, t_range: tuple[float, float] | None = None,
                 widget: bool = False, stall_s: float | None = None) -> go.Figure:
    """One row per request, a mark at every emitted token: a stall is a horizontal gap (drawn
    red when longer than ``stall_s``), and a long prompt that freezes every stream shows as a
    vertical white band (shaded: iterations longer than ``stall_s`` that ran prefill tokens).
    Grey lines: waiting for the first token (queue + prefill)."""
    title = f"Token raster ({result.config.mode})"
    f = _fig(widget, title=_subtitle(title, clock_label(result)), xaxis_title="time (s)",
             yaxis_title="request (arrival order)")
    pts = raster_points(result, max_requests, t_range, stall_s if stall_s is not None else np.inf)
    xs, ys, qx, qy, sx, sy = pts
    f.add_scattergl(x=qx, y=qy, mode="lines", line=dict(color="#bbbbbb", width=1),
                    name="waiting for first token", connectgaps=False)
    f.add_scattergl(x=xs, y=ys, mode="markers", marker=dict(size=3, color="#2c3e50"), name="token")
    if stall_s is not None:
        f.add_scattergl(x=sx, y=sy, mode="lines", line=dict(color=STALL, width=3), connectgaps=False,
                        name=f"stall > {stall_s * 1e3:.0f} ms")
        lo, hi = _window(result, t_range)
        long_steps = [s for s in result.steps.window(lo, hi) if s.prefill_tokens > 0 and s.end - s.start > stall_s]
        for s in long_steps[:20]:
            f.add_vrect(x0=s.start, x1=s.end, fillcolor=PREFILL, opacity=0.15, line_width=0)
        if long_steps:
            f.add_annotation(x=long_steps[0].start, y=1.0, yref="y domain", xanchor="left", yanchor="bottom",
                             text=f"prefill of {long_steps[0].prefill_tokens} tokens", showarrow=False,
                             font=dict(color=PREFILL, size=11))
    if t_range is not None:
        f.update_xaxes(range=list(t_range))
    return f


def kv_occupancy(result, widget: bool = False, t_range: tuple[float, float] | None = None) -> go.Figure:
    """KV blocks in use after every iteration, per worker, as a share of the cache; a dashed
    line at 100%. Preempted sequences (KV dropped, recomputed later) are counted in the title."""
    pre = sum(s.num_preemptions for s in result.sequences)
    title = f"KV cache occupancy: {result.num_blocks} blocks x {result.config.block_size} tokens, {pre} preemptions"
    f = _fig(widget, title=_subtitle(title, clock_label(result)), xaxis_title="time (s)",
             yaxis_title="share of KV blocks used", yaxis_range=[0, 1.08], yaxis_tickformat=".0%")
    c = (result.steps.window(*t_range) if t_range is not None else result.steps).columns()
    for w, name in enumerate(result.workers):
        m = c.worker == w
        f.add_scattergl(x=c.end[m], y=c.kv_blocks_used[m] / result.num_blocks, mode="lines", name=name,
                        line=dict(color=PALETTE[w % len(PALETTE)] if len(result.workers) > 1 else DECODE))
    hline(f, 1.0, "cache full", color="#888")
    return f
