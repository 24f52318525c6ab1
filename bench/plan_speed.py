"""Time ``pdlab plan`` over 8 GPUs: 1000 ShareGPT requests, Llama-3-8B on H100s, interactive SLOs
(TTFT p90 0.5 s, TPOT p90 50 ms, counted per request), every configuration of ``plan.Space``.
Goal: under a minute on a laptop. Writes bench/results/plan-speed-cpu-<date>.json.

    python bench/plan_speed.py [--jobs N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pdlab import plan as P  # noqa: E402
from pdlab.metrics import SLO  # noqa: E402
from pdlab.sweep import default_jobs  # noqa: E402
from pdlab.lab.env import cpu_name  # noqa: E402
from pdlab.workload import make_requests  # noqa: E402


def cpu_s() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=None, help="processes (default: every core)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    jobs = args.jobs or default_jobs()
    reqs = make_requests(1000, 1.0, "sharegpt", seed=0)
    slos = [SLO("ttft", 90, 0.5), SLO("tpot", 90, 0.05)]
    space = P.Space(model="llama-3-8b", gpu="h100", num_gpus=8)
    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), cpu_s()
    res = P.plan(reqs, space, slos, jobs=jobs)
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    probes = sum(c["rates_tried"] for c in res["candidates"])
    out = {
        "what": "pdlab plan over 8 GPUs: 1000 ShareGPT requests, llama-3-8b on h100 (simulated), "
                "SLOs ttft:p90:0.5 + tpot:p90:0.05 counted per request, every configuration of plan.Space",
        "date": date.today().isoformat(), "cpu": cpu_name(), "python": platform.python_version(),
        "cores_available": default_jobs(), "jobs": jobs, "load_average_1min_before": round(load0, 2),
        "goal_wall_s": 60.0, "wall_s": round(wall, 2), "cpu_s_all_processes": round(cpu, 2),
        "configurations": res["configurations"], "refined": res["refined"], "simulations": probes,
        "best": {k: res["best"][k] for k in ("label", "goodput_rps", "goodput_rps_per_gpu", "binding")},
        "runner_ups": [{k: r[k] for k in ("label", "goodput_rps_per_gpu")} for r in res["runner_ups"]],
        "load_average_1min_after": round(os.getloadavg()[0], 2),
        "note": "wall time depends on free cores (this machine's 2 cores are shared with other work: see the "
                "load averages); cpu_s_all_processes / jobs bounds the wall time on idle cores",
    }
    path = Path(args.out or ROOT / "bench" / "results" / f"plan-speed-cpu-{out['date']}.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
