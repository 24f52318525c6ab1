"""Interactive dashboards for the labs: ipywidgets controls driving plotly ``FigureWidget``s.

Every dashboard is an object with ``controls`` (name -> widget), ``figures`` (name ->
``go.FigureWidget``) and ``widget`` (the box to display; a dashboard displays itself when it is
the last expression of a cell). A control change runs ``update()`` through ``observe``: the
simulator reruns, the figures are rebuilt by ``pdlab.viz`` and copied into the widgets inside
``fig.batch_update()`` (one front-end message). Tests set ``dash.controls["rate"].value`` and
assert that ``dash.figures[...].data`` changed; ``bench/widget_latency.py`` times exactly that.

    KVCacheDashboard      lab 03: KV blocks per worker, rate, model/GPU -> occupancy, preemptions
    InterferenceDashboard lab 04: rate, long-prompt length and share -> the token raster freezes
    ChunkedDashboard      lab 05: token budget, rate, ITL SLO -> timeline + TTFT/ITL frontier
    DisaggDashboard       lab 06: P:D split, link, rate, workload, SLOs -> all three modes

The simulations behind them (cached runs, sweeps, goodput searches) are in
``pdlab.lab.experiments``. Everything here is simulated by the cost model; every figure says so
and names the model and GPU.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go

from .. import viz
from ..analysis import max_gaps, stall_window
from ..config import ServingConfig
from ..errors import PdlabError
from ..metrics import SLO
from ..workload import PRESETS, make_requests
from .experiments import (CHUNKS, GPU_OPTIONS, LINK_OPTIONS, MODEL_OPTIONS, WORKLOADS, _Progress, _lengths,
                          goodput, point, simulate)


# ---- the dashboard base ---------------------------------------------------------------------------
def _slider(cls, description, **kw):
    kw.setdefault("continuous_update", False)
    return cls(description=description, style={"description_width": "initial"},
               layout=W.Layout(width="320px"), **kw)


def _dropdown(description, options, value):
    return W.Dropdown(description=description, options=options, value=value,
                      style={"description_width": "initial"}, layout=W.Layout(width="320px"))


class Dashboard:
    """Controls + figures + a status line; subclasses fill ``controls`` and implement ``figs()``
    (name -> freshly built ``go.Figure``) and optionally ``status()`` (a line of HTML)."""

    title = ""

    def __init__(self, controls: dict, figure_names: list[str]):
        self.controls = controls
        self.status_line = W.HTML()
        self.last_update_s = 0.0
        self.updates = 0
        self.figures: dict[str, go.FigureWidget] = {k: viz.empty_widget() for k in figure_names}
        self.update()
        for c in controls.values():
            c.observe(self._on_change, names="value")
        rows = [W.HBox(list(controls.values())[i:i + 3]) for i in range(0, len(controls), 3)]
        self.widget = W.VBox([W.HTML(f"<b>{self.title}</b>"), *rows, self.status_line,
                              *self.figures.values()])

    @property
    def values(self) -> dict:
        return {k: c.value for k, c in self.controls.items()}

    def _on_change(self, change) -> None:
        self.update()

    def update(self) -> None:
        t = time.perf_counter()
        try:
            with viz.bare():
                new = self.figs()
        except PdlabError as e:      # e.g. a model too big for the GPU: say so, keep the last figures
            self.status_line.value = f"<span style='color:#d62728'>cannot simulate this setup: {e}</span>"
        else:
            for k, f in new.items():
                viz.refresh(self.figures[k], f)
            self.status_line.value = self.status()
        self.last_update_s = time.perf_counter() - t
        self.updates += 1

    def figs(self) -> dict[str, go.Figure]:
        raise NotImplementedError

    def status(self) -> str:
        return ""

    def _repr_mimebundle_(self, **kw):
        if os.environ.get("PDLAB_STATIC"):      # scripts/labs_html.py: a picture instead of live widgets
            return {"text/html": self.static_html(), "text/plain": f"<{type(self).__name__}>"}
        return self.widget._repr_mimebundle_(**kw)

    def static_html(self) -> str:
        """The dashboard as HTML: its control values and its figures as PNG (needs kaleido)."""
        import base64
        import html as html_
        vals = " &middot; ".join(f"{html_.escape(c.description)} = <b>{html_.escape(str(c.value))}</b>"
                                 for c in self.controls.values())
        parts = [f"<p><b>{html_.escape(self.title)}</b> (interactive in JupyterLab; a snapshot here)<br>{vals}</p>",
                 f"<p>{self.status_line.value}</p>"]
        for f in self.figures.values():
            png = base64.b64encode(go.Figure(f).to_image(format="png", width=900)).decode()
            parts.append(f'<img src="data:image/png;base64,{png}" style="max-width:100%">')
        return "\n".join(parts)


def _ms(x):
    return "n/a" if x is None else f"{x * 1e3:.0f} ms"


# ---- lab 03 ----------------------------------------------------------------------------------------
class KVCacheDashboard(Dashboard):
    """A small KV cache under chat traffic: shrink it and watch occupancy hit 100%, the scheduler
    preempt (drop a sequence's KV, recompute it later) and streams stall."""

    title = "KV cache: capacity, occupancy and preemption"

    def __init__(self, n: int = 150, rate: float = 8.0, num_blocks: int = 1200, model: str = "llama-3-8b",
                 gpu: str = "h100", workload: str = "chat-long"):
        self.n, self.workload = n, workload
        super().__init__({
            "num_blocks": _slider(W.IntSlider, "KV blocks (16 tokens each)", value=num_blocks, min=300,
                                  max=6000, step=100),
            "rate": _slider(W.FloatSlider, "rate (req/s)", value=rate, min=1, max=20, step=1),
            "model": _dropdown("model", MODEL_OPTIONS, model),
            "gpu": _dropdown("GPU", GPU_OPTIONS, gpu),
        }, ["occupancy", "raster"])

    def run(self):
        v = self.values
        return simulate(self.workload, self.n, v["rate"], mode="chunked", chunk_size=512, model=v["model"],
                        gpu=v["gpu"], num_blocks=v["num_blocks"])

    def figs(self):
        r = self.run()
        self.result = r
        window = stall_window(r, span=4.0)
        return {"occupancy": viz.kv_occupancy(r),
                "raster": viz.token_raster(r, max_requests=60, t_range=window, stall_s=0.1)}

    def status(self):
        s = self.result.summary()
        return (f"{self.result.num_blocks * 16:,} KV tokens per GPU &middot; preemptions: <b>{s['preemptions']}</b> "
                f"&middot; TPOT p99 {_ms(s['tpot_s']['p99'])} &middot; ITL p99 {_ms(s['itl_s']['p99'])} "
                f"&middot; {viz.clock_label(self.result)}")


# ---- lab 04 ----------------------------------------------------------------------------------------
class InterferenceDashboard(Dashboard):
    """Streaming chats plus occasional long retrieval prompts on one GPU: move the long prompt's
    length and share and the rate; the raster shows every stream freezing (red) in aggregated mode."""

    title = "Interference: one long prompt among streaming chats"

    def __init__(self, n: int = 150, rate: float = 6.0, long_len: int = 8192, long_share: float = 0.05,
                 mode: str = "aggregated", model: str = "llama-3-8b", gpu: str = "h100", stall_s: float = 0.1):
        self.n, self.stall_s = n, stall_s
        super().__init__({
            "rate": _slider(W.FloatSlider, "rate (req/s)", value=rate, min=1, max=16, step=1),
            "long_len": _slider(W.SelectionSlider, "long prompt (tokens)", value=long_len,
                                options=[1024, 2048, 4096, 8192, 16384, 32768]),
            "long_share": _slider(W.FloatSlider, "long-prompt share", value=long_share, min=0.0, max=0.3,
                                  step=0.01),
            "mode": _dropdown("mode", ["aggregated", "chunked"], mode),
            "model": _dropdown("model", MODEL_OPTIONS, model),
            "gpu": _dropdown("GPU", GPU_OPTIONS, gpu),
        }, ["raster", "stalls"])

    def run(self, mode=None):
        v = self.values
        mode = mode or v["mode"]
        lens = replace(PRESETS["chat-long"], long_len=v["long_len"], long_share=v["long_share"])
        return simulate(lens, self.n, v["rate"], mode=mode, model=v["model"], gpu=v["gpu"],
                        **({"chunk_size": 512} if mode == "chunked" else {}))

    def figs(self):
        r = self.result = self.run()
        window = stall_window(r, span=3.0)
        gaps = max_gaps(r)
        self.frozen_share = float(np.mean(gaps > self.stall_s)) if gaps.size else 0.0
        stalls = viz.cdf({self.values["mode"]: gaps}, "longest gap per request", slo=self.stall_s,
                         clock=viz.clock_label(r), slo_text="freeze")
        return {"raster": viz.token_raster(r, max_requests=60, t_range=window, stall_s=self.stall_s),
                "stalls": stalls}

    def status(self):
        s = self.result.summary()
        return (f"<b>{self.frozen_share:.0%}</b> of streams froze for more than {self.stall_s * 1e3:.0f} ms "
                f"&middot; TTFT p99 {_ms(s['ttft_s']['p99'])} &middot; ITL p99 {_ms(s['itl_s']['p99'])} "
                f"&middot; {viz.clock_label(self.result)}")


# ---- lab 05 ----------------------------------------------------------------------------------------
class ChunkedDashboard(Dashboard):
    """The token budget: each move of the budget slider runs one chunked simulation and adds its
    (TTFT, ITL) point to the frontier; "sweep all budgets" fills the rest (progress bar)."""

    title = "Chunked prefill: the token budget"

    def __init__(self, n: int = 150, rate: float = 6.0, chunk: int = 512, itl_slo: float = 0.05,
                 model: str = "llama-3-8b", gpu: str = "h100", workload: str = "chat-long"):
        self.n, self.workload = n, workload
        self.points: dict[tuple, dict] = {}
        super().__init__({
            "chunk": _slider(W.SelectionSlider, "token budget", value=chunk, options=list(CHUNKS)),
            "rate": _slider(W.FloatSlider, "rate (req/s)", value=rate, min=1, max=16, step=1),
            "itl_slo": _slider(W.FloatSlider, "ITL p99.9 SLO (s)", value=itl_slo, min=0.01, max=0.3, step=0.005,
                               readout_format=".3f"),
            "model": _dropdown("model", MODEL_OPTIONS, model),
            "gpu": _dropdown("GPU", GPU_OPTIONS, gpu),
        }, ["timeline", "frontier"])
        self.sweep_button = W.Button(description="sweep all budgets", icon="play")
        self.sweep_out = W.Output()
        self.sweep_button.on_click(lambda _: self.sweep())
        self.widget.children = (*self.widget.children[:-2], W.HBox([self.sweep_button, self.sweep_out]),
                                *self.widget.children[-2:])

    def _key(self):
        v = self.values
        return (v["rate"], v["model"], v["gpu"])

    def run(self, chunk=None, mode="chunked"):
        v = self.values
        kw = {"chunk_size": chunk or v["chunk"]} if mode == "chunked" else {}
        return simulate(self.workload, self.n, v["rate"], mode=mode, model=v["model"], gpu=v["gpu"], **kw)

    def _point(self, chunk):
        key = (*self._key(), chunk)
        if key not in self.points:
            self.points[key] = point(self.run(chunk))
        return self.points[key]

    def sweep(self):
        with self.sweep_out:
            bar = _Progress(len(CHUNKS), "budget sweep")
            for c in CHUNKS:
                self._point(c)
                bar.step()
            bar.done()
        self.update()

    def figs(self):
        v = self.values
        r = self.result = self.run()
        self._point(v["chunk"])
        self.agg_point = point(self.run(mode="aggregated"))
        pts = [p for k, p in self.points.items() if k[:3] == self._key()]
        clock = viz.clock_label(r)
        window = stall_window(r, span=1.5)
        return {"timeline": viz.batch_timeline(r, max_steps=400, t_range=window),
                "frontier": viz.frontier(pts, slo_itl=v["itl_slo"], highlight=v["chunk"],
                                         extra={"aggregated": self.agg_point}, clock=clock)}

    def status(self):
        p = self._point(self.values["chunk"])
        ok = p["itl"] <= self.values["itl_slo"]
        return (f"budget {self.values['chunk']}: TTFT p90 {_ms(p['ttft'])}, ITL p99.9 {_ms(p['itl'])} "
                f"({'meets' if ok else '<b>misses</b>'} the ITL SLO) &middot; aggregated: TTFT p90 "
                f"{_ms(self.agg_point['ttft'])}, ITL p99.9 {_ms(self.agg_point['itl'])} &middot; "
                f"{viz.clock_label(self.result)}")


class PiggybackDashboard(Dashboard):
    """Cost-model step times of decodes alone, a prefill chunk alone and both together (no
    simulation: instant)."""

    title = "Piggybacking: decodes riding on a prefill chunk"

    def __init__(self, chunk: int = 512, decodes: int = 32, context: int = 1024, model: str = "llama-3-8b",
                 gpu: str = "h100"):
        super().__init__({
            "chunk": _slider(W.SelectionSlider, "chunk (prefill tokens)", value=chunk, options=list(CHUNKS)),
            "decodes": _slider(W.IntSlider, "decodes riding along", value=decodes, min=1, max=256),
            "context": _slider(W.SelectionSlider, "decode context (tokens)", value=context,
                               options=[256, 512, 1024, 2048, 4096, 8192, 16384]),
            "model": _dropdown("model", MODEL_OPTIONS, model),
            "gpu": _dropdown("GPU", GPU_OPTIONS, gpu),
        }, ["steps"])

    def figs(self):
        from ..sim import CostModel
        v = self.values
        self.cost_model = CostModel.from_names(v["gpu"], v["model"])
        self.times = viz.piggyback_times(self.cost_model, v["chunk"], v["decodes"], v["context"])
        return {"steps": viz.piggyback_bars(self.cost_model, v["chunk"], v["decodes"], v["context"])}

    def status(self):
        d, p, both = self.times.values()
        return (f"the decodes add {(both - p) * 1e3:.1f} ms to the chunk, against {d * 1e3:.1f} ms in a step of their "
                f"own &middot; {viz.sim_label(self.values['model'], self.values['gpu'])}")


# ---- lab 06 ----------------------------------------------------------------------------------------
PD_SPLITS = ["1:1", "1:2", "1:3", "2:1", "2:2", "3:1"]


class DisaggDashboard(Dashboard):
    """Aggregated, chunked and disaggregated serving on the same number of GPUs: the P:D split
    and the KV link only change the disaggregated run (the other two are remembered)."""

    title = "Disaggregation: prefill and decode pools"

    def __init__(self, n: int = 100, rate: float = 12.0, split: str = "1:1", link: str = "nvlink",
                 workload: str = "chat + long prompts (chat-long)", ttft_slo: float = 0.5, itl_slo: float = 0.05,
                 model: str = "llama-3-8b", gpu: str = "h100"):
        self.n = n
        super().__init__({
            "split": _dropdown("P:D split", PD_SPLITS, split),
            "link": _dropdown("KV link", LINK_OPTIONS, link),
            "rate": _slider(W.FloatSlider, "rate (req/s, total)", value=rate, min=1, max=40, step=1),
            "workload": _dropdown("workload", list(WORKLOADS), workload),
            "ttft_slo": _slider(W.FloatSlider, "TTFT p90 SLO (s)", value=ttft_slo, min=0.05, max=3.0, step=0.05),
            "itl_slo": _slider(W.FloatSlider, "ITL p99 SLO (s)", value=itl_slo, min=0.01, max=0.3, step=0.005,
                               readout_format=".3f"),
            "model": _dropdown("model", MODEL_OPTIONS, model),
            "gpu": _dropdown("GPU", GPU_OPTIONS, gpu),
        }, ["ttft", "itl"])
        self.goodput_button = W.Button(description="goodput per GPU", icon="play")
        self.goodput_out = W.Output()
        self.goodput_fig = viz.empty_widget()
        # hidden until the first search: an empty chart with default axes looks broken
        self.goodput_box = W.Box([self.goodput_fig], layout=W.Layout(display="none"))
        self.goodput_button.on_click(lambda _: self.find_goodput())
        self.widget.children = (*self.widget.children, W.HBox([self.goodput_button, self.goodput_out]),
                                self.goodput_box)

    @property
    def slos(self):
        v = self.values
        return [SLO("ttft", 90, v["ttft_slo"]), SLO("itl", 99, v["itl_slo"])]

    def configs(self) -> dict[str, dict]:
        v = self.values
        p, d = (int(x) for x in v["split"].split(":"))
        common = dict(model=v["model"], gpu=v["gpu"])
        return {"aggregated": dict(mode="aggregated", num_gpus=p + d, **common),
                "chunked": dict(mode="chunked", num_gpus=p + d, chunk_size=512, **common),
                "disaggregated": dict(mode="disaggregated", prefill_gpus=p, decode_gpus=d, link=v["link"], **common)}

    def runs(self, rate=None):
        v = self.values
        return {k: simulate(v["workload"], self.n, rate or v["rate"], **cfg) for k, cfg in self.configs().items()}

    def figs(self):
        self.results = self.runs()
        self.summaries = {k: r.summary(self.slos) for k, r in self.results.items()}
        r = self.results["disaggregated"]
        v = self.values
        clock = viz.clock_label(r) + f"; {r.config.gpus} GPUs per mode; {v['rate']:g} req/s"
        return {"ttft": viz.percentile_bars(self.summaries, "ttft", slo=v["ttft_slo"], clock=clock, log_y=True),
                "itl": viz.percentile_bars(self.summaries, "itl", slo=v["itl_slo"], clock=clock, log_y=True)}

    def status(self):
        parts = []
        for k, s in self.summaries.items():
            ok = s["slo_attainment"]["all_met"]
            parts.append(f"{k}: {'<b>meets</b>' if ok else 'misses'} the SLOs "
                         f"({s['slo_attainment']['requests_within']:.0%} of requests within)")
        r = self.results["disaggregated"]
        moved = r.kv_bytes_moved / 1e9
        return " &middot; ".join(parts) + f" &middot; KV moved: {moved:.1f} GB"

    def find_goodput(self) -> dict[str, float]:
        """Goodput per GPU of each mode under the current SLOs (a search: progress bar)."""
        v = self.values
        reqs = make_requests(max(self.n, 300), v["rate"], _lengths(v["workload"]))   # nearer steady state
        out = {}
        with self.goodput_out:
            for k, cfg in self.configs().items():
                c = ServingConfig(**cfg)
                out[k] = goodput(reqs, c, self.slos, start=v["rate"], label=k) / c.gpus
        viz.refresh(self.goodput_fig, viz.goodput_bars(out, clock=viz.clock_label(self.results["disaggregated"]),
                                                       slos=self.slos))
        self.goodput_box.layout.display = None
        self.goodputs = out
        return out
