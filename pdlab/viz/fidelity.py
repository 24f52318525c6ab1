"""Simulated against measured: CDF overlays of per-request latencies (``pdlab compare --html``,
lab 05's fitted-profile section).

    cdf_overlay   one panel per metric (TTFT, TPOT, E2E): the measured CDF solid, each simulated
                  one dashed, so where a profile is fast or slow (median, tail) shows at a glance
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .latency import cdf_points
from .style import LAYOUT, PALETTE, subtitle

MEASURED_COLOR = "#222222"


def cdf_overlay(measured: dict[str, np.ndarray], simulated: dict[str, dict[str, np.ndarray]],
                metrics=("ttft", "tpot", "e2e"), measured_label: str = "measured",
                clock: str | None = None, title: str = "simulated vs measured") -> go.Figure:
    """``measured``: {metric: seconds per request}; ``simulated``: {label: {metric: seconds}}.
    Non-finite values (one-token answers' TPOT, rejected requests) are left out of each CDF."""
    f = make_subplots(rows=1, cols=len(metrics), subplot_titles=[m.upper() for m in metrics],
                      horizontal_spacing=0.07)
    f.update_layout(**{**LAYOUT, "height": 380, "title": dict(LAYOUT["title"], text=subtitle(title, clock))})
    for col, m in enumerate(metrics, 1):
        x, y = cdf_points(measured[m])
        f.add_scatter(x=x * 1e3, y=y, mode="lines", name=measured_label, legendgroup=measured_label,
                      showlegend=col == 1, line=dict(color=MEASURED_COLOR, width=2.5), row=1, col=col)
        for i, (label, arrays) in enumerate(simulated.items()):
            x, y = cdf_points(arrays[m])
            f.add_scatter(x=x * 1e3, y=y, mode="lines", name=label, legendgroup=label, showlegend=col == 1,
                          line=dict(color=PALETTE[i % len(PALETTE)], width=2, dash="dash"), row=1, col=col)
        f.update_xaxes(title_text=f"{m.upper()} (ms, log)", type="log", row=1, col=col)
        f.update_yaxes(range=[0, 1.02], row=1, col=col)
    f.update_yaxes(title_text="fraction of requests", row=1, col=1)
    return f
