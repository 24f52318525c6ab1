"""Plotly figure builders. Every figure a lab or report shows is built here (and unit-tested);
notebooks only call these. Builders take a ``RunResult`` (or its summary) and return a
``go.Figure``; pass ``widget=True`` for a ``go.FigureWidget`` that sliders can update in place,
or build a fresh figure and copy it into a widget with ``refresh(widget, figure)``.

Figures and what they show:

    batch_timeline    per worker, every iteration as a bar split into prefill and decode tokens
    token_raster      per request, a mark at every emitted token: a stall is a gap (red)
    cdf               empirical CDFs of TTFT / TPOT / ITL, one line per label, SLO line
    percentile_bars   p50 / p90 / p99 of a metric per label, SLO line
    kv_occupancy      KV blocks in use over time, per worker (preemptions marked)
    slo_curves        an SLO metric vs request rate per label, the SLO line, goodput marked
    goodput_bars      goodput per GPU per label
    frontier          TTFT vs ITL over chunk sizes (the chunked-prefill trade-off)
    piggyback_bars    cost-model step time: decodes alone, a chunk alone, a chunk + decodes
    kv_capacity       how many sequences fit in the KV cache vs context length, per model

Every figure names its clock: "simulated (cost model: <model> on <gpu>)" or "measured on <device>".
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .metrics import per_request
from .request import Status

MODE_COLORS = {"aggregated": "#d62728", "chunked": "#1f77b4", "disaggregated": "#2ca02c"}
PALETTE = ["#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#ff7f0e"]
PREFILL, DECODE = "#ff7f0e", "#1f77b4"
STALL = "#d62728"
# legend right of the plot: above it, it collides with the two-line title in narrow outputs
LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=70, b=50), height=400,
              legend=dict(orientation="v", yanchor="top", y=1.0, xanchor="left", x=1.02),
              title=dict(font=dict(size=15)))


_BARE = [False]


class bare:
    """Inside ``with viz.bare():`` builders skip the template (a deep copy that costs tens of
    ms per figure): for figures that are only copied into a widget which already has it."""

    def __enter__(self):
        self._prev, _BARE[0] = _BARE[0], True

    def __exit__(self, *exc):
        _BARE[0] = self._prev


def _fig(widget: bool, base: go.Figure | None = None, **layout) -> go.Figure:
    if base is None:
        base = go.Figure(layout={"template": {}}) if _BARE[0] else None   # skip the default template too
    f = (go.FigureWidget(base) if base is not None else go.FigureWidget()) if widget else \
        (base if base is not None else go.Figure())
    lay = {**LAYOUT, **layout}
    if _BARE[0]:
        lay.pop("template")
    f.update_layout(**lay)
    return f


def empty_widget() -> go.FigureWidget:
    """A FigureWidget with pdlab's template, ready for ``refresh``."""
    return go.FigureWidget(layout=dict(template=LAYOUT["template"]))


MODE_SHADES = {"aggregated": ["#d62728", "#ff9896", "#8c1c1c"], "chunked": ["#1f77b4", "#9ecae1", "#0b3d66"],
               "disaggregated": ["#2ca02c", "#98df8a", "#14601a"]}


def color_for(label: str, i: int = 0) -> str:
    return MODE_COLORS.get(str(label).split(" ")[0], PALETTE[i % len(PALETTE)])


def palette(labels) -> dict[str, str]:
    """A colour per label: a mode's colour for labels that start with the mode's name (a lighter or
    darker shade for its second and third variant, e.g. "disaggregated 2:1" and "1:2"), a
    neutral palette otherwise."""
    out, seen = {}, {}
    for i, label in enumerate(labels):
        mode = str(label).split(" ")[0]
        if mode in MODE_SHADES:
            k = seen.get(mode, 0)
            seen[mode] = k + 1
            out[label] = MODE_SHADES[mode][k % 3]
        else:
            out[label] = PALETTE[i % len(PALETTE)]
    return out


def clock_label(result) -> str:
    """Where the numbers come from, e.g. "simulated (cost model: llama-3-8b on h100)"."""
    c = result.config
    tp = f" x tp{c.tp}" if getattr(c, "tp", 1) > 1 else ""
    return f"simulated (cost model: {c.model} on {c.gpu}{tp})"


def sim_label(model: str, gpu: str, tp: int = 1) -> str:
    tp_s = f" x tp{tp}" if tp > 1 else ""
    return f"simulated (cost model: {model} on {gpu}{tp_s})"


def _subtitle(title: str, clock: str | None) -> str:
    return f"{title}<br><sup>{clock}</sup>" if clock else title


def refresh(target: go.FigureWidget, new: go.Figure) -> None:
    """Copy ``new`` into the widget ``target`` in one front-end update: traces are updated in
    place when their number and types match (cheap, no flicker), replaced otherwise."""
    with target.batch_update():
        same = len(target.data) == len(new.data) and all(
            a.type == b.type for a, b in zip(target.data, new.data))
        if same:
            for a, b in zip(target.data, new.data):
                a.update(b.to_plotly_json(), overwrite=True)
        else:
            target.data = ()
            target.add_traces(list(new.data))
        lay = new.layout.to_plotly_json()
        lay.pop("template", None)      # set once (``empty_widget``); costly to copy every time
        target.layout.shapes = lay.pop("shapes", ())
        target.layout.annotations = lay.pop("annotations", ())
        target.layout.update(lay)


def _axis_suffix(col: int | None) -> str:
    return "" if not col or col == 1 else str(col)


def hline(f: go.Figure, y: float, text: str, log: bool = False, col: int | None = None,
          color: str = "#444", dash: str = "dash") -> None:
    """A labelled horizontal line (an SLO, a capacity) that also works on log axes, where plotly
    places annotations at log10 of the value."""
    kw = dict(row=1, col=col) if col else {}
    f.add_hline(y=y, line_dash=dash, line_color=color, **kw)
    sfx = _axis_suffix(col)
    f.add_annotation(x=0.01, xref=f"x{sfx} domain", xanchor="left", y=float(np.log10(y)) if log else y,
                     yref=f"y{sfx}", yanchor="bottom", text=text, showarrow=False, font=dict(color=color, size=11))


def vline(f: go.Figure, x: float, text: str, log: bool = False, color: str = "#444", dash: str = "dash") -> None:
    """A labelled vertical line that also works on a log x axis."""
    f.add_vline(x=x, line_dash=dash, line_color=color)
    f.add_annotation(x=float(np.log10(x)) if log else x, xref="x", xanchor="left", y=0.02, yref="y domain",
                     yanchor="bottom", text=text, showarrow=False, font=dict(color=color, size=11))


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
    steps = [s for s in result.steps if s[2] >= lo and s[1] <= hi][:max_steps]
    names = result.workers
    n_w = len(names)
    base = make_subplots(rows=n_w, cols=1, shared_xaxes=True, vertical_spacing=0.08 if n_w > 1 else 0.0,
                         subplot_titles=[f"{n} ({r})" for n, r in zip(names, result.roles)] if n_w > 1 else None)
    f = _fig(widget, base, title=_subtitle(f"Iterations ({result.config.mode})", clock_label(result)),
             barmode="overlay", bargap=0, height=max(320, 170 * n_w + 130))
    arr = np.array([s[:5] for s in steps], dtype=float).reshape(-1, 5)
    top = max(2.0, float((arr[:, 3] + arr[:, 4]).max()) if arr.size else 2.0)
    f.update_yaxes(title_text="tokens (log)", type="log", range=[0, np.log10(top) + 0.15])
    f.update_xaxes(title_text="time (s)", row=n_w, col=1)
    for w in range(n_w):
        m = arr[:, 0] == w
        start, end = arr[m, 1], arr[m, 2]
        mid, width = (start + end) / 2, np.maximum(end - start, 1e-9)
        total, dec = arr[m, 3] + arr[m, 4], arr[m, 4]
        f.add_trace(go.Bar(x=mid, y=total, width=width, marker_color=PREFILL, marker_line_width=0.3,
                           marker_line_color="white",
                           name="prefill tokens (bar = all tokens)", legendgroup="prefill", showlegend=(w == 0),
                           customdata=np.column_stack([arr[m, 3], dec, (end - start) * 1e3]),
                           hovertemplate="t=%{x:.3f}s: %{customdata[0]} prefill + %{customdata[1]} decode tokens,"
                                         " %{customdata[2]:.1f} ms<extra>" + names[w] + "</extra>"),
                    row=w + 1, col=1)
        f.add_trace(go.Bar(x=mid, y=dec, width=width, marker_color=DECODE, marker_line_width=0,
                           name="decode tokens", legendgroup="decode", showlegend=(w == 0), hoverinfo="skip"),
                    row=w + 1, col=1)
    if t_range is not None:
        f.update_xaxes(range=list(t_range))
    return f


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
        long_steps = [s for s in result.steps if s[3] > 0 and s[2] - s[1] > stall_s and s[2] >= lo and s[1] <= hi]
        for s in long_steps[:20]:
            f.add_vrect(x0=s[1], x1=s[2], fillcolor=PREFILL, opacity=0.15, line_width=0)
        if long_steps:
            f.add_annotation(x=long_steps[0][1], y=1.0, yref="y domain", xanchor="left", yanchor="bottom",
                             text=f"prefill of {long_steps[0][3]} tokens", showarrow=False,
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
    arr = np.array(result.steps, dtype=float).reshape(-1, 6)
    if t_range is not None:
        arr = arr[(arr[:, 2] >= t_range[0]) & (arr[:, 1] <= t_range[1])]
    for w, name in enumerate(result.workers):
        m = arr[:, 0] == w
        f.add_scattergl(x=arr[m, 2], y=arr[m, 5] / result.num_blocks, mode="lines", name=name,
                        line=dict(color=PALETTE[w % len(PALETTE)] if len(result.workers) > 1 else DECODE))
    hline(f, 1.0, "cache full", color="#888")
    return f


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
        f.update_yaxes(type="log", tickformat=".2~%")
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
    return f


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
    return f


def metric_arrays(results: dict[str, object], metric: str) -> dict[str, np.ndarray]:
    return {k: per_request(r.sequences)[metric] for k, r in results.items()}


def max_gaps(result) -> np.ndarray:
    """Per finished request, its longest gap between two tokens (0 for one-token answers):
    the moment its stream froze longest."""
    out = []
    for s in result.sequences:
        if s.status is Status.FINISHED:
            t = s.token_times
            out.append(float(np.max(np.diff(t))) if len(t) > 1 else 0.0)
    return np.array(out)


def stall_window(result, span: float = 3.0, min_prompt: int | None = None) -> tuple[float, float]:
    """A ``span``-second window around the arrival of the longest prompt that arrived mid-run
    (where a stall is easiest to see)."""
    seqs = [s for s in result.sequences if s.token_times]
    if not seqs:
        return (0.0, span)
    mid = seqs[len(seqs) // 4: 3 * len(seqs) // 4] or seqs
    s = max(mid, key=lambda q: (q.prompt_len, -abs(q.request.arrival - mid[len(mid) // 2].request.arrival)))
    t = s.request.arrival
    return (t - span / 3, t + span * 2 / 3)


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
    return f


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
    return f


def piggyback_bars(cost_model, chunk: int = 512, decodes: int = 32, context: int = 1024,
                   widget: bool = False) -> go.Figure:
    """Cost-model step times: ``decodes`` decodes alone, a ``chunk``-token prefill alone, and the
    chunk with the decodes riding along. The last bar is barely taller than the second: decodes
    piggybacked on a compute-bound chunk are nearly free."""
    rows = piggyback_times(cost_model, chunk, decodes, context)
    f = _fig(widget, title=_subtitle(f"Piggybacking: {decodes} decodes on a {chunk}-token chunk",
                                     sim_label(cost_model.model.name, cost_model.gpu.name, cost_model.tp)),
             yaxis_title="step time (ms)")
    labels = list(rows)
    y = [rows[k] * 1e3 for k in labels]
    f.add_bar(x=labels, y=y, marker_color=[DECODE, PREFILL, "#8c564b"], text=[f"{v:.1f} ms" for v in y],
              textposition="outside", showlegend=False)
    f.update_yaxes(range=[0, max(y) * 1.2])
    return f


def piggyback_times(cost_model, chunk: int = 512, decodes: int = 32, context: int = 1024) -> dict[str, float]:
    """Seconds of the three steps ``piggyback_bars`` draws (computed with ``CostModel.time_for``)."""
    cm = cost_model
    pairs = chunk * (chunk + 1) // 2
    alone_d = cm.time_for(decodes, decodes, decodes, decode_ctx=decodes * context)
    alone_p = cm.time_for(chunk, 1, 1, pairs, chunk, chunk, 0)
    both = cm.time_for(chunk + decodes, 1 + decodes, 1 + decodes, pairs, chunk, chunk, decodes * context)
    return {f"{decodes} decodes": alone_d, f"{chunk} prefill": alone_p,
            f"{chunk} prefill + {decodes} decodes": both}


def kv_capacity(cost_models: dict[str, object], contexts=(512, 1024, 2048, 4096, 8192, 16384, 32768),
                widget: bool = False, max_num_seqs: int | None = None) -> go.Figure:
    """How many sequences of a given context length fit in the KV cache (the cap on the decode
    batch), one line per label (a ``CostModel`` each)."""
    f = _fig(widget, title="How memory caps the decode batch", xaxis_title="context length (tokens), log scale",
             yaxis_title="sequences that fit in the KV cache (log scale)")
    f.update_xaxes(type="log")
    f.update_yaxes(type="log")
    ctx = np.asarray(contexts, dtype=float)
    for i, (label, cm) in enumerate(cost_models.items()):
        cap = cm.kv_capacity_tokens()
        f.add_scatter(x=ctx, y=np.maximum(np.floor(cap / ctx), 0.5), mode="lines+markers",
                      name=f"{label} ({cap / 1e3:.0f}k tokens)", line=dict(color=PALETTE[i % len(PALETTE)]))
    if max_num_seqs:
        hline(f, max_num_seqs, f"max_num_seqs = {max_num_seqs} (the scheduler's own cap)", log=True, dash="dot")
    return f


def decode_throughput(cost_model, context: int = 2048, max_batch: int = 512, widget: bool = False) -> go.Figure:
    """Decode tokens/s and step time vs batch size for sequences of ``context`` tokens, with the
    batch the KV cache can hold marked: past it, more throughput needs more memory, not more
    compute."""
    cm = cost_model
    cap = cm.kv_capacity_tokens() // context
    b = np.unique(np.geomspace(1, max_batch, 40).astype(int))
    step = np.array([cm.decode_time(int(x), context) for x in b])
    base = make_subplots(specs=[[{"secondary_y": True}]])
    f = _fig(widget, base, title=_subtitle(f"Decode: bigger batches, more tokens/s ({context}-token contexts)",
                                           sim_label(cm.model.name, cm.gpu.name, cm.tp)),
             xaxis_title="decode batch (sequences), log scale")
    f.update_xaxes(type="log")
    f.add_trace(go.Scatter(x=b, y=b / step, mode="lines", name="tokens/s", line=dict(color=DECODE, width=3)),
                secondary_y=False)
    f.add_trace(go.Scatter(x=b, y=step * 1e3, mode="lines", name="step time (ms) = ITL",
                           line=dict(color="#7f7f7f", dash="dot")), secondary_y=True)
    f.update_yaxes(title_text="decode tokens/s", secondary_y=False, rangemode="tozero")
    f.update_yaxes(title_text="step time (ms)", secondary_y=True, rangemode="tozero", showgrid=False)
    if 1 <= cap <= max_batch:
        vline(f, cap, f"KV cache full: {cap} sequences", log=True, color=STALL)
    return f


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
    return f


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
    return f


def busy_share(result) -> dict[str, float]:
    """Per worker, the share of the run's wall time it spent running iterations."""
    arr = np.array(result.steps, dtype=float).reshape(-1, 6)
    if not arr.size:
        return {w: 0.0 for w in result.workers}
    dur = max(arr[:, 2].max() - arr[:, 1].min(), 1e-12)
    return {w: float((arr[arr[:, 0] == i, 2] - arr[arr[:, 0] == i, 1]).sum() / dur)
            for i, w in enumerate(result.workers)}


def first_gaps(result) -> np.ndarray:
    """Per finished request with 2+ tokens, the pause between its first and second token. In
    disaggregated serving the KV transfer sits exactly here (TTFT does not see it)."""
    return np.array([s.token_times[1] - s.token_times[0] for s in result.sequences
                     if s.status is Status.FINISHED and len(s.token_times) > 1])
