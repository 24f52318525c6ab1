"""``pdlab calibrate``: measure real steps on this machine and fit the cost model to them.

    pdlab calibrate                                  # GPU: llama-3.2-1b shape; CPU: the tiny model
    pdlab calibrate --model llama-3.2-1b --gpu h200 --out data/profiles/h200-llama-3.2-1b.json
    pdlab calibrate --serve-workload sharegpt         # fit to served steps + the grid

1. Build the model (trained ``tiny``, or a shape preset with seeded random weights) and a
   ``ModelExecutor`` with a paged KV cache.
2. Time a grid of batch shapes: prefill-only (prompt length, with and without cached context),
   decode-only (batch size x context length), mixed (a prefill chunk plus decodes) and
   serving-like steps (several prefill chunks, some after cached context, beside a decode
   batch: what the chunked and aggregated schedulers really issue). Each point is the median of
   a few runs after a warm-up; the runs go round-robin over the grid, so a step follows a step
   of another shape, as in serving, rather than a copy of itself.
3. Fit the cost model's efficiency factors and overheads (``pdlab.sim.Efficiency``: mfu,
   attn_eff, mbu, step_overhead_s, seq_overhead_s, prefill_overhead_s, mixed_overhead_s) by least squares on
   log(predicted/measured), so short and long steps weigh the same. The profile reports the
   fit's median and max relative error over every point.
4. Write a profile JSON (``efficiency`` + every point, measured and predicted) that the
   simulator loads with ``ServingConfig(profile=...)`` / ``pdlab simulate --profile``.

Grid steps can run faster than the same shapes do while serving. ``--serve-workload`` (or
``calibrate(serve_requests=...)``) also serves a workload with the real engine through
``run_serving`` in the three modes, logging every step's ``StepShape`` and measured seconds
through the loop's ``on_step`` hook (``serve_and_log``), and fits the
factors, ``mixed_overhead_s`` included, to those served steps plus the grid
(``calibrate_from_serving``: a fit to mean step times, since served latencies are sums of steps).

The predictions come from ``CostModel.time_for`` itself (the fit is ``pdlab.sim.fit``): this
module measures, the cost model stays the only place that turns a batch into seconds.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import PdlabError
from ..paths import PROFILES as PROFILES_DIR
from ..sim.costmodel import CostModel
from ..sim.fit import FIT_PARAMS, error_summary, fit_shapes, predict_shapes, shape_of
from .grid import grid, measure_grid

SERVE_MODES = (("aggregated", None), ("chunked", 512), ("disaggregated", None))


# ---- the fit ----------------------------------------------------------------------------------
def fit(cost_model, points: list[dict]):
    """Least-squares fit of the efficiency factors to measured grid points (log-ratio residuals,
    soft-L1). Returns (fitted CostModel, predicted seconds per point)."""
    shapes = [CostModel.shape(p["_batch"]) for p in points]
    return fit_shapes(cost_model, shapes, [p["measured_s"] for p in points])


# ---- calibration from served steps ---------------------------------------------------------
def step_logger(log: list, **tags):
    """An ``on_step`` hook for ``run_serving``: every iteration appends a record (its
    ``StepShape`` fields, kind, measured seconds, worker, role and ``tags``) to ``log``. It runs
    as the step starts, before ``postprocess`` changes the batch's sequences."""

    def on_step(worker, batch, result):
        shape = CostModel.shape(batch)
        log.append({**shape._asdict(), "kind": shape.kind, "measured_s": float(result.seconds),
                    "worker": worker.name, "role": worker.role, **tags})

    return on_step


def serve_and_log(requests, config, executor_factory, log: list | None = None, clock: str = "", **tags):
    """``run_serving(requests, config)`` on the real engine, logging every step (``step_logger``).
    Returns (RunResult, records)."""
    from ..run import run_serving

    log = [] if log is None else log
    res = run_serving(requests, config, executor_factory, clock=clock,
                      on_step=step_logger(log, mode=config.mode, **tags))
    return res, log


def calibrate_from_serving(cost_model, records: list[dict], grid_points: list[dict] | None = None,
                           grid_weight: float = 1.0, params=FIT_PARAMS) -> dict:
    """Fit the efficiency factors to steps logged while the real engine served a workload
    (``serve_and_log`` records: shape + measured seconds), plus grid points (dicts with a
    ``shape`` or a ``_batch``, and ``measured_s``) each weighted ``grid_weight`` against one
    served step. The fit targets the mean step time (``fit_shapes(mean=True)``): served latencies
    are sums of steps. Returns {"efficiency", "fit"} for a profile (``write_profile``)."""
    grid_points = grid_points or []
    g_shapes = [shape_of(p["shape"]) if p.get("shape") else CostModel.shape(p["_batch"]) for p in grid_points]
    shapes = [shape_of(r) for r in records] + g_shapes
    meas = [r["measured_s"] for r in records] + [p["measured_s"] for p in grid_points]
    weights = [1.0] * len(records) + [grid_weight] * len(grid_points)
    if not shapes:
        raise ValueError("calibrate_from_serving: no records to fit")
    cm, pred = fit_shapes(cost_model, shapes, meas, weights, params, mean=True)
    n = len(records)
    tagged = [{**r, "source": r.get("mode", "served")} for r in records]
    fit_info = {"served_steps": n, "grid_points": len(grid_points), "grid_weight": grid_weight,
                "served": error_summary(tagged, pred[:n], by=("kind", "source", "role")) if n else {"steps": 0},
                "residuals": "pass 1: log(predicted / measured), soft-L1; pass 2 (the result): "
                             "(predicted - measured) / pass-1 prediction, Huber (f_scale 0.5), so the "
                             "fit matches mean step times; grid points weighted grid_weight each"}
    if grid_points:
        g = [{"kind": p.get("kind", "grid"), "measured_s": p["measured_s"]} for p in grid_points]
        fit_info["grid"] = error_summary(g, pred[n:])
    return {"efficiency": {k: getattr(cm.eff, k) for k in params}, "fit": fit_info,
            "cost_model": cm}


def calibrate(model_name: str, gpu: str | None = None, backend: str = "torch", device=None,
              fast: bool = False, repeats: int = 5, num_layers: int | None = None,
              max_tokens: int | None = None, progress=None, model=None, serve_requests=None,
              serve_modes=SERVE_MODES, grid_weight: float = 1.0, serve_log: list | None = None,
              serve_results: dict | None = None, serve_config=None) -> dict:
    """Measure the grid and fit; returns the profile dict (see ``write_profile``).

    With ``serve_requests``, the real engine also serves them through ``run_serving`` in each of
    ``serve_modes`` ((mode, chunk size) pairs), logging every step (``serve_and_log``), and the
    profile's efficiency is fitted to those served steps plus the grid (``calibrate_from_serving``);
    the grid-only fit stays in the profile as ``grid_fit``. ``serve_log`` (a list) receives the
    served records, ``serve_results`` (a dict) each mode's RunResult; ``serve_config(mode, chunk)``
    may give the ServingConfig of each run."""
    import torch

    from ..errors import PdlabError
    from ..hardware import GPUS, gpu_preset_for, lookup
    from . import model as M
    from .executor import ModelExecutor, default_device

    dev = torch.device(device) if device else default_device()
    if dev.type == "cuda":
        dev_name = torch.cuda.get_device_name(dev)
        gpu = gpu or gpu_preset_for(dev_name)
        if gpu is None:
            raise PdlabError(f"no GPU preset for '{dev_name}': pass --gpu (one of {', '.join(GPUS)})")
    else:
        dev_name = "cpu"
        gpu = gpu or "cpu"
    if model is not None:
        model = model.to(dev)
    elif model_name == "tiny":
        model = M.load_tiny(device=dev)
    else:
        cfg = M.preset(model_name)
        if num_layers:
            cfg = replace(cfg, num_layers=num_layers)
        if dev.type == "cpu":
            cfg = replace(cfg, dtype="float32")     # CPU matmuls in bf16 are slow and unrepresentative
        model = M.build(cfg, device=dev)
    cfg = model.cfg
    if max_tokens is None:
        max_tokens = 4096 if fast else 1 << 17
    block_size = 16
    num_blocks = max_tokens // block_size + 16
    ex = ModelExecutor(model, num_blocks, block_size, backend=backend, device=dev)
    points = measure_grid(ex, grid(fast, max_tokens), repeats, progress)
    cm0 = CostModel(lookup(GPUS, gpu, "GPU"), cfg.spec())
    for p in points:
        p["shape"] = CostModel.shape(p["_batch"])._asdict()
    cm, pred = fit(cm0, points)
    meas = np.array([p["measured_s"] for p in points])
    rel = pred / meas - 1
    eff = {k: getattr(cm.eff, k) for k in FIT_PARAMS}
    served, grid_rel = None, rel
    if serve_requests:
        from ..config import ServingConfig
        from ..models import MODELS
        from .executor import factory

        make = factory(model, backend=backend, device=dev)
        log = [] if serve_log is None else serve_log
        rng = np.random.default_rng(0)      # the real engine needs token ids: random ones where absent
        serve_requests = [r if r.prompt_ids is not None else
                          replace(r, prompt_ids=tuple(int(x) for x in rng.integers(0, cfg.vocab_size, r.prompt_len)))
                          for r in serve_requests]
        for mode, chunk in serve_modes:
            conf = serve_config(mode, chunk) if serve_config else ServingConfig(
                mode=mode, model=cfg.name if cfg.name in MODELS else "tiny", gpu=gpu, chunk_size=chunk,
                block_size=block_size, num_blocks=num_blocks, link="nvlink")
            res, _ = serve_and_log(serve_requests, conf, make, log, clock=f"measured on {dev_name}")
            if serve_results is not None:
                serve_results[mode] = res
        served = calibrate_from_serving(cm0, log, points, grid_weight)
        grid_eff = eff
        eff = served["efficiency"]
        pred = predict_shapes(served["cost_model"], [p["shape"] for p in points])
        rel = pred / meas - 1
    prof = {
        "gpu": gpu, "device": dev_name, "model": cfg.name, "backend": backend,
        "model_shape": {"layers": cfg.num_layers, "hidden": cfg.hidden_size, "heads": cfg.num_heads,
                        "kv_heads": cfg.num_kv_heads, "ffn": cfg.ffn_size, "vocab": cfg.vocab_size,
                        "dtype": cfg.dtype, "kv_dtype": cfg.kv_dtype},
        "efficiency": eff,
        "fit": {"points": len(points), "median_abs_rel_error": float(np.median(np.abs(rel))),
                "max_abs_rel_error": float(np.max(np.abs(rel))),
                "by_kind": {k: {"points": int(sum(m)), "median_abs_rel_error": float(np.median(np.abs(rel[m]))),
                                "max_abs_rel_error": float(np.max(np.abs(rel[m])))}
                            for k in dict.fromkeys(p["kind"] for p in points)
                            for m in [np.array([p["kind"] == k for p in points])]},
                "residuals": "log(predicted / measured), soft-L1 least squares; errors are "
                             "|predicted / measured - 1| over every grid point" + (
                                 " under the served-step fit (see serving_fit)" if served else "")},
        "points": [{k: v for k, v in p.items() if not k.startswith("_")} | {"predicted_s": float(q)}
                   for p, q in zip(points, pred)],
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
        "note": "measured with pdlab.engine.executor.ModelExecutor (CUDA events on a GPU, perf_counter on a CPU); "
                "load with pdlab.sim.Efficiency.load(path) or ServingConfig(profile=path)",
    }
    if served:
        prof["calibrated_on"] = "served steps + grid"
        prof["serving_fit"] = served["fit"] | {
            "modes": [list(m) for m in serve_modes], "requests": len(serve_requests)}
        prof["grid_fit"] = {"efficiency": grid_eff,
                            "median_abs_rel_error": float(np.median(np.abs(grid_rel))),
                            "max_abs_rel_error": float(np.max(np.abs(grid_rel)))}
    else:
        prof["calibrated_on"] = "grid"
    return prof


def default_out(profile: dict) -> Path:
    return PROFILES_DIR / f"{profile['gpu']}-{profile['model']}-{profile['backend']}.json"


def write_profile(profile: dict, out: str | Path | None = None) -> Path:
    path = Path(out) if out else default_out(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profile, indent=1) + "\n")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="model preset: tiny (trained) or a shape preset such as llama-3.2-1b "
                             "(default: llama-3.2-1b on a GPU, tiny on a CPU)")
    parser.add_argument("--gpu", default=None, help="cost-model GPU preset the profile is for "
                        "(default: detected from the device name; 'cpu' on a CPU)")
    parser.add_argument("--backend", choices=("torch", "numba"), default="torch", help="attention backend")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--num-layers", type=int, default=None, help="run fewer layers of a shape preset")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per point (median)")
    parser.add_argument("--fast", action="store_true", help="a small grid (seconds, for a CPU)")
    parser.add_argument("--out", default=None, help="profile JSON (default: data/profiles/GPU-MODEL-BACKEND.json)")
    parser.add_argument("--serve-workload", default=None, metavar="LENGTHS",
                        help="also serve a workload (a length preset, e.g. sharegpt) with the real engine in "
                             "the aggregated, chunked and disaggregated modes and fit to the served steps "
                             "plus the grid (default: fit to the grid alone)")
    parser.add_argument("--serve-requests", type=int, default=40, help="requests in --serve-workload")
    parser.add_argument("--serve-rate", type=float, default=4.0, help="arrivals per second in --serve-workload")
    parser.add_argument("--serve-seed", type=int, default=1, help="seed of --serve-workload")
    parser.add_argument("--grid-weight", type=float, default=1.0,
                        help="weight of one grid point against one served step in the --serve-workload fit")


def check_arguments(args) -> None:
    """Bad flags answer at once, before torch loads (seconds) and the grid runs (minutes)."""
    for flag in ("repeats", "serve_requests", "num_layers"):
        v = getattr(args, flag, None)
        if v is not None and v < 1:
            raise PdlabError(f"--{flag.replace('_', '-')} must be >= 1, got {v}")
    for flag in ("serve_rate", "grid_weight"):
        v = getattr(args, flag, None)
        if v is not None and not 0 < v < float("inf"):
            raise PdlabError(f"--{flag.replace('_', '-')} must be > 0, got {v}")
    if args.device not in (None, "cpu", "cuda") and not str(args.device).startswith("cuda:"):
        raise PdlabError(f"--device must be cpu or cuda, got '{args.device}'")


def run(args) -> int:
    check_arguments(args)
    import torch

    model = args.model or ("llama-3.2-1b" if torch.cuda.is_available() and args.device != "cpu" else "tiny")
    if model == "tiny" and not torch.cuda.is_available():
        torch.set_num_threads(1)   # a 6M-parameter model gains nothing from threads; they add noise
    t0 = time.perf_counter()

    def show(p):
        print(f"  {p['kind']:8s} x{p.get('seqs', len(p.get('chunks', [])) or 1):<3d} tokens={p['tokens']:5d} decodes={p['decodes']:4d} context={p['context']:5d}"
              f"  {1e3 * p['measured_s']:9.3f} ms", flush=True)

    serve = None
    if getattr(args, "serve_workload", None):
        from ..workload import make_requests
        serve = make_requests(args.serve_requests, args.serve_rate, args.serve_workload, seed=args.serve_seed)
    prof = calibrate(model, args.gpu, args.backend, args.device, args.fast, args.repeats,
                     args.num_layers, progress=show, serve_requests=serve,
                     grid_weight=getattr(args, "grid_weight", 1.0))
    path = write_profile(prof, args.out)
    e, f = prof["efficiency"], prof["fit"]
    print(f"fitted on {prof['device']} ({prof['gpu']} preset), model {prof['model']}, {f['points']} points "
          f"in {time.perf_counter() - t0:.0f} s:")
    print("  " + ", ".join(f"{k}={v:.4g}" for k, v in e.items()))
    print(f"  |predicted/measured - 1|: median {100 * f['median_abs_rel_error']:.1f}%, "
          f"max {100 * f['max_abs_rel_error']:.1f}%")
    if "serving_fit" in prof:
        sf = prof["serving_fit"]["served"]
        print(f"  served steps ({sf['steps']}): |predicted/measured - 1| median {100 * sf['median_abs_rel_error']:.1f}%, "
              f"mean step time off by {100 * sf['mean_rel_error']:+.1f}%")
    print(f"wrote {path}")
    return 0
