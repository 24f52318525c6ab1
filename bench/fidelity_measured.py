"""How well does the simulator predict real engines? Leave-one-rate-out over DistServe's measured
runs of vLLM and DistServe serving OPT-13B on A100-80GB (``data/measured/``).

For each engine, each run is held out in turn: the profile's terms are fitted (``pdlab.sim.servefit``,
quantile loss on TTFT and TPOT) on the other runs, then the held-out run is replayed and its TTFT
and TPOT p50/p90 compared with the measurement. Profiles compared:

    ideal       the roofline's default factors (no fit)
    step        DistServe's published step-time model of the engine (no fit)
    step+fit    the step model plus fitted per-running-sequence and per-token costs
    roofline    the roofline with its factors and overheads fitted (--roofline ENGINES; slower)

The saturation knee: the lowest request rate at which TTFT p90 or TPOT p90 reaches KNEE_FACTOR
times its value at the lowest measured rate, interpolated log-linearly between rates. Measured: over
the measured runs. Simulated: at the same rates (the same interpolation) and on a fine sweep of
the largest run's requests with arrivals rescaled.

    PYTHONPATH=. python bench/fidelity_measured.py [--roofline vllm] [--jobs N] [--out bench/results/...json]

Everything here is simulated on the CPU (cost-model clock) against measurements made on A100s by
DistServe's authors.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pdlab.config import ServingConfig  # noqa: E402
from pdlab.measured import read_measured  # noqa: E402
from pdlab.metrics import per_request  # noqa: E402
from pdlab.run import pool_roles, run_serving  # noqa: E402
from pdlab.sim.profiles import load_profile  # noqa: E402
from pdlab.sim.servefit import DEFAULT_PARAMS, fit_measured, run_errors  # noqa: E402
from pdlab import sweep  # noqa: E402

DATA = ROOT / "data" / "measured" / "distserve-opt13b-a100"
KNEE_FACTOR = 3.0
GOAL = {"rel_error": 0.20, "knee_rps": 0.5}
SLO = {"ttft_s": 0.25, "tpot_s": 0.1}     # DistServe's chatbot SLO for OPT-13B (attainment is reported)
ENGINES = {
    "vllm": {"runs": ["vllm-100-1", "vllm-200-2", "vllm-300-3"],
             "config": dict(mode="aggregated"), "step": "step-profile-a100-80g-vllm.json"},
    "distserve": {"runs": ["distserve-c21d11-300-3", "distserve-c21d11-300-6", "distserve-c21d11-300-9"],
                  "config": dict(mode="disaggregated", prefill_tp=2, decode_tp=1),
                  "step": "step-profile-a100-80g-distserve.json"},
}


def cost_models(cfg, profile, eff=None):
    cms = {r: profile.cost_model(cfg.gpu, cfg.model, cfg.pool_tp(r), cfg.block_size) for r in pool_roles(cfg)}
    return {r: cm.with_efficiency(**eff) for r, cm in cms.items()} if eff else cms


def simulate(requests, cfg, cms):
    return per_request(run_serving(requests, cfg, cost_models=cms).sequences)


def p90(x):
    x = x[np.isfinite(x)]
    return float(np.percentile(x, 90)) if x.size else float("inf")


def knee(rates, ttft90, tpot90, ref=None):
    """First rate where TTFT p90 or TPOT p90 reaches KNEE_FACTOR x the reference (default: the
    value at the lowest rate), log-linear between the given rates; None if never."""
    rates = np.asarray(rates, float)
    best = None
    for ys, r0 in ((np.asarray(ttft90, float), None if ref is None else ref[0]),
                   (np.asarray(tpot90, float), None if ref is None else ref[1])):
        target = KNEE_FACTOR * (ys[0] if r0 is None else r0)
        ys = np.log(np.minimum(ys, 1e6))
        for i in range(1, len(rates)):
            if ys[i] >= np.log(target):
                lo = ys[i - 1]
                frac = 0.0 if ys[i] == lo else (np.log(target) - lo) / (ys[i] - lo)
                k = float(rates[i - 1] + np.clip(frac, 0, 1) * (rates[i] - rates[i - 1]))
                best = k if best is None else min(best, k)
                break
    return best


def attainment(ttft, tpot):
    ok = np.isfinite(ttft) & (ttft <= SLO["ttft_s"]) & (np.nan_to_num(tpot) <= SLO["tpot_s"])
    return float(ok.mean())


def _setup(name):
    spec = ENGINES[name]
    runs = [read_measured(DATA / f"{r}.csv") for r in spec["runs"]]
    cfg = ServingConfig(model="opt-13b", gpu="a100-80gb", **spec["config"]).validate()
    return spec, runs, cfg


def _variant(spec, vname):
    step = load_profile(DATA / spec["step"])
    return {"ideal": (load_profile(None), None), "step": (step, None),
            "step+fit": (step, DEFAULT_PARAMS["step-profile"]),
            "roofline": (load_profile(None), DEFAULT_PARAMS["efficiency"])}[vname]


def fold(task):
    """One (engine, profile variant, held-out run): fit on the others, replay all, sweep the rate."""
    name, vname, i, maxfev = task
    spec, runs, cfg = _setup(name)
    prof, params = _variant(spec, vname)
    rates = [r.rate for r in runs]
    measured_knee = knee(rates, [p90(r.ttft) for r in runs], [p90(r.tpot) for r in runs])
    held, train = runs[i], [r for j, r in enumerate(runs) if j != i]
    eff, fit_info = None, None
    if params:
        f = fit_measured(train, cfg, prof, params, maxfev=maxfev)
        eff = f.efficiency
        fit_info = {"efficiency": eff, "converged": f.converged, "loss": f.loss,
                    "start_loss": f.start_loss, "evaluations": f.evaluations}
    cms = cost_models(cfg, prof, eff)
    sims = [simulate(r.requests, cfg, cms) for r in runs]
    err = run_errors(held, sims[i])
    s_ttft, s_tpot = [p90(s["ttft"]) for s in sims], [p90(s["tpot"]) for s in sims]
    out = {"held_out": held.name, "trained_on": [r.name for r in train] if params else [], "fit": fit_info,
           "held_out_errors": {m: {p: err[m][p]["rel_error"] for p in ("p50", "p90")} for m in ("ttft", "tpot")},
           "below_saturation": measured_knee is None or held.rate < measured_knee,
           "simulated_at_measured_rates": {"ttft_p90_s": s_ttft, "tpot_p90_s": s_tpot,
                                           "slo_attainment": [attainment(s["ttft"], s["tpot"]) for s in sims]},
           "knee_rps_at_measured_rates": knee(rates, s_ttft, s_tpot)}
    big = max(runs, key=lambda r: len(r.requests))
    sweep = np.round(np.arange(0.5, 1.6 * max(rates) + 1e-9, 0.1 if max(rates) < 5 else 0.25), 3)
    sw = [simulate([replace(q, arrival=q.arrival * big.rate / r) for q in big.requests], cfg, cms) for r in sweep]
    out["knee_rps_sweep"] = knee(sweep, [p90(s["ttft"]) for s in sw], [p90(s["tpot"]) for s in sw],
                                 ref=(s_ttft[0], s_tpot[0]))
    out["sweep"] = {"rates_rps": sweep.tolist(), "ttft_p90_s": [p90(s["ttft"]) for s in sw],
                    "tpot_p90_s": [p90(s["tpot"]) for s in sw]}
    return out


def summarise_variant(folds, measured_knee, params):
    """Worst held-out error below saturation and the knee errors of one variant's folds. The knee
    is judged two ways: interpolated at the measured rates like the measurement (the same method),
    and on the fine rate sweep."""
    below = [f for f in folds if f["below_saturation"]]
    worst = max((abs(v) for f in below for e in f["held_out_errors"].values() for v in e.values()), default=None)
    err_at = [None if f["knee_rps_at_measured_rates"] is None else f["knee_rps_at_measured_rates"] - measured_knee
              for f in folds]
    err_sw = [None if f["knee_rps_sweep"] is None else f["knee_rps_sweep"] - measured_knee for f in folds]

    def ok(errs):
        return all(e is not None and abs(e) <= GOAL["knee_rps"] for e in errs)

    latency_ok = worst is not None and worst <= GOAL["rel_error"]
    return {"params": list(params) if params else [], "folds": folds,
            "worst_abs_rel_error_below_saturation": worst,
            "knee_error_rps_at_measured_rates": err_at, "knee_error_rps_sweep": err_sw,
            "meets_latency_goal": bool(latency_ok), "meets_knee_goal_at_measured_rates": ok(err_at),
            "meets_knee_goal_sweep": ok(err_sw), "meets_goal": bool(latency_ok and ok(err_at) and ok(err_sw))}


def resummarise(path):
    """Recompute every variant's summary from the folds stored in a results file."""
    res = json.loads(Path(path).read_text())
    for name, eng in res["engines"].items():
        for vname, v in eng["variants"].items():
            eng["variants"][vname] = summarise_variant(v["folds"], eng["measured"]["knee_rps"], v["params"])
    Path(path).write_text(json.dumps(res, indent=1) + "\n")


def summarise_engine(name, variants, folds_by_variant):
    spec, runs, cfg = _setup(name)
    rates = [r.rate for r in runs]
    m_ttft, m_tpot = [p90(r.ttft) for r in runs], [p90(r.tpot) for r in runs]
    measured_knee = knee(rates, m_ttft, m_tpot)
    out = {"runs": [r.describe() for r in runs], "config": dict(spec["config"]), "step_profile": spec["step"],
           "measured": {"rates_rps": rates, "ttft_p90_s": m_ttft, "tpot_p90_s": m_tpot,
                        "slo_attainment": [attainment(r.ttft, r.tpot) for r in runs], "knee_rps": measured_knee},
           "variants": {}}
    for vname in variants:
        _, params = _variant(spec, vname)
        out["variants"][vname] = summarise_variant(folds_by_variant[vname], measured_knee, params)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--roofline", default="vllm", help="engines whose roofline factors are also fitted (slower; '' for none)")
    ap.add_argument("--jobs", type=int, default=1, help="folds run in parallel (processes)")
    ap.add_argument("--variants", default="ideal,step,step+fit,roofline", help="profile variants to evaluate")
    ap.add_argument("--add", action="store_true", help="add these variants to the results already in --out")
    ap.add_argument("--max-evals", type=int, default=300, help="simulations per optimiser start")
    ap.add_argument("--engines", default="vllm,distserve")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "fidelity-measured-cpu-2026-12-07.json"))
    ap.add_argument("--resummarise", action="store_true", help="only recompute the summaries in --out from its folds")
    args = ap.parse_args()
    if args.resummarise:
        return resummarise(args.out)
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)

    res = {"what": "leave-one-rate-out fidelity of pdlab's simulator against DistServe's measured runs of vLLM "
                   "and DistServe (OPT-13B, A100-80GB, ShareGPT, Poisson)",
           "clock": "simulated (cost model: opt-13b on a100-80gb) on the CPU vs measured on NVIDIA A100-80GB SXM "
                    "(DistServe authors, data/measured/)",
           "knee": f"lowest rate where TTFT p90 or TPOT p90 reaches {KNEE_FACTOR:g}x its value at the lowest measured "
                   "rate, log-linear between rates",
           "goal": GOAL, "slo_for_attainment": SLO,
           "date": dt.date.today().isoformat(), "python": platform.python_version(), "numpy": np.__version__,
           "scipy": scipy.__version__, "machine": platform.machine(),
           "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
           "engines": {}}
    tasks, variants = [], {}
    for name in args.engines.split(","):
        variants[name] = [v for v in ["ideal", "step", "step+fit"] + (["roofline"] if name in args.roofline.split(",") else [])
                          if v in args.variants.split(",")]
        tasks += [(name, v, i, args.max_evals) for v in variants[name] for i in range(len(ENGINES[name]["runs"]))]
    folds = sweep.map(fold, tasks, jobs=args.jobs, desc="folds")
    for (name, v, i, _), f in zip(tasks, folds):
        e = f["held_out_errors"]
        log(f"{name} {v} held out {f['held_out']}: " + ", ".join(
            f"{m} p50 {100 * x['p50']:+.0f}% p90 {100 * x['p90']:+.0f}%" for m, x in e.items())
            + f"; knee {f['knee_rps_at_measured_rates']} / sweep {f['knee_rps_sweep']}"
            + (f"; fit {f['fit']['efficiency']}" if f["fit"] else ""))
    old = json.loads(Path(args.out).read_text()) if args.add and Path(args.out).exists() else None
    for name in variants:
        by_v = {v: [f for (n, vv, _, _), f in zip(tasks, folds) if n == name and vv == v] for v in variants[name]}
        res["engines"][name] = summarise_engine(name, variants[name], by_v)
        if old and name in old["engines"]:        # --add: these variants beside the ones already there
            res["engines"][name]["variants"] = {**old["engines"][name]["variants"], **res["engines"][name]["variants"]}
    if old:
        res["engines"] = {**old["engines"], **res["engines"]}
        log(f"{name}: measured knee {res['engines'][name]['measured']['knee_rps']:.2f} req/s")
    res["seconds"] = round(time.time() - t0, 1)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
