"""``pdlab demo``: the three serving modes on one workload, a table in the terminal and an
interactive HTML report. Everything here is simulated by the cost model (stated in the report)."""

from __future__ import annotations

import html
import sys
import time
from pathlib import Path

from .analysis import stall_window
from .config import ServingConfig
from .metrics import SLO
from .report import print_table
from .run import run_serving
from .workload import make_requests

MODEL, GPU, RATE, WORKLOAD = "llama-3-8b", "h100", 8.0, "sharegpt"
SLOS = [SLO("ttft", 90, 1.0), SLO("itl", 99, 0.1)]

SETUPS = {   # 2 GPUs each, so the comparison is per equal hardware
    "aggregated": ServingConfig(mode="aggregated", model=MODEL, gpu=GPU, num_gpus=2),
    "chunked": ServingConfig(mode="chunked", model=MODEL, gpu=GPU, num_gpus=2, chunk_size=512),
    "disaggregated": ServingConfig(mode="disaggregated", model=MODEL, gpu=GPU, prefill_gpus=1, decode_gpus=1),
}


def run_modes(num_requests: int = 600, rate: float = RATE, seed: int = 0):
    reqs = make_requests(num_requests, rate, WORKLOAD, seed=seed)
    return reqs, {mode: run_serving(reqs, cfg) for mode, cfg in SETUPS.items()}


def write_report(path: Path, reqs, results, summaries) -> None:
    from . import viz
    figs = []
    window = stall_window(results["aggregated"])
    itl = viz.metric_arrays(results, "itl")
    clock = viz.clock_label(results["aggregated"])
    figs.append(("Inter-token latency: every gap between two tokens of a stream (log axis: most gaps "
                 "are a few ms, the stalls hundreds)", viz.cdf(itl, "itl", slo=SLOS[1].seconds, log_x=True, clock=clock)))
    figs.append(("Inter-token latency, the tail: the share of gaps longer than x (p99 is where a curve "
                 "crosses 1%)", viz.cdf(itl, "itl", slo=SLOS[1].seconds, log_x=True, tail=True, clock=clock)))
    figs.append(("Time to first token", viz.cdf(viz.metric_arrays(results, "ttft"), "ttft", slo=SLOS[0].seconds, clock=clock)))
    figs.append(("ITL percentiles", viz.percentile_bars(summaries, "itl")))
    stall = SLOS[1].seconds
    for mode, r in results.items():
        f = viz.token_raster(r, max_requests=80, t_range=window, stall_s=stall)
        figs.append((f"Token raster, {mode}: around a long prompt's arrival (orange: an iteration "
                     f"with prefill longer than {stall * 1e3:g} ms; red: a gap over {stall * 1e3:g} ms)", f))
    for mode, r in results.items():
        figs.append((f"Iterations, {mode}: the rasters' window, {window[0]:.1f}-{window[1]:.1f} s",
                     viz.batch_timeline(r, max_steps=2000, t_range=window)))
    parts = []
    for i, (title, f) in enumerate(figs):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(f.to_html(full_html=False, include_plotlyjs=(i == 0)))
    rows = "".join(
        f"<tr><td>{m}</td><td>{s['gpus']}</td><td>{s['completed']}</td><td>{s['rejected']}</td>"
        f"<td>{s['ttft_s']['p50'] * 1e3:.0f}</td><td>{s['ttft_s']['p99'] * 1e3:.0f}</td>"
        f"<td>{s['tpot_s']['p50'] * 1e3:.1f}</td><td>{s['itl_s']['p99'] * 1e3:.1f}</td>"
        f"<td>{'yes' if s['slo_attainment']['all_met'] else 'no'}</td></tr>"
        for m, s in summaries.items())
    n_long = sum(r.prompt_len >= 4096 for r in reqs)
    mean_in = sum(r.prompt_len for r in reqs) / len(reqs)
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>pdlab demo</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}</style>
</head><body><h1>Prefill vs decode: three ways to serve the same traffic</h1>
<p><b>Simulated</b> with pdlab's roofline cost model: {MODEL} on {GPU.upper()} GPUs (datasheet numbers,
default efficiency factors, not a measurement). {len(reqs)} requests at {RATE:g} req/s (Poisson) with prompt
and answer lengths resampled from the ShareGPT trace (mean prompt {mean_in:.0f} tokens, {n_long} prompts of
4096+ tokens). Each mode gets 2 GPUs. SLOs: {', '.join(map(str, SLOS))}.</p>
<table><tr><th>mode</th><th>GPUs</th><th>done</th><th>rejected</th><th>TTFT p50 ms</th><th>TTFT p99 ms</th>
<th>TPOT p50 ms</th><th>ITL p99 ms</th><th>SLOs met</th></tr>{rows}</table>
<p>Aggregated serving prefills every new prompt in an iteration of its own, so a long prompt freezes every
running stream (the orange bands and red gaps in its raster, the long ITL tail). Chunked prefill caps each iteration's
tokens so decodes keep flowing. Disaggregation moves prefill to its own GPU and ships the KV cache over
NVLink, removing the stall at the price of a transfer and a split pool.</p>
{''.join(parts)}</body></html>"""
    path.write_text(doc)


def slo_verdict(summary: dict) -> str:
    """"meets ..." or "misses <the missed SLOs, each with its value>; meets <the others>"."""
    def name(r):
        return f"{r['metric'].upper()} p{r['percentile']:g} <= {_ms(r['target_s'])}"
    rows = summary["slo_attainment"]["slos"]
    missed = [f"{name(r)} (it is {'never reached' if r['value_s'] is None else _ms(r['value_s'])})"
              for r in rows if not r["met"]]
    met = [name(r) for r in rows if r["met"]]
    if not missed:
        return "meets " + ", ".join(met)
    return "misses " + ", ".join(missed) + ("; meets " + ", ".join(met) if met else "")


def _ms(seconds: float) -> str:
    return f"{seconds:g} s" if seconds >= 1 else f"{seconds * 1e3:.1f} ms".replace(".0 ms", " ms")


def run_demo(args) -> int:
    t = time.perf_counter()
    reqs, results = run_modes(args.num_requests)
    summaries = {m: r.summary(SLOS) for m, r in results.items()}
    print(f"pdlab demo: {len(reqs)} requests with ShareGPT lengths at {RATE:g} req/s; "
          f"simulated {MODEL} on {GPU.upper()} (cost model), 2 GPUs per mode\n")
    print_table(list(summaries.values()))
    print()
    for m, s in summaries.items():
        print(f"{m:>13}: {slo_verdict(s)}")
    out = Path(args.out)
    try:
        write_report(out, reqs, results, summaries)
    except OSError as e:
        print(f"pdlab: error: cannot write {out}: {e.strerror}", file=sys.stderr)
        return 2
    print(f"\nreport: {out.resolve()}  (open it in a browser)   [{time.perf_counter() - t:.1f} s]")
    return 0
