"""Experiments the labs run, without widgets: cached simulations, sweeps over rates and token
budgets, goodput searches, and a progress bar that shows only inside a live notebook. The
exercise checks and the dashboards both build on these.

Everything here is simulated by the cost model; every result carries its clock label.
"""

from __future__ import annotations

import os
from dataclasses import replace
from functools import lru_cache

import numpy as np

from ..config import ServingConfig
from ..hardware import GPUS
from ..metrics import goodput_search, per_request
from ..models import MODELS
from ..run import run_serving
from ..workload import PRESETS, Lengths, make_requests, with_rate

GPU_OPTIONS = [g for g in GPUS if g != "cpu"]
MODEL_OPTIONS = [m for m in MODELS if m not in ("tiny", "llama-2-70b")]   # 70B needs tp > 1
LINK_OPTIONS = [("NVLink 4 (450 GB/s)", "nvlink"), ("PCIe 5 x16 (50 GB/s)", "pcie5"),
                ("InfiniBand NDR (50 GB/s)", "ib-ndr"), ("PCIe 4 x16 (25 GB/s)", "pcie4"),
                ("100 GbE (12.5 GB/s)", "eth-100g"), ("25 GbE (3.1 GB/s)", "eth-25g")]
CHUNKS = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
WORKLOADS = {   # lab 06: from "disaggregation wins" to "disaggregation loses"
    "chat + long prompts (chat-long)": "chat-long",
    "ShareGPT conversations": "sharegpt",
    "arXiv summarisation (long prompts)": "arxiv",
    "short prompts, long answers (64 in, 512 out)": Lengths("fixed", a=64, b=512),
}


# ---- workloads and cached runs ------------------------------------------------------------------
def chat_long(n: int = 200, rate: float = 6.0, long_len: int | None = None, long_share: float | None = None,
              seed: int = 0):
    """The interference mix (``PRESETS["chat-long"]``) with optional overrides."""
    base = PRESETS["chat-long"]
    lens = replace(base, long_len=int(long_len or base.long_len),
                   long_share=float(base.long_share if long_share is None else long_share))
    return make_requests(n, rate, lens, seed=seed)


def _lengths(workload):
    return WORKLOADS.get(workload, workload) if isinstance(workload, str) else workload


@lru_cache(maxsize=256)
def _cached(workload, n: int, rate: float, seed: int, cfg_items: tuple):
    reqs = make_requests(n, rate, _lengths(workload), seed=seed)
    return run_serving(reqs, ServingConfig(**dict(cfg_items)))


def simulate(workload="chat-long", n: int = 200, rate: float = 6.0, seed: int = 0, **config):
    """Run (and remember) one simulation: ``workload`` is a preset name, a ``WORKLOADS`` label or a
    ``Lengths``; ``config`` are ``ServingConfig`` fields. Same arguments, same cached result."""
    return _cached(workload, int(n), float(rate), int(seed), tuple(sorted(config.items())))


class _Progress:
    """An ipywidgets progress bar, shown only inside a live notebook (and only if ``show``)."""

    def __init__(self, total: int, description: str, show: bool = True):
        self.bar = None
        if show and _in_notebook() and not os.environ.get("PDLAB_STATIC"):
            import ipywidgets as W
            from IPython.display import display
            self.bar = W.IntProgress(value=0, min=0, max=total, description=description,
                                     style={"description_width": "initial"},
                                     layout=W.Layout(width="60%"))
            display(self.bar)

    def step(self):
        if self.bar is not None:
            self.bar.value += 1

    def done(self):
        if self.bar is not None:
            self.bar.bar_style = "success"


def progress(items, description: str = "sweep"):
    """Iterate over ``items`` with a progress bar in a notebook (for loops written in a lab)."""
    items = list(items)
    bar = _Progress(len(items), description)
    for x in items:
        yield x
        bar.step()
    bar.done()


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
        ip = get_ipython()
    except ImportError:
        return False
    return ip is not None and ip.__class__.__name__ == "ZMQInteractiveShell"


def sweep_rates(requests, rates, configs: dict[str, ServingConfig], slos, progress: bool = True) -> dict[str, list[dict]]:
    """For every label's config, the summary (with ``slos``) at every rate: the same requests
    re-timed by ``with_rate``. Shows a progress bar in a notebook."""
    bar = _Progress(len(rates) * len(configs), "rate sweep", progress)
    out = {k: [] for k in configs}
    for rate in rates:
        reqs = with_rate(requests, rate)
        for label, cfg in configs.items():
            out[label].append(run_serving(reqs, cfg).summary(slos))
            bar.step()
    bar.done()
    return out


def point(result, ttft_pct: float = 90, itl_pct: float = 99.9) -> dict:
    """(TTFT, ITL) of one run at the frontier's percentiles, seconds. ITL p99.9 by default: with a
    few long prompts among many chats, p99 misses the rare long freezes (count the gaps: try it)."""
    a = per_request(result.sequences)
    ttft, itl = a["ttft"][np.isfinite(a["ttft"])], a["itl"]
    return {"chunk": result.config.chunk_size,
            "ttft": float(np.percentile(ttft, ttft_pct)) if ttft.size else float("inf"),
            "itl": float(np.percentile(itl, itl_pct)) if itl.size else 0.0}


def sweep_chunks(requests, chunks=CHUNKS, progress: bool = True, ttft_pct: float = 90, itl_pct: float = 99.9,
                 **config) -> list[dict]:
    """One chunked run per token budget: ``[{"chunk", "ttft", "itl", "result"}]`` (TTFT at
    ``ttft_pct``, ITL at ``itl_pct``, seconds); ``config`` are other ``ServingConfig`` fields."""
    bar = _Progress(len(chunks), "budget sweep", progress)
    pts = []
    for c in chunks:
        r = run_serving(requests, ServingConfig(**{**config, "mode": "chunked", "chunk_size": c}))
        pts.append({**point(r, ttft_pct, itl_pct), "result": r})
        bar.step()
    bar.done()
    return pts


def goodput(requests, config: ServingConfig, slos, start: float = 4.0, progress: bool = True,
            label: str = "goodput") -> float:
    """Highest total rate (requests/s) at which every SLO holds for ``requests`` re-timed by
    ``with_rate``; divide by ``config.gpus`` for goodput per GPU."""
    bar = _Progress(14, label, progress)

    def meets(rate: float) -> bool:
        bar.step()
        return run_serving(with_rate(requests, rate), config).summary(slos)["slo_attainment"]["all_met"]

    g = goodput_search(meets, start=start, rel_tol=0.05, max_iter=12)
    bar.done()
    return g
