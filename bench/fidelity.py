"""Fidelity of the simulator: simulated vs measured TTFT and TPOT on the same GPU, held out.

    python bench/fidelity.py --backend numba --out bench/results/fidelity-h200-2026-11-29.json \\
        --profile data/profiles/h200-llama-3.2-1b-numba.json

    python bench/fidelity.py --model tiny --smoke --out /tmp/f.json --profile /tmp/p.json   # CPU check

The protocol (one process, one GPU):

1. Grid: time the calibration grid of batch shapes (``pdlab.engine.calibrate``) with the real engine.
2. Training: serve a TRAINING workload (``bench/interference_engine.py``'s generator, seed
   ``--train-seed``, default 1) with the real engine in all three modes, logging every served
   step's batch shape and measured seconds (``calibrate.serve_and_log``).
3. Fit: the cost model's efficiency factors and overheads (``mixed_overhead_s`` included) to
   the served training steps plus the grid (``calibrate.calibrate_from_serving``); the profile is
   written to ``--profile`` (``pdlab calibrate --serve-workload`` does the same fit).
4. Test: serve the TEST workload (seed 0: the workload of the earlier runs) with the real engine
   (measured) and with ``CostModelExecutor`` on the fitted profile (simulated); same schedulers,
   same event loop. For TTFT and TPOT at p50 and p99: ``rel_error = simulated / measured - 1``.
   The test steps are never seen by the fit. Also reported: the same errors on the training
   workload, the grid-only profile's errors on the test workload, and the fitted model's error on
   every served test step (``step_time_error``).

The JSON is rewritten after every phase, so a run cut short still leaves what it measured.

Disaggregated mode runs its prefill and decode workers on the same GPU, one step at a time; the
event loop places them on two clocks as if they were two GPUs, and the KV transfer time comes
from the link model in both runs (the copy itself is real but not timed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import interference_engine as ie  # noqa: E402

MODES = (("aggregated", None), ("chunked", 512), ("disaggregated", None))
NOTES = [
    "disaggregated: prefill and decode executors share the one GPU and run one step at a time; the "
    "event loop puts them on two clocks; KV transfer time comes from the link model (nvlink) in both runs",
    "every number here comes from the run that wrote this file: grid, training runs, fit (profile above), "
    "then the measured and simulated test runs, in one process on this GPU",
]
HISTORY = [
    "first H200 run (grid-only fit; ~35 ms fitted step overhead): max |rel_error| 37%, median 17%",
    "second H200 run (the executor validates each step once and never reads back from the GPU inside the "
    "layer loop: fitted step overhead ~16 ms; grid-only fit): max 42%, median 29%, the simulator too fast "
    "everywhere. Two causes found: a step that runs both prefill chunks and decodes costs 6-8 ms more than "
    "either alone, and served steps ran 10-40% slower than grid steps of the same shape (decode-only p50 "
    "23-28 ms served vs 20-22.6 ms in the grid; aggregated prefill 32 ms vs 19 ms)",
    "third H200 run (2026-11-29): the cost model has mixed_overhead_s (added once per step that holds both phases), fitted "
    "with the rest; the efficiency factors are fitted to served steps of a training workload plus the grid "
    "(calibrate.calibrate_from_serving: every served batch's shape is logged with its measured seconds and "
    "timed by CostModel.time_for, the fit matches mean step times) instead of the grid alone; fidelity is "
    "measured on a held-out test workload. The executor and kernels are unchanged since the second run: "
    "max 25%, median 15%",
    "this run (2026-12-07): decode steps replayed from CUDA graphs (pdlab/engine/graphs.py), fused QKV and "
    "gate/up GEMMs, fewer kernels per layer, tensor-core prefill attention; profile refitted on this engine",
]
PROTOCOL = (
    "held out: the efficiency factors are fitted to the grid plus every step the real engine served on a "
    "TRAINING workload (same generator, seed {train_seed}, all three modes; {train_steps} steps, one weight "
    "each, grid points weight {grid_weight} each); the rows compare measured and simulated serving on the "
    "TEST workload (seed 0, the workload of the earlier runs), whose steps the fit never saw. "
    "train_rows: the same comparison on the training workload; grid_only_rows: the test workload simulated "
    "with the grid-only fit of this run (the earlier protocol)")


def compare(meas_tables: dict, sim_tables: dict) -> list[dict]:
    rows = []
    for mode, _ in MODES:
        if mode not in meas_tables or mode not in sim_tables:
            continue
        meas, sim = meas_tables[mode], sim_tables[mode]
        for metric in ("ttft", "tpot"):
            for q in (50, 99):
                m, s = meas[f"{metric}_p{q}_ms"], sim[f"{metric}_p{q}_ms"]
                rows.append({"mode": mode, "metric": metric, "percentile": q,
                             "simulated": s / 1e3, "measured": m / 1e3, "rel_error": s / m - 1})
    return rows


def summary(rows: list[dict]) -> dict:
    if not rows:
        return {"max_rel_error": None, "median_rel_error": None}
    a = [abs(r["rel_error"]) for r in rows]
    return {"max_rel_error": max(a), "median_rel_error": float(statistics.median(a))}


def simulate(reqs, profile: str) -> dict:
    return {mode: ie.latency_table(ie.serve_simulated(reqs, mode, chunk, profile)) for mode, chunk in MODES}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/fidelity-h200-2026-11-29.json")
    ap.add_argument("--profile", default="data/profiles/h200-llama-3.2-1b-numba.json",
                    help="where the fitted profile is written")
    ap.add_argument("--backend", default="numba")
    ap.add_argument("--model", default=ie.MODEL, help="llama-3.2-1b (GPU) or tiny (CPU smoke test)")
    ap.add_argument("--smoke", "--fast", dest="smoke", action="store_true",
                    help="tiny workloads and grid (a CPU check of the whole script)")
    ap.add_argument("--num-layers", type=int, default=None, help="fewer layers (smoke test on a CPU)")
    ap.add_argument("--train-seed", type=int, default=1, help="seed of the training workload (test: 0)")
    ap.add_argument("--grid-weight", type=float, default=1.0, help="weight of a grid point vs a served step")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per grid point (median)")
    ap.add_argument("--interference-out", default=None,
                    help="also write bench/interference_engine.py's report from the measured test runs")
    ap.add_argument("--records-out", default=None,
                    help="also write every served step (training and test): shape, kind, measured seconds")
    ap.add_argument("--note", action="append", default=[],
                    help="a line for the JSON's notes (what changed since an earlier run; repeatable)")
    args = ap.parse_args(argv)
    import torch

    from pdlab.engine import calibrate as C
    from pdlab.run import cost_model_for
    from pdlab.sim import StepShape
    from pdlab.sim.fit import error_summary, predict_shapes
    from pdlab.engine.executor import factory

    from pdlab.hardware import gpu_preset_for

    # the simulated runs use the preset of the GPU this runs on (h100 or h200)
    ie.GPU = (gpu_preset_for(torch.cuda.get_device_name(0)) or ie.GPU) if torch.cuda.is_available() else "cpu"
    if args.model != ie.MODEL:
        ie.MODEL = args.model
    if not torch.cuda.is_available():
        torch.set_num_threads(1)
    t0 = time.perf_counter()
    out = {
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "model": ie.MODEL + " shape, random weights" + (" (bf16)" if torch.cuda.is_available() else " (fp32)"),
        "backend": args.backend, "profile": args.profile,
        "units": "seconds; rel_error = simulated / measured - 1",
        "command": "python " + " ".join(sys.argv),
        "phase": "started",
    }

    def save(phase):
        out["phase"] = phase
        out["wall_s"] = round(time.perf_counter() - t0, 1)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
        print(f"[{out['wall_s']:6.1f} s] {phase}: saved {args.out}", flush=True)

    model = ie.load_model(args.num_layers)
    vocab = model.cfg.vocab_size
    ie.warm_up(model, args.backend)
    train = ie.workload(seed=args.train_seed, fast=args.smoke, vocab=vocab)
    test = ie.workload(seed=0, fast=args.smoke, vocab=vocab)
    out["workload"] = {"test": {"seed": 0, "requests": len(test), "long_prompts": sum(r.prompt_len >= 1024 for r in test)},
                       "train": {"seed": args.train_seed, "requests": len(train),
                                 "long_prompts": sum(r.prompt_len >= 1024 for r in train)},
                       "rate_per_s": 6.0}

    # 1-3: grid, training runs, fit (one call: what `pdlab calibrate --serve-workload` does)
    train_log: list = []
    train_results: dict = {}
    prof = C.calibrate(ie.MODEL, gpu=ie.GPU, backend=args.backend, fast=args.smoke, model=model,
                       repeats=args.repeats, serve_requests=train, serve_modes=MODES, grid_weight=args.grid_weight,
                       serve_log=train_log, serve_results=train_results,
                       serve_config=lambda mode, chunk: ie.config(mode, chunk),
                       progress=lambda p: print(f"  {p['kind']:8s} t={p['tokens']:5d} b={p['decodes']:4d} "
                                                f"c={p['context']:5d} {1e3 * p['measured_s']:8.3f} ms", flush=True))
    C.write_profile(prof, args.profile)
    print(f"fitted to {len(train_log)} served steps + {prof['fit']['points']} grid points: {prof['efficiency']}", flush=True)
    out["profile_efficiency"] = prof["efficiency"]
    out["grid_only_efficiency"] = prof["grid_fit"]["efficiency"]
    out["profile_fit"] = {"served_training_steps": prof["serving_fit"]["served"],
                          "grid": prof["serving_fit"].get("grid"),
                          "grid_only_fit": {k: v for k, v in prof["grid_fit"].items() if k != "efficiency"}}
    train_meas = {m: ie.latency_table(r) for m, r in train_results.items()}
    train_sim = simulate(train, args.profile)
    out["train_rows"] = compare(train_meas, train_sim)
    out["train"] = summary(out["train_rows"]) | {"measured": train_meas, "simulated": train_sim}
    save("fitted")

    # grid-only profile (the earlier protocol), for comparison on the same test runs
    grid_path = Path(tempfile.mkdtemp()) / "grid-only.json"
    grid_path.write_text(json.dumps({"efficiency": prof["grid_fit"]["efficiency"]}))

    # 4: test runs, measured then simulated
    make = factory(model, backend=args.backend)
    cm_fit = cost_model_for(ie.config("chunked", 512, args.profile))
    runs, meas_tables, test_log_all = {}, {}, []
    out["rows"] = []
    for mode, chunk in MODES:
        t1 = time.perf_counter()
        log: list = []
        res, _ = C.serve_and_log(test, ie.config(mode, chunk), make, log)
        test_log_all += log
        meas_tables[mode] = ie.latency_table(res)
        sim = ie.latency_table(ie.serve_simulated(test, mode, chunk, args.profile))
        runs[mode] = {"chunk": chunk, "measured": meas_tables[mode], "simulated": sim,
                      "step_time_error": error_summary(log, predict_shapes(cm_fit, log)),
                      "wall_s": round(time.perf_counter() - t1, 1)}
        out["rows"] += compare({mode: meas_tables[mode]}, {mode: sim})
        out["runs"] = runs
        out.update(summary(out["rows"]))
        print(mode, json.dumps(runs[mode]), flush=True)
        save(f"test {mode}")
    out["step_time_error"] = error_summary(test_log_all, predict_shapes(cm_fit, test_log_all),
                                             by=("kind", "mode"))
    out["grid_only_rows"] = compare(meas_tables, simulate(test, str(grid_path)))
    out["grid_only"] = summary(out["grid_only_rows"])
    out["notes"] = [ie.WORKLOAD_NOTE.replace("seed 0", "seed 0 (test)"),
                    PROTOCOL.format(train_seed=args.train_seed, train_steps=len(train_log),
                                    grid_weight=args.grid_weight)] + NOTES + HISTORY + args.note
    out["median_abs_rel_error"] = out["median_rel_error"]
    if args.interference_out:
        ie.write_report(args.interference_out, test, {m if c is None else f"{m}-{c}": runs[m] for m, c in MODES[:2]},
                        args.backend, chunk_size=MODES[1][1],
                        notes=[ie.WORKLOAD_NOTE, "from the measured test runs of bench/fidelity.py (same command)"]
                        + args.note)
    save("done")
    if args.records_out:
        cols = ["set", "mode", "role", "kind", "measured_s", *StepShape._fields]
        rows = [["train" if i < len(train_log) else "test"] + [r[k] for k in cols[1:]]
                for i, r in enumerate(train_log + test_log_all)]
        Path(args.records_out).write_text(json.dumps({"columns": cols, "rows": rows}) + "\n")
        print(f"wrote {args.records_out} ({len(rows)} steps)")
    print(f"test: max |rel_error| = {100 * out['max_rel_error']:.1f}%, median {100 * out['median_rel_error']:.1f}%; "
          f"train: max {100 * out['train']['max_rel_error']:.1f}%, median {100 * out['train']['median_rel_error']:.1f}%; "
          f"grid-only on test: max {100 * out['grid_only']['max_rel_error']:.1f}%, "
          f"median {100 * out['grid_only']['median_rel_error']:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
