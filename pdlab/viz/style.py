"""One look for every pdlab figure: the layout, the phase and mode colours, the clock label
each figure carries, SLO lines that work on log axes, and ``refresh`` (copy a figure into a live
widget in one front-end update)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

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


def fig(widget: bool, base: go.Figure | None = None, **layout) -> go.Figure:
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
    """Where a run's numbers come from, e.g. "simulated (cost model: llama-3-8b on h100)" or
    "measured (real engine: tiny on cpu, torch attention)": the label ``run_serving`` gave it."""
    if getattr(result, "clock", ""):
        return result.clock
    c = result.config
    return sim_label(c.model, c.gpu, getattr(c, "tp", 1))


def sim_label(model: str, gpu: str, tp: int = 1) -> str:
    tp_s = f" x tp{tp}" if tp > 1 else ""
    return f"simulated (cost model: {model} on {gpu}{tp_s})"


def decade_ticks(f: go.Figure) -> go.Figure:
    """Log axes whose data span a decade or more get a label at each power of ten and unlabelled
    minor ticks between them, instead of plotly's 2 and 5 labels crowding every decade."""
    spans: dict[str, tuple[float, float]] = {}
    for t in f.data:
        for ax in ("x", "y"):
            vals = getattr(t, ax, None)
            if vals is None:
                continue
            try:
                v = np.asarray(vals, dtype=float)
            except (TypeError, ValueError):        # categories
                continue
            v = v[np.isfinite(v) & (v > 0)]
            if v.size:
                key = ax + "axis" + (getattr(t, f"{ax}axis", None) or ax)[1:]
                lo, hi = spans.get(key, (np.inf, -np.inf))
                spans[key] = (min(lo, float(v.min())), max(hi, float(v.max())))
    for key, (lo, hi) in spans.items():
        axis = f.layout[key]
        if axis is None or axis.type != "log":
            continue
        if np.log10(hi / lo) >= 1.0:
            axis.update(tickmode="linear", tick0=0, dtick=1,
                        minor=dict(ticks="outside", ticklen=3, showgrid=True, gridcolor="#f3f3f3"))
        else:   # said explicitly, so that ``refresh`` of a widget undoes an earlier wide span
            axis.update(tickmode="auto", minor=dict(ticks="", showgrid=False))
    return f


def subtitle(title: str, clock: str | None) -> str:
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
