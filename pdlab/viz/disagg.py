"""Measured disaggregation next to the simulator's view of it (lab 06, section 5).

    transfer_times   KV transfer seconds vs prompt length: measured lines (solid), the simulator's
                     Link prediction (dashed)
    side_by_side     one metric per setup, a measured and a simulated bar each, both clocks named
"""

from __future__ import annotations

import plotly.graph_objects as go

from .style import fig as _fig, palette


def transfer_times(measured: dict[str, tuple[list, list]], predicted: dict[str, tuple[list, list]],
                   clock_measured: str, clock_predicted: str, widget: bool = False) -> go.Figure:
    """``measured`` / ``predicted``: label -> (prompt tokens, seconds). Log-log axes."""
    f = _fig(widget, title=f"KV transfer time per request<br><sub>solid: {clock_measured}; "
                           f"dashed: {clock_predicted}</sub>",
             xaxis_title="prompt tokens", yaxis_title="ms")
    colors = palette(list(measured) + [k for k in predicted if k not in measured])
    for label, (x, y) in measured.items():
        f.add_scatter(x=list(x), y=[1e3 * v for v in y], mode="lines+markers", name=f"{label} (measured)",
                      line=dict(color=colors[label]))
    for label, (x, y) in predicted.items():
        f.add_scatter(x=list(x), y=[1e3 * v for v in y], mode="lines", name=f"{label} (simulated Link)",
                      line=dict(color=colors[label], dash="dash"))
    f.update_xaxes(type="log")
    f.update_yaxes(type="log")
    return f


def side_by_side(measured: dict[str, float], simulated: dict[str, float], title: str, yaxis_title: str,
                 clock_measured: str, clock_simulated: str, scale: float = 1e3, widget: bool = False) -> go.Figure:
    """Grouped bars: for every setup (the keys of ``measured``) its measured and simulated value."""
    labels = list(measured)
    f = _fig(widget, title=f"{title}<br><sub>measured: {clock_measured}; simulated: {clock_simulated}</sub>",
             yaxis_title=yaxis_title, barmode="group")
    f.add_bar(x=labels, y=[scale * measured[k] for k in labels], name="measured", marker_color="#1f77b4",
              text=[f"{scale * measured[k]:.0f}" for k in labels], textposition="outside")
    f.add_bar(x=labels, y=[scale * simulated[k] if k in simulated else None for k in labels], name="simulated",
              marker_color="#aaaaaa", text=[f"{scale * simulated[k]:.0f}" if k in simulated else "" for k in labels],
              textposition="outside")
    return f
