"""Figures of ``pdlab diagnose`` and ``pdlab plan``.

    length_histograms  input and output length histograms (log-spaced bins)
    ttft_vs_prompt     TTFT against prompt length, queueing shown apart from the rest
    itl_around_long    ITL CDF of short streams inside vs outside long prefills
    symptom_bars       each table row's severity against its threshold (1.0)
    pareto             plan: throughput per GPU vs per-user token rate, the front, the winner
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .latency import cdf_points
from .style import DECODE, PALETTE, PREFILL, STALL, fig as _fig, hline, subtitle


def length_histograms(lengths: dict, clock: str | None = None, widget: bool = False) -> go.Figure:
    f = make_subplots(rows=1, cols=2, subplot_titles=("prompt (input) tokens", "answer (output) tokens"))
    for col, key, color in ((1, "input", PREFILL), (2, "output", DECODE)):
        h = lengths[key]["hist"]
        e = np.asarray(h["edges"], dtype=float)
        f.add_bar(x=np.sqrt(e[:-1] * e[1:]), y=h["counts"], width=np.diff(e), marker_color=color, name=key,
                  row=1, col=col)
        f.update_xaxes(type="log", title_text="tokens (log)", row=1, col=col)
    f.update_yaxes(title_text="requests", row=1, col=1)
    return _fig(widget, f, title=subtitle("Q1: length distributions", clock), showlegend=False, bargap=0)


def ttft_vs_prompt(obs, clock: str | None = None, widget: bool = False, max_points: int = 2000) -> go.Figure:
    ok = np.isfinite(obs.ttft)
    idx = np.flatnonzero(ok)[:max_points]
    f = _fig(widget, title=subtitle("TTFT vs prompt length (prefill queueing: TTFT grows, waiting dominates)",
                                    clock), xaxis_title="prompt tokens", yaxis_title="seconds (log)")
    f.add_scatter(x=obs.prompt_len[idx], y=obs.ttft[idx], mode="markers", name="TTFT",
                  marker=dict(color=PREFILL, size=5, opacity=0.6))
    if obs.queue is not None:
        f.add_scatter(x=obs.prompt_len[idx], y=np.maximum(obs.queue[idx], 1e-4), mode="markers",
                      name="of which queueing", marker=dict(color="#7f7f7f", size=4, opacity=0.5))
    f.update_yaxes(type="log")
    return f


def itl_around_long(obs, long_tokens: int, clock: str | None = None, widget: bool = False) -> go.Figure:
    """Short streams' gaps that overlap a long prompt's prefill vs all their other gaps."""
    from ..diagnose.evidence import _coverage
    f = _fig(widget, title=subtitle(f"Q5: ITL of other streams while a prompt >= {long_tokens} tokens prefills",
                                    clock), xaxis_title="inter-token gap, ms (log)", yaxis_title="share of gaps")
    if obs.itl_start is None or obs.prefill_start is None:
        return f
    is_long = obs.prompt_len >= long_tokens
    lo, hi = obs.prefill_start[is_long], obs.first_token[is_long]
    ok = np.isfinite(lo) & np.isfinite(hi)
    if not ok.any() or is_long.all():
        return f
    cover = _coverage(lo[ok], hi[ok])
    short = ~is_long[obs.itl_owner]
    g0, g = obs.itl_start[short], obs.itl[short]
    inside = cover(g0 + g) - cover(g0) > 1e-12
    for name, sel, color in (("during a long prefill", inside, STALL), ("otherwise", ~inside, DECODE)):
        x, y = cdf_points(g[sel] * 1e3)
        f.add_scatter(x=x, y=y, mode="lines", name=f"{name} ({int(sel.sum())} gaps)", line=dict(color=color))
    f.update_xaxes(type="log")
    return f


def symptom_bars(diagnosis: dict, clock: str | None = None, widget: bool = False) -> go.Figure:
    rows = diagnosis["rows"]
    names = [r["name"] for r in rows]
    sev = [r["severity"] for r in rows]
    colors = [STALL if r["fired"] else ("#bbbbbb" if r["fired"] is None else DECODE) for r in rows]
    text = ["fires" if r["fired"] else ("cannot tell" if r["fired"] is None else "quiet") for r in rows]
    f = _fig(widget, title=subtitle("The symptom table: severity (x its threshold; fires at 1)", clock),
             yaxis_title="severity (capped at 10)")
    f.add_bar(x=names, y=[max(s, 0.02) for s in sev], marker_color=colors, text=text, textposition="outside")
    hline(f, 1.0, "threshold")
    return f


def figures(rep: dict, obs) -> list[go.Figure]:
    ev, clock = rep["evidence"], rep["clock"]
    out = [symptom_bars(rep["diagnosis"], clock), length_histograms(ev["lengths"], clock),
           ttft_vs_prompt(obs, clock)]
    if obs.itl_start is not None:
        out.append(itl_around_long(obs, ev["long_prompts"]["long_threshold_tokens"], clock))
    return out


def pareto(plan: dict, widget: bool = False) -> go.Figure:
    """AIConfigurator's view: output tokens/s per GPU against tokens/s per user (1 / TPOT), one
    point per (configuration, rate) simulated; the front joined; SLO-meeting points filled."""
    f = _fig(widget, title=subtitle("Throughput per GPU vs per-user token rate (the Pareto front)", plan.get("clock")),
             xaxis_title="tokens/s per user (1 / mean TPOT)", yaxis_title="output tokens/s per GPU")
    pts = plan.get("points", [])
    modes = sorted({p["mode"] for p in pts})
    from .style import MODE_COLORS
    for i, m in enumerate(modes):
        sel = [p for p in pts if p["mode"] == m]
        c = MODE_COLORS.get(m, PALETTE[i % len(PALETTE)])
        f.add_scatter(x=[p["tok_s_per_user"] for p in sel], y=[p["tok_s_per_gpu"] for p in sel], mode="markers",
                      name=m, text=[p["label"] for p in sel],
                      marker=dict(color=c, size=7, symbol=["circle" if p["met"] else "circle-open" for p in sel]))
    front = plan.get("pareto", [])
    if front:
        f.add_scatter(x=[p["tok_s_per_user"] for p in front], y=[p["tok_s_per_gpu"] for p in front],
                      mode="lines", name="Pareto front", line=dict(color="#444", dash="dot"))
    b = plan.get("best")
    if b and b.get("at"):
        f.add_scatter(x=[b["at"]["tok_s_per_user"]], y=[b["at"]["tok_s_per_gpu"]], mode="markers", name="best",
                      marker=dict(symbol="star", size=16, color="#ffbf00", line=dict(color="#333", width=1)))
    return f
