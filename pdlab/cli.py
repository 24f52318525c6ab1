"""pdlab's command line.

    pdlab simulate   serve a workload with one mode on the cost-model clock (or the real engine)
    pdlab goodput    the highest request rate that meets every SLO
    pdlab demo       the three modes side by side, a table here and an HTML report
    pdlab generate   stream text from the tiny model through the paged engine
    pdlab calibrate  fit the cost model to steps measured on this machine (--measured: to served runs)
    pdlab compare    simulated vs measured TTFT/TPOT/E2E of measured serving runs

Bad input gets one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from .errors import PdlabError

EXIT_USAGE = 2
EXIT_NOTHING_SERVED = 1     # the run itself worked; every request was rejected
EXIT_INTERRUPTED = 130      # Ctrl-C, as a shell reports SIGINT
DEFAULT_RATE = 4.0          # req/s where neither --rate nor a trace's timestamps give one


class UsageError(PdlabError):
    """A flag argparse could not read; its message is already one complete line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, not usage + message
        raise UsageError(f"{self.prog}: error: {message}")


def _positive_int(name):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got '{text}'") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1, got {v}")
        return v
    return parse


def _positive_float(name):
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got '{text}'") from None
        if not v > 0 or v == float("inf"):
            raise argparse.ArgumentTypeError(f"{name} must be > 0, got {text}")
        return v
    return parse


def _nonneg_float(name):
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got '{text}'") from None
        if not v >= 0 or v == float("inf"):
            raise argparse.ArgumentTypeError(f"{name} must be >= 0, got {text}")
        return v
    return parse


def add_serving_args(p: argparse.ArgumentParser, rate: bool = True, workload: bool = True) -> None:
    g = p.add_argument_group("serving")
    g.add_argument("--mode", default="chunked", help="aggregated | chunked | disaggregated (default chunked)")
    g.add_argument("--model", default="llama-3-8b", help="model preset (default llama-3-8b)")
    g.add_argument("--gpu", default="h100", help="GPU preset: h200 h100 a100-80gb l4 t4 cpu (default h100)")
    g.add_argument("--num-gpus", type=_positive_int("--num-gpus"), default=None,
                   help="replicas behind the router (disaggregated: a cap on prefill + decode)")
    g.add_argument("--prefill-gpus", type=_positive_int("--prefill-gpus"), default=None,
                   help="disaggregated: replicas in the prefill pool (default 1)")
    g.add_argument("--decode-gpus", type=_positive_int("--decode-gpus"), default=None,
                   help="disaggregated: replicas in the decode pool (default 1)")
    g.add_argument("--tp", type=_positive_int("--tp"), default=1, help="tensor parallelism per replica")
    g.add_argument("--prefill-tp", type=_positive_int("--prefill-tp"), default=None,
                   help="disaggregated: tensor parallelism of each prefill replica (default --tp)")
    g.add_argument("--decode-tp", type=_positive_int("--decode-tp"), default=None,
                   help="disaggregated: tensor parallelism of each decode replica (default --tp)")
    g.add_argument("--first-token-from", default="prefill", metavar="prefill|decode",
                   help="disaggregated: the prefill instance streams the first token (DistServe, default) or "
                        "the decode instance returns it after the KV transfer (vLLM/SGLang P/D proxies)")
    g.add_argument("--proxy-overhead", type=_nonneg_float("--proxy-overhead"), default=0.0, metavar="SECONDS",
                   help="disaggregated: proxy round trips between a prefill finishing and its decode starting")
    g.add_argument("--link", default="nvlink", help="KV link: nvlink pcie4 pcie5 ib-ndr eth-100g eth-25g, or GB/s")
    g.add_argument("--chunk-size", type=_positive_int("--chunk-size"), default=None,
                   help="token budget per iteration (chunked, default 512) or prefill chunk (disaggregated)")
    g.add_argument("--max-num-seqs", type=_positive_int("--max-num-seqs"), default=256,
                   help="most sequences a worker runs at once: the decode batch's cap (default 256)")
    g.add_argument("--block-size", type=_positive_int("--block-size"), default=16,
                   help="tokens per paged KV block (default 16)")
    g.add_argument("--num-blocks", type=_positive_int("--num-blocks"), default=None,
                   help="KV blocks per worker (default: what fits in GPU memory)")
    g.add_argument("--router", default="least-loaded", help="least-loaded | round-robin")
    g.add_argument("--prefix-cache", action="store_true", help="reuse KV of shared prompt prefixes")
    g.add_argument("--profile", default=None, help="cost-model profile: fitted efficiency JSON (pdlab calibrate) or "
                   "a step profile (data/profiles/*.json; default: the ideal engine)")
    g.add_argument("--exact-steps", action="store_true",
                   help="simulate every decode sequence by sequence (slower; same results)")
    if not workload:   # the workload comes from elsewhere (measured runs)
        p.add_argument("--slo", action="append", default=[], metavar="METRIC:pNN:SECONDS", help=argparse.SUPPRESS)
        p.add_argument("--json", action="store_true", help="print one JSON object")
        return
    w = p.add_argument_group("workload")
    if rate:
        w.add_argument("--rate", type=_positive_float("--rate"), default=None,
                       help="Poisson arrivals per second (default: the trace's own, else 4)")
    w.add_argument("--num-requests", type=_positive_int("--num-requests"), default=None,
                   help="requests to simulate (default 1000, or the whole trace)")
    src = w.add_mutually_exclusive_group()
    src.add_argument("--workload", default=None, help="length preset: sharegpt arxiv azure-conv mooncake-conv chat-long (default sharegpt)")
    src.add_argument("--trace", default=None, help="CSV (arrived_at,num_prefill_tokens,num_decode_tokens) or Mooncake JSONL")
    w.add_argument("--input-len", type=_positive_int("--input-len"), default=None, help="fixed prompt length")
    w.add_argument("--output-len", type=_positive_int("--output-len"), default=None, help="fixed output length")
    w.add_argument("--burstiness", type=_positive_float("--burstiness"), default=1.0,
                   help="squared CV of inter-arrival gaps: 1 Poisson, >1 bursty")
    w.add_argument("--seed", type=int, default=0)
    p.add_argument("--slo", action="append", default=[], metavar="METRIC:pNN:SECONDS",
                   help="e.g. ttft:p90:0.4 (metrics ttft tpot itl e2e); repeatable")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def pool_sizes(args) -> tuple[int, int]:
    """--prefill-gpus/--decode-gpus: only for disaggregated serving; one without the other says
    what the other defaults to."""
    pg, dg = args.prefill_gpus, args.decode_gpus
    if args.mode != "disaggregated":
        if pg is not None or dg is not None:
            given = " and ".join(f for f, v in (("--prefill-gpus", pg), ("--decode-gpus", dg)) if v is not None)
            raise PdlabError(f"{given} size the pools of --mode disaggregated; --mode {args.mode} "
                             f"has no pools (use --num-gpus for its replicas)")
        return 1, 1
    if (pg is None) != (dg is None):
        given, missing = ("--prefill-gpus", "--decode-gpus") if dg is None else ("--decode-gpus", "--prefill-gpus")
        print(f"pdlab: note: {given} given without {missing}: {missing} 1 (the default)", file=sys.stderr)
    return pg or 1, dg or 1


def config_from(args):
    from .config import ServingConfig
    prefill_gpus, decode_gpus = pool_sizes(args)
    return ServingConfig(mode=args.mode, model=args.model, gpu=args.gpu, tp=args.tp, num_gpus=args.num_gpus,
                         prefill_gpus=prefill_gpus, decode_gpus=decode_gpus,
                         chunk_size=args.chunk_size, max_num_seqs=args.max_num_seqs,
                         block_size=args.block_size, num_blocks=args.num_blocks, link=args.link,
                         router=args.router, prefix_cache=args.prefix_cache, profile=args.profile,
                         prefill_tp=args.prefill_tp, decode_tp=args.decode_tp,
                         first_token_from=args.first_token_from, proxy_overhead_s=args.proxy_overhead,
                         exact_steps=args.exact_steps).validate()


def requests_from(args, rate: float | None):
    """The workload the flags describe; ``rate`` overrides trace timing when given."""
    from . import traces
    from . import workload as wl
    if (args.input_len is None) != (args.output_len is None):
        raise PdlabError("--input-len and --output-len go together")
    if args.input_len is not None and (args.workload or args.trace):
        raise PdlabError("--input-len/--output-len replace --workload/--trace: give one or the other")
    n = args.num_requests
    if args.trace:
        reqs = traces.read_trace(args.trace, show_progress=True)
        if n is not None:
            reqs = reqs[:n]
        if rate is not None or not traces.has_arrivals(reqs):
            if rate is None:    # a deliberate lengths-only CSV: say that the arrivals are ours
                print(f"pdlab: note: {args.trace} has no arrived_at column: arrivals are generated "
                      f"at {DEFAULT_RATE:g} req/s (seed {args.seed}); --rate sets the rate", file=sys.stderr)
            reqs = wl.with_rate(reqs, rate or DEFAULT_RATE, args.seed, args.burstiness)
        else:
            t0 = reqs[0].arrival
            reqs = [replace(r, arrival=r.arrival - t0) for r in reqs]
        return reqs
    if args.input_len is not None:
        lengths = wl.Lengths("fixed", a=args.input_len, b=args.output_len)
    else:
        lengths = wl.preset_lengths(args.workload or "sharegpt")
    return wl.make_requests(n or 1000, rate or DEFAULT_RATE, lengths, args.seed, args.burstiness,
                            show_progress=True)


def workload_label(args, rate: float | None, reqs) -> str:
    """What a run served, defaults named as such: the header of ``simulate``'s table."""
    from .traces import has_arrivals
    if args.trace:
        what = f"trace {args.trace}"
        if rate is None and has_arrivals(reqs):
            return f"{what} at its own timestamps"
    elif args.input_len is not None:
        what = f"fixed lengths {args.input_len} in / {args.output_len} out"
    else:
        what = f"workload {args.workload}" if args.workload else "workload sharegpt (the default)"
    shape = "Poisson" if args.burstiness == 1 else f"bursty (CV^2 {args.burstiness:g})"
    at = f"{rate:g} req/s" if rate is not None else f"{DEFAULT_RATE:g} req/s (the default)"
    return f"{what}, {shape} arrivals at {at}"


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
        print(f"{summary['clock']}{prof}, {tp}, {len(reqs)} requests: {workload_label(args, args.rate, reqs)}")
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
    for name, help_ in (("generate", "stream text from the tiny model through the paged engine"),
                        ("calibrate", "fit the cost model to steps measured on this machine, or (--measured) to measured serving runs")):
        q = sub.add_parser(name, help=help_)
        if argv and argv[0] == name == "calibrate" and "--measured" in argv:
            fidelity.add_calibrate_measured(q)            # torch-free: a fit to measured serving runs
            add_serving_args(q, workload=False)
            q.set_defaults(func=lambda a: fidelity.cmd_calibrate_measured(a, config_from(a)))
        elif argv and argv[0] == name:
            import importlib
            mod = importlib.import_module(f"pdlab.engine.{name}")
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
