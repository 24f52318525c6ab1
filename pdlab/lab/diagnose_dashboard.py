"""Lab 08's dashboard: a mystery trace served on a chosen deployment at a chosen rate, diagnosed
live. The slider moves the request rate; the symptom table's severities and the ITL around long
prompts redraw. Simulated by the cost model (every figure says which model and GPU)."""

from __future__ import annotations

import ipywidgets as W

from .. import viz
from ..config import ServingConfig
from ..diagnose import observe, report
from ..metrics import SLO
from ..viz import diagnosis as vd
from ..workload import with_rate
from .dashboards import Dashboard, _dropdown, _slider
from .mystery import TRACES


class DiagnoseDashboard(Dashboard):
    title = "Diagnose a mystery trace: rate, trace and serving shape -> the symptom table"

    def __init__(self, n: int = 150, rate: float = 4.0, model: str = "llama-3-8b", gpu: str = "h100",
                 slos=(SLO("ttft", 90, 0.5), SLO("tpot", 90, 0.05))):
        self.n, self.model, self.gpu, self.slos = n, model, gpu, list(slos)
        self.traces = {k: f(n, 1.0, seed=0) for k, f in TRACES.items()}
        self.report = None
        controls = {
            "rate": _slider(W.FloatSlider, "rate (req/s)", value=rate, min=0.5, max=16.0, step=0.5),
            "trace": _dropdown("trace", list(self.traces), "chat"),
            "mode": _dropdown("mode", ["aggregated", "chunked", "disaggregated"], "aggregated"),
        }
        super().__init__(controls, ["symptoms", "itl"])

    def figs(self):
        v = self.values
        cfg = ServingConfig(mode=v["mode"], model=self.model, gpu=self.gpu,
                            num_gpus=None if v["mode"] == "disaggregated" else 2)
        obs = observe.simulate(with_rate(self.traces[v["trace"]], v["rate"]), cfg)
        self.report = rep = report(obs, cfg, self.slos)
        clock = viz.sim_label(self.model, self.gpu) + f"; 2 GPUs, {v['rate']:g} req/s"
        return {"symptoms": vd.symptom_bars(rep["diagnosis"], clock),
                "itl": vd.itl_around_long(obs, rep["evidence"]["long_prompts"]["long_threshold_tokens"], clock)}

    def status(self) -> str:
        return f"<b>verdict:</b> {self.report['diagnosis']['verdict']}" if self.report else ""
