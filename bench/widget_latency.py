"""Latency from a control change to updated figures, for every lab dashboard's default scenario.

A benchmark, not a test. Each sample sets one control's ``value`` (what a slider release does
through ipywidgets) and times until ``observe`` has rerun the simulator, rebuilt the figures and
copied them into the ``FigureWidget``s (Python side: the message to the browser is queued, the
browser's redraw is not included). Controls are cycled through values not seen before in the
run, so the simulator cache does not flatter the numbers; the first visit to a value is what a
learner waits for.

    python bench/widget_latency.py                     # prints a table, writes the JSON below
    python bench/widget_latency.py --out results/x.json --repeats 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import ipywidgets as W
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pdlab.lab import dashboards as pw, experiments as ex  # noqa: E402
from pdlab.lab.env import cpu_name  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "widget-latency-cpu-2026-11-29.json"

# the controls a learner moves, in the default scenario of each lab (values cycled in order)
PLAN = {
    "03 KVCacheDashboard": (pw.KVCacheDashboard, {
        "num_blocks": [1000, 800, 600, 500, 1500, 2500], "rate": [6.0, 10.0, 12.0, 4.0]}),
    "04 InterferenceDashboard": (pw.InterferenceDashboard, {
        "rate": [4.0, 8.0, 10.0, 3.0], "long_len": [4096, 16384, 2048, 32768],
        "long_share": [0.1, 0.02, 0.15, 0.2], "mode": ["chunked", "aggregated"]}),
    "05 ChunkedDashboard": (pw.ChunkedDashboard, {
        "chunk": [256, 1024, 2048, 128, 4096], "rate": [4.0, 8.0, 3.0], "itl_slo": [0.03, 0.08, 0.1]}),
    "05 PiggybackDashboard": (pw.PiggybackDashboard, {
        "chunk": [1024, 256, 2048], "decodes": [64, 128, 8], "context": [4096, 512, 8192]}),
    "06 DisaggDashboard": (pw.DisaggDashboard, {
        "split": ["2:1", "1:2", "3:1"], "link": ["pcie4", "eth-25g", "ib-ndr"], "rate": [8.0, 16.0, 20.0],
        "ttft_slo": [0.3, 1.0], "itl_slo": [0.03, 0.1]}),
}


def measure(repeats: int = 1) -> dict:
    rows, all_ms = [], []
    for label, (cls, plan) in PLAN.items():
        for rep in range(repeats):
            ex._cached.cache_clear()
            t = time.perf_counter()
            dash = cls()                      # the default scenario, as the lab builds it
            build_ms = (time.perf_counter() - t) * 1e3
            for name, values in plan.items():
                ctrl = dash.controls[name]
                assert not isinstance(ctrl, W.FloatSlider) or ctrl.continuous_update is False
                for v in values:
                    t = time.perf_counter()
                    ctrl.value = v
                    ms = (time.perf_counter() - t) * 1e3
                    rows.append({"dashboard": label, "control": name, "value": v, "ms": round(ms, 2),
                                 "repeat": rep})
                    all_ms.append(ms)
            rows.append({"dashboard": label, "control": "(build)", "value": None, "ms": round(build_ms, 1),
                         "repeat": rep})
    per_dash = {}
    for label in PLAN:
        ms = [r["ms"] for r in rows if r["dashboard"] == label and r["control"] != "(build)"]
        per_dash[label] = {"n": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 1),
                           "p95_ms": round(float(np.percentile(ms, 95)), 1), "max_ms": round(max(ms), 1)}
    return {
        "what": "latency from a dashboard control change to updated FigureWidgets (Python side), "
                "simulated workloads, fresh values (simulator cache cleared per dashboard)",
        "measured_on": f"{cpu_name()}, {os.cpu_count()} cores visible "
                       f"(shared with other work), Python {platform.python_version()}",
        "date": dt.date.today().isoformat(),
        "target_p95_ms": 150,
        "overall": {"n": len(all_ms), "p50_ms": round(float(np.percentile(all_ms, 50)), 1),
                    "p95_ms": round(float(np.percentile(all_ms, 95)), 1),
                    "mean_ms": round(statistics.fmean(all_ms), 1), "max_ms": round(max(all_ms), 1)},
        "per_dashboard": per_dash,
        "samples": rows,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    res = measure(args.repeats)
    for label, s in res["per_dashboard"].items():
        print(f"{label:>26}: p50 {s['p50_ms']:6.1f} ms  p95 {s['p95_ms']:6.1f} ms  max {s['max_ms']:6.1f} ms  (n={s['n']})")
    o = res["overall"]
    print(f"{'overall':>26}: p50 {o['p50_ms']:6.1f} ms  p95 {o['p95_ms']:6.1f} ms  (target p95 < {res['target_p95_ms']} ms)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
