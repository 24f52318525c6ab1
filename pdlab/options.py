"""The options every serving command shares (deployment, prefix reuse and routing, workload),
and what they build: a validated ``ServingConfig`` and the request list."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from .errors import PdlabError

DEFAULT_RATE = 4.0          # req/s where neither --rate nor a trace's timestamps give one

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
    g.add_argument("--tp", type=_positive_int("--tp"), default=1, help="tensor parallelism per replica (default 1)")
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
    g.add_argument("--router", default="least-loaded", help="least-loaded | round-robin | kv-aware | session (default least-loaded)")
    g.add_argument("--prefix-cache", action="store_true", help="reuse KV of shared prompt prefixes")
    _add_prefix_args(p)
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
    src.add_argument("--workload", default=None, help="length preset: sharegpt arxiv azure-conv mooncake-conv chat-long; "
                          "or sessions: chat-sessions agent-sessions (default sharegpt)")
    src.add_argument("--trace", default=None, help="CSV (arrived_at,num_prefill_tokens,num_decode_tokens) or Mooncake JSONL")
    w.add_argument("--input-len", type=_positive_int("--input-len"), default=None, help="fixed prompt length")
    w.add_argument("--output-len", type=_positive_int("--output-len"), default=None, help="fixed output length")
    w.add_argument("--burstiness", type=_positive_float("--burstiness"), default=1.0,
                   help="squared CV of inter-arrival gaps: 1 Poisson, >1 bursty")
    w.add_argument("--seed", type=int, default=0, help="seed of the arrivals and sampled lengths (default 0)")
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


def _add_prefix_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("prefix reuse and KV-aware routing")
    g.add_argument("--overlap-weight", type=_nonneg_float("--overlap-weight"), default=1.0,
                   help="kv-aware: weight of the blocks to prefill (cache overlap) in the cost (default 1)")
    g.add_argument("--load-weight", type=_nonneg_float("--load-weight"), default=1.0,
                   help="kv-aware: weight of the load terms (1: Dynamo's cost, 0: pure affinity)")
    g.add_argument("--router-temperature", type=_nonneg_float("--router-temperature"), default=0.0,
                   help="kv-aware: 0 takes the lowest cost, > 0 samples a softmax over costs")
    g.add_argument("--no-kv-events", dest="kv_events", action="store_false",
                   help="kv-aware without KV events: predict caches from the router's own decisions")
    g.add_argument("--router-ttl", type=_positive_float("--router-ttl"), default=120.0,
                   help="seconds a routed prefix is assumed cached without events (default 120)")
    g.add_argument("--offload-gb", type=_nonneg_float("--offload-gb"), default=0.0,
                   help="host-memory KV tier per replica in GB (needs --prefix-cache)")
    g.add_argument("--offload-link", default="pcie5", help="host <-> GPU link for the KV tier (default pcie5)")
    g.add_argument("--disagg-threshold", type=int, default=None, metavar="TOKENS",
                   help="disaggregated: prefill on the decode worker when the uncached prompt is at most this")


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
                         overlap_weight=args.overlap_weight, load_weight=args.load_weight,
                         router_temperature=args.router_temperature, kv_events=args.kv_events,
                         router_ttl=args.router_ttl, offload_gb=args.offload_gb, offload_link=args.offload_link,
                         disagg_threshold=args.disagg_threshold,
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
        args.trace_own_times = rate is None and traces.has_arrivals(reqs)   # for the run's header
        if not args.trace_own_times:
            if rate is None:    # a deliberate lengths-only CSV: say that the arrivals are ours
                print(f"pdlab: note: {args.trace} has no arrived_at column: arrivals are generated "
                      f"at {DEFAULT_RATE:g} req/s (seed {args.seed}); --rate sets the rate", file=sys.stderr)
            reqs = wl.with_rate(reqs, rate or DEFAULT_RATE, args.seed, args.burstiness)
        else:
            t0 = reqs[0].arrival
            reqs = [replace(r, arrival=r.arrival - t0) for r in reqs]
        return reqs
    from .sessions import SESSION_PRESETS, make_sessions
    if args.workload in SESSION_PRESETS:        # multi-turn sessions: --rate is sessions started per second
        return make_sessions(n or 1000, rate or 1.0, args.workload, args.seed)
    if args.input_len is not None:
        lengths = wl.Lengths("fixed", a=args.input_len, b=args.output_len)
    else:
        lengths = wl.preset_lengths(args.workload or "sharegpt")
    return wl.make_requests(n or 1000, rate or DEFAULT_RATE, lengths, args.seed, args.burstiness,
                            show_progress=True)


def workload_label(args, rate: float | None) -> str:
    """What a run served, defaults named as such: the header of ``simulate``'s table (after
    ``requests_from``, which says whether a trace kept its own timestamps)."""
    if args.trace:
        what = f"trace {args.trace}"
        if getattr(args, "trace_own_times", False):
            return f"{what} at its own timestamps"
        if rate is None:
            what += " (lengths only)"
    elif args.input_len is not None:
        what = f"fixed lengths {args.input_len} in / {args.output_len} out"
    else:
        what = f"workload {args.workload}" if args.workload else "workload sharegpt (the default)"
    shape = "Poisson" if args.burstiness == 1 else f"bursty (CV^2 {args.burstiness:g})"
    at = f"{rate:g} req/s" if rate is not None else f"{DEFAULT_RATE:g} req/s (the default)"
    return f"{what}, {shape} arrivals at {at}"
