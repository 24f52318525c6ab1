"""pdlab's command line.

    pdlab simulate   serve a workload with one mode on the cost-model clock (or the real engine)
    pdlab goodput    the highest request rate that meets every SLO
    pdlab demo       the three modes side by side, a table here and an HTML report
    pdlab generate   stream text from the tiny model through the paged engine
    pdlab calibrate  fit the cost model to steps measured on this machine (--measured: to served runs)
    pdlab compare    simulated vs measured TTFT/TPOT/E2E of measured serving runs
    pdlab diagnose   which phase is hurting: a trace (simulated) or measured latencies, the symptom table
    pdlab plan       the best configuration for a workload on N GPUs under SLOs (goodput per GPU)
    pdlab serve-disagg  prefill and decode workers in separate processes, KV over torch.distributed

Bad input gets one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from .errors import PdlabError
from .options import _positive_int, add_serving_args, config_from, requests_from, workload_label

EXIT_USAGE = 2
EXIT_NOTHING_SERVED = 1     # the run itself worked; every request was rejected
EXIT_INTERRUPTED = 130      # Ctrl-C, as a shell reports SIGINT


class UsageError(PdlabError):
    """A flag argparse could not read; its message is already one complete line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, not usage + message
        raise UsageError(f"{self.prog}: error: {message}")


def rejection_lines(result) -> list[str]:
    """Rejected requests counted per reason (reasons that differ only in their numbers are one
    reason; the largest request stands for its group)."""
    import re
    from collections import defaultdict

    from .request import Status
    groups: dict[str, list] = defaultdict(list)
    for seq in result.sequences:
        if seq.status is Status.REJECTED:
            groups[re.sub(r"\d+", "#", seq.reject_reason or "no reason given")].append(seq)
    lines = []
    for seqs in sorted(groups.values(), key=len, reverse=True):
        big = max(seqs, key=lambda q: q.prompt_len + q.max_new_tokens)
        more = f" (the largest of {len(seqs)})" if len(seqs) > 1 else ""
        lines.append(f"  {len(seqs)} rejected: {big.reject_reason}{more}")
    return lines


def overload_warning(result) -> str | None:
    from .analysis import overload
    o = overload(result)
    if o is None:
        return None
    return (f"pdlab: warning: overloaded: the requests offer {o['offered_tok_s']:,.0f} tok/s (prompt + "
            f"output) but the deployment served {o['served_tok_s']:,.0f} tok/s while they arrived "
            f"({o['ratio']:.1f}x more than it serves); queues grow through the run (median TTFT "
            f"{o['ttft_p50_first_quarter_s']:.2f} s for the first quarter of arrivals, "
            f"{o['ttft_p50_last_quarter_s']:.2f} s for the last), so latencies depend on the run's length")


def cmd_simulate(args) -> int:
    from .metrics import SLO
    from .report import print_table
    from .run import run_serving
    from .sim.profiles import load_profile
    slos = [SLO.parse(s) for s in args.slo]
    cfg = config_from(args)
    reqs = requests_from(args, args.rate)
    factory, clock, device = None, f"simulated (cost model: {cfg.gpu}, {cfg.model})", cfg.gpu
    if args.executor == "model":
        factory, clock, device, reqs = engine_setup(args, cfg, reqs)
    result = run_serving(reqs, cfg, factory, clock=clock)
    summary = result.summary(slos)
    summary["clock"] = clock
    summary["model"], summary["gpu"] = cfg.model, device
    summary["profile"] = load_profile(cfg.profile).name if args.executor != "model" else "measured"
    if args.json:
        print(json.dumps(summary, indent=None, sort_keys=True))
    else:
        tp = f"tp={cfg.tp}"
        if cfg.pool_tp("prefill") != cfg.pool_tp("decode") or cfg.pool_tp("prefill") != cfg.tp:
            tp = f"prefill tp={cfg.pool_tp('prefill')}, decode tp={cfg.pool_tp('decode')}"
        if cfg.per_pool:
            tp += f", first token from {cfg.first_token_from}"
            if cfg.proxy_overhead_s:
                tp += f" (+{cfg.proxy_overhead_s:g}s proxy)"
        prof = f", profile {summary['profile']}" if args.executor != "model" else ""
        print(f"{summary['clock']}{prof}, {tp}, {len(reqs)} requests: {workload_label(args, args.rate)}")
        print_table([summary])
        for r in summary.get("slo_attainment", {}).get("slos", []):
            v = "never" if r["value_s"] is None else f"{r['value_s']:.3f}s"
            print(f"SLO {r['metric']} p{r['percentile']:g} <= {r['target_s']:g}s: {v}  {'met' if r['met'] else 'MISSED'}")
        if summary["rejected"]:
            print(f"{summary['rejected']} of {len(reqs)} requests rejected:")
            print("\n".join(rejection_lines(result)))
    warning = overload_warning(result)
    if warning:
        print(warning, file=sys.stderr)
    if not summary["completed"]:
        print(f"pdlab: error: nothing was served: all {len(reqs)} requests were rejected"
              + ("" if not args.json else " (reject_reasons in the JSON)"), file=sys.stderr)
        return EXIT_NOTHING_SERVED
    return 0


def engine_setup(args, cfg, reqs):
    """The real engine behind the same loop: the model preset named by --model (``tiny`` loads the
    trained weights; other presets get seeded random weights), prompts of random token ids."""
    import numpy as np

    from .engine import model as M
    from .engine.executor import default_device, factory
    if cfg.num_blocks is None:
        cfg.num_blocks = 4096              # KV blocks per worker; the cost model's GPU memory does not apply
    device = default_device()
    model = M.build(cfg.model, device=device, seed=args.seed)   # tiny: the trained weights
    rng = np.random.default_rng(args.seed)
    vocab = model.cfg.vocab_size
    reqs = [replace(r, prompt_ids=tuple(int(t) for t in rng.integers(0, vocab, r.prompt_len))) for r in reqs]
    name = __import__("torch").cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    clock = f"measured (real engine: {cfg.model} on {name}, {args.backend} attention)"
    return factory(model, backend=args.backend, device=device), clock, name, reqs


def _goodput_point(job) -> bool:
    """Whether every SLO holds at one rate (module level: it runs on other processes or Dask)."""
    from .metrics import summarize
    from .run import run_serving
    from .workload import with_rate
    base, rate, cfg, slos, seed, burstiness = job
    res = run_serving(with_rate(base, rate, seed, burstiness), cfg)
    return summarize(res.sequences, slos, cfg.gpus)["slo_attainment"]["all_met"]


def cmd_goodput(args) -> int:
    from . import sweep
    from .metrics import SLO, goodput_search_parallel
    if not args.slo:
        raise PdlabError("goodput needs at least one --slo METRIC:pNN:SECONDS")
    slos = [SLO.parse(s) for s in args.slo]
    cfg = config_from(args)
    args.num_requests = args.num_requests or 500
    base = requests_from(args, 1.0)
    jobs = sweep.check_jobs(args.jobs)
    # the rates the search may ask next are simulated together, one per core; the answer is the
    # sequential search's whatever the number of jobs
    with sweep.mapper(jobs if args.dask is None else 1, args.dask) as run_all:
        def meets_many(rates):
            return run_all(_goodput_point, [(base, r, cfg, slos, args.seed, args.burstiness) for r in rates])
        g, asked = goodput_search_parallel(meets_many, width=jobs, start=1.0)
    out = {"goodput_rps": g, "goodput_rps_per_gpu": g / cfg.gpus, "gpus": cfg.gpus, "mode": cfg.mode,
           "model": cfg.model, "gpu": cfg.gpu, "slos": [str(s) for s in slos], "num_requests": len(base),
           "rates_tried": len(set(asked)), "clock": f"simulated (cost model: {cfg.gpu}, {cfg.model})"}
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        print(f"goodput {g:.2f} req/s ({g / cfg.gpus:.2f} per GPU, {cfg.gpus} GPUs, {cfg.mode}) "
              f"under {', '.join(out['slos'])}; simulated for {cfg.model} on {cfg.gpu}")
    return 0


def cmd_diagnose(args) -> int:
    from .diagnose import observe, render, report
    from .metrics import SLO
    slos = [SLO.parse(s) for s in args.slo]
    cfg = config_from(args)
    if args.trace_file and (args.trace or args.workload or args.input_len is not None):
        raise PdlabError("diagnose takes TRACE or --trace/--workload/--input-len, not both")
    path = args.trace_file or args.trace
    if path and observe.has_measured_columns(path):
        obs = observe.read_measured(path)
        if args.num_requests:
            raise PdlabError("--num-requests does not apply to measured latencies (they are what was measured)")
    else:
        args.trace = path
        obs = observe.simulate(requests_from(args, args.rate), cfg)
    rep = report(obs, cfg, slos)
    if args.html:
        render.html(rep, obs, args.html)
    if args.json:
        print(render.as_json(rep))
    else:
        print(render.text(rep))
        if args.html:
            print(f"figures: {args.html}")
    return 0


def cmd_plan(args) -> int:
    from .metrics import SLO
    from .plan import plan, render_text, space_from_args
    if not args.slo:
        raise PdlabError("plan needs at least one --slo METRIC:pNN:SECONDS")
    if args.num_gpus is None:
        raise PdlabError("plan needs --num-gpus N (the GPUs to plan for)")
    slos = [SLO.parse(s) for s in args.slo]
    args.num_requests = args.num_requests or 1000
    base = requests_from(args, 1.0)
    space = space_from_args(args)
    res = plan(base, space, slos, count=args.count, jobs=args.jobs, dask=args.dask, seed=args.seed,
               burstiness=args.burstiness, refine_top=args.refine_top)
    if args.html:
        from .viz.diagnosis import pareto
        pareto(res).write_html(args.html, include_plotlyjs="inline")
    if args.json:
        print(json.dumps(res, sort_keys=True))
    else:
        print(render_text(res))
        if args.html:
            print(f"Pareto figure: {args.html}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo
    return run_demo(args)


def build_parser(argv=None) -> argparse.ArgumentParser:
    from . import __version__
    p = _Parser(prog="pdlab", description="Prefill/decode serving lab kit")
    p.add_argument("--version", action="version", version=f"pdlab {__version__}")
    sub = p.add_subparsers(dest="cmd", parser_class=_Parser)
    s = sub.add_parser("simulate", help="serve a workload with one mode")
    add_serving_args(s)
    s.add_argument("--executor", choices=["costmodel", "model"], default="costmodel",
                   help="costmodel: simulated clock; model: the real toy engine (measured)")
    s.add_argument("--backend", choices=["torch", "numba"], default="torch",
                   help="attention backend of the real engine (numba: the CUDA kernels)")
    s.set_defaults(func=cmd_simulate)
    g = sub.add_parser("goodput", help="highest request rate meeting every SLO")
    add_serving_args(g, rate=False)
    g.add_argument("--jobs", type=_positive_int("--jobs"), default=None,
                   help="simulations at a time: processes here, or tasks on the --dask cluster (default: every core)")
    g.add_argument("--dask", default=None, metavar="ADDRESS",
                   help="run the simulations on a Dask cluster (scheduler address; pdlab[dask])")
    g.set_defaults(func=cmd_goodput)
    dg = sub.add_parser("diagnose", help="which phase is hurting: evidence and the symptom table for a trace")
    dg.add_argument("trace_file", nargs="?", default=None, metavar="TRACE",
                    help="trace CSV/JSONL (simulated on the deployment), a CSV with measured ttft_s/tpot_s, "
                         "or a vLLM bench serve --save-result --save-detailed JSON")
    add_serving_args(dg)
    dg.add_argument("--html", default=None, metavar="FILE", help="also write the report with its figures")
    dg.set_defaults(func=cmd_diagnose)
    pl = sub.add_parser("plan", help="search modes, chunk budgets, P:D splits, TP and routers for goodput per GPU")
    add_serving_args(pl, rate=False)
    pl.add_argument("--count", choices=["request", "percentile"], default="request",
                    help="request: the share of requests meeting every SLO at once must reach the SLOs' "
                         "percentile (DistServe); percentile: each SLO's percentile on its own (default request)")
    pl.add_argument("--jobs", type=_positive_int("--jobs"), default=None, help="processes (default: every core)")
    pl.add_argument("--dask", default=None, metavar="ADDRESS", help="run the search on a Dask scheduler")
    pl.add_argument("--refine-top", type=_positive_int("--refine-top"), default=1,
                    help="refine at least this many coarse leaders to 2%% (besides every configuration that "
                         "could still win; default 1)")
    pl.add_argument("--html", default=None, metavar="FILE", help="write the Pareto figure")
    pl.set_defaults(func=cmd_plan)
    d = sub.add_parser("demo", help="the three modes side by side + an HTML report")
    d.add_argument("--out", default="pdlab-demo.html", help="report file (default pdlab-demo.html)")
    d.add_argument("--num-requests", type=_positive_int("--num-requests"), default=600)
    d.set_defaults(func=cmd_demo)
    from . import fidelity
    c = sub.add_parser("compare", help="simulated vs measured latencies of measured serving runs")
    fidelity.add_compare(c)
    add_serving_args(c, workload=False)
    c.set_defaults(func=lambda a: fidelity.cmd_compare(a, config_from(a)))
    # the engine commands import torch: only load them when asked for
    argv = sys.argv[1:] if argv is None else argv
    for name, module, help_ in (
            ("generate", "engine.generate", "stream text from the tiny model through the paged engine"),
            ("calibrate", "engine.calibrate",
             "fit the cost model to steps measured on this machine, or (--measured) to measured serving runs"),
            ("serve-disagg", "dist.serve", "disaggregated serving for real: worker processes, KV over torch.distributed")):
        q = sub.add_parser(name, help=help_)
        if argv and argv[0] == name == "calibrate" and "--measured" in argv:
            fidelity.add_calibrate_measured(q)            # torch-free: a fit to measured serving runs
            add_serving_args(q, workload=False)
            q.set_defaults(func=lambda a: fidelity.cmd_calibrate_measured(a, config_from(a)))
        elif argv and argv[0] == name:
            import importlib
            mod = importlib.import_module(f"pdlab.{module}")
            mod.add_arguments(q)
            q.set_defaults(func=mod.run)
    return p


def main(argv=None) -> int:
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_USAGE
        return args.func(args)
    except UsageError as e:
        print(e, file=sys.stderr)
        return EXIT_USAGE
    except PdlabError as e:
        print(f"pdlab: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        # on a terminal, end the line a progress bar or ^C left open
        print(("\n" if sys.stderr.isatty() else "") + "pdlab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
