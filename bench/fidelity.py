"""Fidelity of the simulator: simulated vs measured TTFT and TPOT on the same GPU and workload.

    python bench/fidelity.py --out bench/results/fidelity-h200-2026-11-29.json \\
        --profile data/profiles/h200-llama-3.2-1b-torch.json

1. Calibrate (``pdlab.calibrate``): time a grid of batch shapes with the real engine on this
   GPU and fit the cost model's efficiency factors; the profile is written to ``--profile``
   (or read from it with ``--no-calibrate``).
2. Serve the workload of ``bench/interference_engine.py`` (short chats + long prompts) in the
   three modes twice: with ``ModelExecutor`` (measured step times) and with
   ``CostModelExecutor`` using the fitted profile (simulated). Same scheduler, same event loop.
3. For TTFT and TPOT at p50 and p99: ``rel_error = simulated / measured - 1``. Each measured
   run also logs the cost model's time for every step it served beside the measured one
   (``step_time_error``): how far the fitted model is from serving steps, not grid points.

Disaggregated mode runs its prefill and decode workers on the same GPU, one step at a time; the
event loop places them on two clocks as if they were two GPUs, and the KV transfer time comes
from the link model in both runs (the copy itself is real but not timed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import interference_engine as ie  # noqa: E402

MODES = (("aggregated", None), ("chunked", 512), ("disaggregated", None))
NOTES = [
    "disaggregated: prefill and decode executors share the one GPU and run one step at a time; the "
    "event loop puts them on two clocks; KV transfer time comes from the link model (nvlink) in both runs",
    "every number here comes from the run that wrote this file: calibration (profile above, fitted on "
    "this GPU in the same process), then the measured and simulated serving runs",
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/fidelity-h200-2026-11-29.json")
    ap.add_argument("--profile", default="data/profiles/h200-llama-3.2-1b-torch.json")
    ap.add_argument("--no-calibrate", action="store_true", help="use an existing --profile")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--fast", action="store_true", help="tiny workload and grid (smoke test)")
    ap.add_argument("--num-layers", type=int, default=None, help="fewer layers (smoke test on a CPU)")
    ap.add_argument("--interference-out", default=None,
                    help="also write bench/interference_engine.py's report from the same measured runs")
    ap.add_argument("--note", action="append", default=[],
                    help="a line for the JSON's notes (what changed since an earlier run; repeatable)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per calibration point (median)")
    args = ap.parse_args(argv)
    import torch
    from pdlab import calibrate as C

    t0 = time.perf_counter()
    model = ie.load_model(args.num_layers)
    if not args.no_calibrate:
        prof = C.calibrate(ie.MODEL, backend=args.backend, fast=args.fast, model=model, repeats=args.repeats,
                           progress=lambda p: print(f"  {p['kind']:8s} t={p['tokens']:5d} b={p['decodes']:4d} "
                                                    f"c={p['context']:5d} {1e3 * p['measured_s']:8.3f} ms", flush=True))
        C.write_profile(prof, args.profile)
        print(f"calibrated in {time.perf_counter() - t0:.0f} s: {prof['efficiency']} fit {prof['fit']}", flush=True)
    prof = json.loads(Path(args.profile).read_text())
    ie.warm_up(model, args.backend)
    reqs = ie.workload(fast=args.fast)
    rows, runs = [], {}
    for mode, chunk in MODES:
        t1 = time.perf_counter()
        log: list = []
        meas = ie.latency_table(ie.serve_measured(model, reqs, mode, chunk, args.backend,
                                                  step_log=log, profile=args.profile))
        sim = ie.latency_table(ie.serve_simulated(reqs, mode, chunk, args.profile))
        runs[mode] = {"chunk": chunk, "measured": meas, "simulated": sim,
                      "step_time_error": ie.step_errors(log),
                      "wall_s": round(time.perf_counter() - t1, 1)}
        print(mode, json.dumps(runs[mode]), flush=True)
        for metric in ("ttft", "tpot"):
            for q in (50, 99):
                m, s = meas[f"{metric}_p{q}_ms"], sim[f"{metric}_p{q}_ms"]
                rows.append({"mode": mode, "metric": metric, "percentile": q,
                             "simulated": s / 1e3, "measured": m / 1e3, "rel_error": s / m - 1})
    if args.interference_out:
        ie.write_report(args.interference_out, reqs, {m if c is None else f"{m}-{c}": runs[m] for m, c in MODES[:2]},
                        args.backend, chunk_size=MODES[1][1],
                        notes=[ie.WORKLOAD_NOTE, "from the measured runs of bench/fidelity.py (same command)"] + args.note)
    out = {
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "model": ie.MODEL + " shape, random bf16 weights", "backend": args.backend,
        "profile": args.profile, "units": "seconds; rel_error = simulated / measured - 1",
        "workload": {"requests": len(reqs), "long_prompts": sum(r.prompt_len >= 4096 for r in reqs)},
        "workload_rate_per_s": 6.0,
        "command": "python " + " ".join(sys.argv),
        "rows": rows,
        "max_rel_error": max(abs(r["rel_error"]) for r in rows),
        "median_abs_rel_error": float(statistics.median(abs(r["rel_error"]) for r in rows)),
        "profile_efficiency": prof["efficiency"],
        "profile_fit": {k: v for k, v in prof["fit"].items()},
        "runs": runs,
        "notes": [ie.WORKLOAD_NOTE] + NOTES + args.note,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"max |rel_error| = {100 * out['max_rel_error']:.1f}%, median {100 * out['median_abs_rel_error']:.1f}%"
          f"  wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
