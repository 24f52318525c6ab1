"""Lab 07's runs and its dashboard: the Mooncake conversation trace on a few replicas behind each
router, cached so that a slider only reruns what changed.

    workload(name, n)        the first ``n`` requests of the shipped Mooncake trace at their own
                             timestamps ("mooncake"), or ``n`` turns of a session preset
    run(n, workload, **config)  one simulation (cached): ``ServingConfig`` fields on top of LAB07
    compare_routers(n)       label -> summary for round-robin, least-loaded, session and kv-aware
    RoutingDashboard         overlap-weight and load-weight sliders -> per-replica load + the sweep

Everything here is simulated by the cost model (Llama-3-8B on H100 unless changed).
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import ipywidgets as W

from .. import viz
from ..config import ServingConfig
from ..paths import TRACES
from ..run import run_serving, sim_clock
from ..sessions import make_sessions
from ..traces import read_trace
from .dashboards import Dashboard, _slider

LAB07 = ServingConfig(mode="chunked", model="llama-3-8b", gpu="h100", num_gpus=4, chunk_size=512, prefix_cache=True)
ROUTERS = ("round-robin", "least-loaded", "session", "kv-aware")


@lru_cache(maxsize=8)
def workload(name: str = "mooncake", n: int = 600, rate: float = 2.0) -> tuple:
    """``mooncake``: the trace's first ``n`` requests; a session preset: ``n`` turns of sessions
    starting at ``rate`` per second (seed 0)."""
    if name == "mooncake":
        reqs = read_trace(TRACES / "mooncake_conv.jsonl")[:n]
        t0 = reqs[0].arrival
        return tuple(replace(r, arrival=r.arrival - t0) for r in reqs)
    return tuple(make_sessions(n, rate, name, seed=0))


@lru_cache(maxsize=128)
def _run(name: str, n: int, items: tuple):
    cfg = replace(LAB07, **dict(items))
    s = run_serving(list(workload(name, n)), cfg).summary()
    s["clock"] = sim_clock(cfg)
    return s


def run(n: int = 600, workload: str = "mooncake", **config) -> dict:
    """The summary of ``workload`` (``n`` requests) served with ``LAB07`` + ``config``."""
    return _run(workload, int(n), tuple(sorted(config.items())))


def compare_routers(n: int = 600, workload: str = "mooncake", **config) -> dict:
    return {r: run(n, workload, router=r, **config) for r in ROUTERS}


def sweep_point(summary: dict, weight: float) -> dict:
    return {"overlap_weight": weight, "hit_rate": summary["prefix_hit_rate"], "ttft_p90": summary["ttft_s"]["p90"]}


class RoutingDashboard(Dashboard):
    """kv-aware routing on agent sessions (a shared system prompt, 8 turns each): drag the overlap
    weight (affinity) and the load weight; each move runs one simulation, adds its point to the
    sweep and redraws the replicas' load."""

    title = "kv-aware routing: overlap weight (affinity) against load weight"

    def __init__(self, n: int = 400, overlap_weight: float = 1.0, load_weight: float = 1.0, replicas: int = 4,
                 workload: str = "agent-sessions"):
        self.n, self.workload = n, workload
        self.points: dict[tuple, dict] = {}
        controls = {
            "overlap_weight": _slider(W.FloatSlider, "overlap weight", min=0.0, max=8.0, step=0.5, value=overlap_weight),
            "load_weight": _slider(W.FloatSlider, "load weight", min=0.0, max=2.0, step=0.25, value=load_weight),
            "replicas": _slider(W.IntSlider, "replicas", min=2, max=8, value=replicas),
        }
        super().__init__(controls, ["sweep", "load"])

    def summary(self):
        v = self.values
        return run(self.n, self.workload, router="kv-aware", overlap_weight=float(v["overlap_weight"]),
                   load_weight=float(v["load_weight"]), num_gpus=int(v["replicas"]))

    def figs(self):
        v = self.values
        s = self.summary()
        key = (float(v["load_weight"]), int(v["replicas"]))
        self.points[key + (float(v["overlap_weight"]),)] = sweep_point(s, float(v["overlap_weight"]))
        pts = [p for k, p in self.points.items() if k[:2] == key]
        return {"sweep": viz.prefix.weight_sweep(pts, current=float(v["overlap_weight"]), clock=s["clock"]),
                "load": viz.prefix.replica_load(s)}

    def status(self):
        s = self.summary()
        share = max(s["replica_load"]["requests"]) / max(1, sum(s["replica_load"]["requests"]))
        return (f"hit rate <b>{s['prefix_hit_rate']:.3f}</b> (unbounded cache {s['prefix_hit_rate_upper_bound']:.3f}) · "
                f"TTFT p50 <b>{s['ttft_s']['p50']:.2f} s</b>, p90 <b>{s['ttft_s']['p90']:.2f} s</b> · busiest replica "
                f"took {100 * share:.0f}% of requests · {self.n} requests, {s['clock']}")


def hot_spot(n: int = 400, rate: float = 40.0) -> tuple:
    """Every request starts with one popular 6144-token prefix (12 Mooncake-sized blocks), then
    512-1511 tokens of its own, ``rate`` per second: more prefill than one replica can do, so pure
    affinity, which sends everything to the replica holding the prefix, overloads it."""
    from ..request import Request
    return tuple(Request(i, i / rate, 6144 + 512 + (i * 37) % 1000, 150,
                         block_hashes=tuple(range(12)) + (10**6 + i, 2 * 10**6 + i), hash_block=512)
                 for i in range(n))


@lru_cache(maxsize=16)
def run_hot_spot(n: int = 400, rate: float = 40.0, **config) -> dict:
    cfg = replace(LAB07, **{"router": "kv-aware", **config})
    s = run_serving(list(hot_spot(n, rate)), cfg).summary()
    s["clock"] = sim_clock(cfg)
    return s
