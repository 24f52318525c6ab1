"""How fast is the simulator? Every row of the production-scale table (issue 14), on this machine:

    sim      10,000 and 500 ShareGPT requests at 80% of capacity, each mode, simulate + summary,
             with the fast paths and with --exact-steps (the per-sequence reference path)
    process  the same 10,000 as a ``pdlab simulate`` process, start-up included
    goodput  ``pdlab goodput`` of 10,000 requests with --jobs 1 and with every core
    million  1,000,000 requests (azure-conv lengths, 8 replicas, chunked) at 80% of capacity,
             simulate + summary, in a child process: wall, CPU and peak resident memory

Capacity is the throughput of the same setup when every request arrives at once. Wall time is
what a user waits; CPU time (``time.process_time``, or the children's rusage) is what one core
spends, and stays meaningful when other work shares the machine. Run it pinned to one core for
the one-core rows (``taskset -c 0 python bench/sim_speed.py``); the all-cores goodput row then
widens its own affinity (``--cores``).

    python bench/sim_speed.py [--out bench/results/sim-speed-<machine>-<date>.json] [--skip-million]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from pdlab import ServingConfig, run_serving
from pdlab.workload import make_requests, with_rate

MODEL, GPU = "llama-3-8b", "h100"
SETUPS = {
    "aggregated": ServingConfig(mode="aggregated", model=MODEL, gpu=GPU),
    "chunked": ServingConfig(mode="chunked", model=MODEL, gpu=GPU, chunk_size=512),
    "disaggregated": ServingConfig(mode="disaggregated", model=MODEL, gpu=GPU),
}
MILLION = ServingConfig(mode="chunked", model=MODEL, gpu=GPU, num_gpus=8)
# Vidur (MLSys'24) as quoted in the issue: simulated requests per second, seconds per 1,000
# requests as a process
VIDUR = {"requests_per_s": [150, 460], "process_s_per_1000": [6, 10]}
GOALS = {"10000_requests_s": 0.2, "10000_process_s": 0.6, "million_s": 60, "million_rss_gb": 2,
         "goodput_one_core_s": 3, "500_requests_s": 0.015}
SLOS = ["--slo", "ttft:p90:1", "--slo", "tpot:p90:0.05"]


def capacity(cfg: ServingConfig, n: int = 2000, lengths: str = "sharegpt") -> float:
    reqs = make_requests(n, 1e6, lengths, seed=0)     # everything at t ~ 0: saturated
    return run_serving(reqs, cfg).summary()["throughput_rps"]


def timed(reqs, cfg, repeat: int) -> tuple[float, float, dict]:
    """Median wall and CPU seconds of simulate + summarize."""
    walls, cpus = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        s = run_serving(reqs, cfg).summary()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), s


def child(argv: list[str], env=None) -> tuple[float, float, float, str]:
    """Run a child process: (wall s, CPU s of the child, its peak RSS in GB, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=True).stdout
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, after.ru_maxrss / 1e6, out


def million_child(rate: float) -> None:
    """The 1M row, run inside its own process so its peak memory is its own."""
    t, c = time.perf_counter(), time.process_time()
    reqs = make_requests(1_000_000, rate, "azure-conv", seed=0)
    t_make = time.process_time() - c
    res = run_serving(reqs, MILLION)
    t_sim = time.process_time() - c - t_make
    s = res.summary()
    print(json.dumps({"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c, "make_cpu_s": t_make,
                      "simulate_cpu_s": t_sim, "summary_cpu_s": time.process_time() - c - t_make - t_sim,
                      "steps": len(res.steps), "completed": s["completed"], "output_tokens": s["output_tokens"],
                      "simulated_s": s["duration_s"],
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    today = datetime.date.today().isoformat()
    ap.add_argument("--out", default=f"bench/results/sim-speed-cpu-{today}.json")
    ap.add_argument("--skip-million", action="store_true")
    ap.add_argument("--cores", default=None, help="CPU list for the all-cores goodput row (default: all)")
    ap.add_argument("--million-child", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.million_child is not None:
        million_child(args.million_child)
        return
    py, env = sys.executable, {**os.environ, "PDLAB_PROGRESS": "0"}
    rows, process_rows = [], []
    for mode, cfg in SETUPS.items():
        rate = 0.8 * capacity(cfg)
        for n, repeat in ((10_000, 3), (500, 15)):
            reqs = with_rate(make_requests(n, 1.0, "sharegpt", seed=1), rate, seed=1)
            wall, cpu, s = timed(reqs, cfg, repeat)
            ewall, ecpu, es = timed(reqs, ServingConfig(**{**cfg.__dict__, "exact_steps": True}), 1 if n > 500 else 5)
            assert es == s, f"{mode}: --exact-steps gave a different summary"
            rows.append({"mode": mode, "requests": n, "rate_rps": round(rate, 3), "wall_s": round(wall, 4),
                         "cpu_s": round(cpu, 4), "exact_steps_cpu_s": round(ecpu, 4),
                         "requests_per_cpu_s": round(n / cpu), "output_tokens": s["output_tokens"],
                         "completed": s["completed"], "simulated_s": round(s["duration_s"], 1)})
            print(f"{mode:>13} {n:>6} requests at {rate:6.2f} req/s: {cpu * 1e3:8.1f} ms CPU ({wall * 1e3:.1f} wall), "
                  f"--exact-steps {ecpu * 1e3:8.1f} ms, {s['duration_s']:.0f} simulated s", flush=True)
        argv = [py, "-m", "pdlab", "simulate", "--mode", mode, "--workload", "sharegpt", "--num-requests", "10000",
                "--rate", f"{rate:.3f}", "--seed", "1", "--json"]
        runs = [child(argv, env)[:2] for _ in range(3)]
        wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        process_rows.append({"mode": mode, "requests": 10_000, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3)})
        print(f"{mode:>13} as a process: {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
    # import time alone (what a process pays before simulating)
    imp = child([py, "-c", "import pdlab.cli, pdlab.run, pdlab.metrics"], env)[:2]

    goodput = {}
    gargv = [py, "-m", "pdlab", "goodput", "--mode", "chunked", "--workload", "sharegpt", "--num-requests", "10000",
             *SLOS, "--json"]
    w1, c1, _, o1 = child([*gargv, "--jobs", "1"], env)
    cores = args.cores or f"0-{(os.cpu_count() or 1) - 1}"
    ncores = os.cpu_count() or 1
    wn, cn, _, on = child(["taskset", "-c", cores, *gargv, "--jobs", str(ncores)], env)
    g1, gn = json.loads(o1), json.loads(on)
    assert g1 == gn, "goodput differs between --jobs 1 and all cores"
    goodput = {"requests": 10_000, "goodput_rps": g1["goodput_rps"], "rates_tried": g1["rates_tried"],
               "one_core_wall_s": round(w1, 2), "one_core_cpu_s": round(c1, 2), "cores": ncores,
               "all_cores_wall_s": round(wn, 2), "all_cores_cpu_s": round(cn, 2)}
    print(f"goodput 10k: {w1:.2f} s on one core, {wn:.2f} s on {ncores} cores ({g1['goodput_rps']:.2f} req/s)",
          flush=True)

    million = None
    if not args.skip_million:
        rate = 0.8 * capacity(MILLION, 8000, "azure-conv")
        wall, cpu, rss, out = child([py, __file__, "--million-child", f"{rate}"], env)
        million = {**json.loads(out), "rate_rps": round(rate, 2), "process_wall_s": round(wall, 2)}
        print(f"1M requests: {million['wall_s']:.1f} s wall, {million['cpu_s']:.1f} s CPU, "
              f"{million['peak_rss_gb']:.2f} GB peak RSS", flush=True)

    ten_k = [r for r in rows if r["requests"] == 10_000]
    speed = [r["requests_per_cpu_s"] for r in ten_k]
    out = {"what": "simulator speed (simulate + summarize), ShareGPT lengths at 80% of capacity",
           "clock": f"CPU of this machine; requests simulated on the cost model ({MODEL} on {GPU})",
           "load_average_1min": round(os.getloadavg()[0], 2), "affinity": sorted(os.sched_getaffinity(0)),
           "model": MODEL, "gpu_preset": GPU, "date": today, "cpu": platform.processor() or platform.machine(),
           "cores_available": os.cpu_count(), "python": platform.python_version(), "goals": GOALS,
           "rows": rows, "process": process_rows, "import_s": {"wall": round(imp[0], 3), "cpu": round(imp[1], 3)},
           "goodput": goodput, "million": million,
           "vidur": {**VIDUR, "speedup_requests_per_s": [round(min(speed) / VIDUR["requests_per_s"][1], 1),
                                                          round(max(speed) / VIDUR["requests_per_s"][0], 1)],
                     "speedup_process": [round(VIDUR["process_s_per_1000"][0] * 10 / max(r["wall_s"] for r in process_rows), 1),
                                         round(VIDUR["process_s_per_1000"][1] * 10 / min(r["wall_s"] for r in process_rows), 1)]}}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
