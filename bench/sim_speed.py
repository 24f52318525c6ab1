"""How fast is the simulator? Wall time to simulate ShareGPT-length requests at 80% of capacity
on one CPU core, per mode: 10,000 requests (goal < 2 s) and 500 requests (a slider's run,
goal < 100 ms). Capacity is the throughput of the same setup when every request arrives at once.

    python bench/sim_speed.py [--out bench/results/sim-speed-<machine>-<date>.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time

from pdlab import ServingConfig, run_serving
from pdlab.workload import make_requests, with_rate

MODEL, GPU = "llama-3-8b", "h100"
SETUPS = {
    "aggregated": ServingConfig(mode="aggregated", model=MODEL, gpu=GPU),
    "chunked": ServingConfig(mode="chunked", model=MODEL, gpu=GPU, chunk_size=512),
    "disaggregated": ServingConfig(mode="disaggregated", model=MODEL, gpu=GPU),
}


def capacity(cfg: ServingConfig, n: int = 2000) -> float:
    reqs = make_requests(n, 1e6, "sharegpt", seed=0)     # everything at t ~ 0: saturated
    return run_serving(reqs, cfg).summary()["throughput_rps"]


def timed(reqs, cfg, repeat: int) -> tuple[float, float, dict]:
    """Median wall and CPU seconds of simulate + summarize. CPU time is what one core spends on
    it, and stays meaningful when other work shares the machine."""
    walls, cpus = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        res = run_serving(reqs, cfg)
        s = res.summary()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    today = datetime.date.today().isoformat()
    ap.add_argument("--out", default=f"bench/results/sim-speed-cpu-{today}.json")
    args = ap.parse_args()
    rows = []
    for mode, cfg in SETUPS.items():
        cap = capacity(cfg)
        rate = 0.8 * cap
        for n, repeat in ((10_000, 3), (500, 15)):
            reqs = with_rate(make_requests(n, 1.0, "sharegpt", seed=1), rate, seed=1)
            wall, cpu, s = timed(reqs, cfg, repeat)
            rows.append({"mode": mode, "requests": n, "rate_rps": round(rate, 3), "capacity_rps": round(cap, 3),
                         "wall_s": round(wall, 4), "cpu_s": round(cpu, 4), "output_tokens": s["output_tokens"],
                         "completed": s["completed"], "simulated_s": round(s["duration_s"], 1)})
            print(f"{mode:>13} {n:>6} requests at {rate:6.2f} req/s (80% of {cap:.2f}): {cpu * 1e3:8.1f} ms CPU, "
                  f"{wall * 1e3:8.1f} ms wall "
                  f"for {s['duration_s']:.0f} simulated s, {s['output_tokens']} tokens")
    load = os.getloadavg()[0]
    out = {"what": "simulator time (simulate + summarize), ShareGPT lengths at 80% of capacity, one process",
           "load_average_1min": round(load, 2),
           "model": MODEL, "gpu_preset": GPU, "date": today, "cpu": platform.processor() or platform.machine(),
           "cores_available": os.cpu_count(), "python": platform.python_version(),
           "goals": {"10000_requests_s": 2.0, "500_requests_s": 0.1}, "rows": rows}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
