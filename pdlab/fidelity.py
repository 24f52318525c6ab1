"""The simulator against measured serving runs, on the command line:

    pdlab compare --measured FILE [FILE ...] --profile P --model M --gpu G --mode MODE [--json] [--html OUT]
        replay each run's arrivals and lengths on the simulated clock and report simulated vs
        measured TTFT, TPOT and E2E (p50/p90/p99, relative errors), with CDF overlays
    pdlab calibrate --measured FILE [FILE ...] --model M --gpu G --mode MODE [--profile BASE] -o PROFILE
        fit the profile's factors and overheads so the replays match the measured TTFT and TPOT
        quantiles (``pdlab.sim.servefit``) and write the profile with what it was fitted on

Torch-free: the measured runs come from files (``pdlab.measured``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import PdlabError


def add_common(p: argparse.ArgumentParser) -> None:
    """--measured; the serving flags (``options.add_serving_args``) are added by the CLI."""
    p.add_argument("--measured", nargs="+", required=True, metavar="FILE",
                   help="measured runs: CSV (arrived_at,num_prefill_tokens,num_decode_tokens,measured_ttft_ms,"
                        "measured_tpot_ms) or vLLM bench serve --save-detailed JSON")


def _runs(args):
    from .measured import read_measured
    return [read_measured(f) for f in args.measured]


def compare(runs, config, profile_path: str | None = None) -> dict:
    """Simulated vs measured percentiles of every run under ``profile_path`` (None: ideal)."""
    from dataclasses import replace

    from .metrics import per_request
    from .run import run_serving, sim_clock
    from .sim.profiles import load_profile
    from .sim.servefit import run_errors
    cfg = replace(config, profile=profile_path).validate()
    prof = load_profile(profile_path)
    out = {"profile": prof.name, "profile_kind": prof.kind, "mode": cfg.mode, "model": cfg.model, "gpu": cfg.gpu,
           "gpus": cfg.gpus, "clock": sim_clock(cfg) + f", profile {prof.name}", "runs": []}
    if cfg.mode == "disaggregated":
        out.update(prefill_tp=cfg.pool_tp("prefill"), decode_tp=cfg.pool_tp("decode"),
                   first_token_from=cfg.first_token_from, proxy_overhead_s=cfg.proxy_overhead_s)
    arrays = []
    for run in runs:
        sim = per_request(run_serving(run.requests, cfg).sequences)
        arrays.append(sim)
        out["runs"].append(run_errors(run, sim))
    return out, arrays


def _print_compare(out: dict) -> None:
    print(f"{out['clock']} vs measured")
    for r in out["runs"]:
        print(f"{r['run']}: {r['requests']} requests at {r['rate_rps']:.2f} req/s"
              + (f", {r['rejected']} rejected in the simulation" if r["rejected"] else ""))
        print(f"  {'':5s} {'':4s} {'measured':>10s} {'simulated':>10s} {'error':>8s}")
        for m in ("ttft", "tpot", "e2e"):
            for p, v in r[m].items():
                sim = "-" if v["simulated_s"] is None else f"{1e3 * v['simulated_s']:.1f}"
                err = "-" if v["rel_error"] is None else f"{100 * v['rel_error']:+.0f}%"
                print(f"  {m.upper():5s} {p:4s} {1e3 * v['measured_s']:10.1f} {sim:>10s} {err:>8s}")
    print("(latencies in ms; error = simulated / measured - 1)")


def cmd_compare(args, cfg) -> int:
    runs = _runs(args)
    out, arrays = compare(runs, cfg, args.profile)
    if args.html:
        write_html(args.html, runs, arrays, out)
        out["html"] = str(args.html)
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        _print_compare(out)
        if args.html:
            print(f"wrote {args.html}")
    return 0


def write_html(path, runs, arrays, out: dict) -> None:
    import html

    from .viz.fidelity import cdf_overlay
    parts = []
    for i, (run, sim, row) in enumerate(zip(runs, arrays, out["runs"])):
        meas = {"ttft": run.ttft, "tpot": run.tpot, "e2e": run.e2e}
        f = cdf_overlay(meas, {f"simulated ({out['profile']})": sim}, measured_label=f"measured ({run.name})",
                        clock=out["clock"], title=f"{run.name}: {row['rate_rps']:.2f} req/s")
        parts.append(f.to_html(full_html=False, include_plotlyjs=(i == 0)))
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>pdlab compare</title></head><body>"
           f"<h1>simulated ({html.escape(out['profile'])}) vs measured</h1>{''.join(parts)}</body></html>")
    Path(path).write_text(doc)


def cmd_calibrate_measured(args, cfg) -> int:
    from .sim.profiles import load_profile
    from .sim.servefit import fit_measured, profile_json
    runs = _runs(args)
    prof = load_profile(args.profile)
    params = [p.strip() for p in args.params.split(",")] if args.params else None

    def show(i, loss):
        if i % 25 == 0:
            print(f"  evaluation {i}: loss {loss:.4f}", file=sys.stderr, flush=True)

    fit = fit_measured(runs, cfg, prof, params, maxfev=args.max_evals, progress=None if args.quiet else show)
    if not fit.converged:
        raise PdlabError(f"the fit did not converge after {fit.evaluations} simulations ({fit.message}; loss "
                         f"{fit.start_loss:.4f} -> {fit.loss:.4f}); nothing written: try --max-evals or fewer --params")
    data = profile_json(fit, prof, cfg, runs, engine=args.engine or "")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"fitted {', '.join(f'{k}={v:.4g}' for k, v in fit.efficiency.items())} on {len(runs)} run(s) "
          f"({fit.evaluations} simulations, loss {fit.start_loss:.4f} -> {fit.loss:.4f})")
    for r in fit.per_run:
        print(f"  {r['run']}: " + ", ".join(f"{m.upper()} p50 {100 * r[m]['p50']['rel_error']:+.0f}% "
                                           f"p90 {100 * r[m]['p90']['rel_error']:+.0f}%" for m in ("ttft", "tpot")))
    print(f"wrote {out}")
    return 0


def add_calibrate_measured(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("-o", "--out", required=True, help="profile JSON to write")
    p.add_argument("--params", default=None,
                   help="comma-separated terms to fit (default: mfu,mbu,decode_mbu,step_overhead_s,seq_overhead_s,"
                        "running_overhead_s for the roofline; step_overhead_s,running_overhead_s,token_overhead_s on a step profile)")
    p.add_argument("--max-evals", type=int, default=600, help="simulations the optimiser may run per start")
    p.add_argument("--engine", default=None, help="what was measured, recorded in the profile (e.g. 'vLLM 0.2')")
    p.add_argument("--quiet", action="store_true")


def add_compare(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("--html", default=None, metavar="FILE", help="write CDF overlays to an HTML file")
