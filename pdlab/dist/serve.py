"""``pdlab serve-disagg``: disaggregated serving for real, one process per worker.

    pdlab serve-disagg --prefill-workers 1 --decode-workers 1 --input-len 256 --output-len 32 --rate 4
    torchrun --nproc-per-node 3 -m pdlab serve-disagg --device cuda --backend nccl ...

Prefill workers compute prompts and return the first token; the KV blocks cross to a decode
worker over ``torch.distributed`` (gloo on CPUs, NCCL on GPUs), per layer or per block, and
decoding continues there. The metrics JSON is ``RunResult.summary()``, as for every other mode,
plus what the KV transfers took. ``--mode aggregated|chunked --replicas N`` serves the same
workload on N independent replicas in the same kind of processes (the fair comparison).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from ..errors import PdlabError
from . import kvwire


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..options import _positive_float, _positive_int
    g = p.add_argument_group("workers")
    g.add_argument("--prefill-workers", type=_positive_int("--prefill-workers"), default=1)
    g.add_argument("--decode-workers", type=_positive_int("--decode-workers"), default=1)
    g.add_argument("--mode", default="disaggregated", choices=["disaggregated", "aggregated", "chunked"],
                   help="aggregated/chunked: --replicas independent workers instead of two pools")
    g.add_argument("--replicas", type=_positive_int("--replicas"), default=None,
                   help="workers of aggregated/chunked mode (default prefill + decode workers)")
    g.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cpu, or cuda: one GPU per worker")
    g.add_argument("--backend", default="gloo", choices=["gloo", "nccl"], help="torch.distributed backend")
    g.add_argument("--transfer", default="per-layer", choices=list(kvwire.MODES),
                   help="per-layer (overlapped with the prefill when the decode side has room) or per-block")
    g.add_argument("--timeout", type=_positive_float("--timeout"), default=60.0,
                   help="seconds without a heartbeat or reply before the run is stopped")
    g.add_argument("--kill-worker", default=None, metavar="NAME:STEPS",
                   help="test hook: worker NAME (prefill0, decode0, ...) kills itself after STEPS steps")
    g.add_argument("--attention", default="torch", choices=["torch", "numba"], help="attention backend")
    g.add_argument("--threads", type=_positive_int("--threads"), default=1, help="torch CPU threads per worker")
    s = p.add_argument_group("serving")
    s.add_argument("--model", default="tiny", help="engine model preset (tiny: the trained weights)")
    s.add_argument("--num-blocks", type=_positive_int("--num-blocks"), default=256, help="KV blocks per worker")
    s.add_argument("--block-size", type=_positive_int("--block-size"), default=16)
    s.add_argument("--chunk-size", type=_positive_int("--chunk-size"), default=None)
    s.add_argument("--max-num-seqs", type=_positive_int("--max-num-seqs"), default=256)
    w = p.add_argument_group("workload")
    w.add_argument("--rate", type=_positive_float("--rate"), default=4.0, help="Poisson arrivals per second")
    w.add_argument("--num-requests", type=_positive_int("--num-requests"), default=16)
    w.add_argument("--input-len", type=_positive_int("--input-len"), default=128)
    w.add_argument("--output-len", type=_positive_int("--output-len"), default=16)
    w.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokens", action="store_true", help="include every request's output token ids")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def parse_kill(text: str | None, names: list[str]) -> tuple[int, int] | None:
    if text is None:
        return None
    name, _, steps = text.partition(":")
    if name not in names or not steps.isdigit() or int(steps) < 1:
        raise PdlabError(f"--kill-worker {text}: expected NAME:STEPS with NAME one of {', '.join(names)} "
                         f"and STEPS >= 1")
    return names.index(name), int(steps)


def check_args(args) -> None:
    if args.backend == "nccl" and args.device != "cuda":
        raise PdlabError("--backend nccl needs --device cuda (NCCL moves GPU memory; use gloo on CPUs)")
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise PdlabError("--device cuda: no CUDA GPU is visible here (use --device cpu --backend gloo)")
    if args.mode != "disaggregated" and args.transfer != "per-layer":
        raise PdlabError(f"--transfer {args.transfer}: KV transfers exist only in --mode disaggregated, not {args.mode}")
    if args.mode == "disaggregated" and args.replicas is not None:
        raise PdlabError("--replicas is for --mode aggregated|chunked; disaggregated uses --prefill-workers/--decode-workers")


def config_for(args, replicas: int | None = None):
    from ..config import ServingConfig
    disagg = args.mode == "disaggregated"
    return ServingConfig(mode=args.mode, model=args.model, gpu="cpu" if args.device == "cpu" else "h100",
                         prefill_gpus=args.prefill_workers, decode_gpus=args.decode_workers,
                         num_gpus=None if disagg else (replicas or args.replicas or args.prefill_workers + args.decode_workers),
                         chunk_size=args.chunk_size, max_num_seqs=args.max_num_seqs, block_size=args.block_size,
                         num_blocks=args.num_blocks).validate()


def make_requests(args, vocab: int):
    from dataclasses import replace

    from .. import workload as wl
    reqs = wl.make_requests(args.num_requests, args.rate, wl.Lengths("fixed", a=args.input_len, b=args.output_len),
                            args.seed)
    rng = np.random.default_rng(args.seed)
    return [replace(r, prompt_ids=tuple(int(t) for t in rng.integers(0, vocab, r.prompt_len))) for r in reqs]


def serve(rt, requests, config, transfer: str = "per-layer", slos=None, overlap: bool = True):
    """Serve ``requests`` on the running workers; returns (RunResult, summary dict, transfer log)."""
    from .coordinator import Coordinator
    clock = (f"measured (real engine: {config.model} on {rt.devices[0]}, {rt.world} worker processes, "
             f"{rt.opts.backend})")
    coord = Coordinator(rt, config, transfer, clock, overlap)
    res = coord.run(requests)
    log = coord.transfer_log()
    summary = res.summary(slos)
    summary.update(clock=clock, model=config.model, gpu=rt.devices[0], backend=rt.opts.backend,
                   workers=res.workers, transfer=transfer if config.mode == "disaggregated" else None)
    if config.mode == "disaggregated":
        summary["kv_transfer"] = transfer_stats(log)
    return res, summary, log


def transfer_stats(log: list[dict]) -> dict:
    if not log:
        return {"count": 0}
    sec = np.array([t["seconds"] for t in log])
    wire = [t for t in log if not t["overlapped"]]       # overlapped ones also wait for the compute
    exp = np.array([t["exposed_s"] for t in log])
    nbytes = np.array([t["bytes"] for t in log], dtype=float)
    pct = lambda a, q: float(np.percentile(a, q))  # noqa: E731
    return {"count": len(log), "overlapped": int(sum(t["overlapped"] for t in log)), "bytes": int(nbytes.sum()),
            "seconds_p50": pct(sec, 50), "seconds_p99": pct(sec, 99),
            "exposed_s_p50": pct(exp, 50), "exposed_s_p99": pct(exp, 99),
            "gbps": (float(sum(t["bytes"] for t in wire) / max(sum(t["seconds"] for t in wire), 1e-12) / 1e9)
                     if wire else None)}


def run(args) -> int:
    from .launch import Runtime, WorkerLost, torchrun_env, worker_names
    check_args(args)
    cfg = config_for(args)
    workers = args.prefill_workers + args.decode_workers if args.mode == "disaggregated" else cfg.replicas
    names = worker_names(args.prefill_workers, args.decode_workers, workers) if args.mode == "disaggregated" \
        else [f"gpu{i}" for i in range(workers)]
    kill = parse_kill(args.kill_worker, names)
    kw = dict(device=args.device, backend=args.backend, model=args.model, num_blocks=args.num_blocks,
              block_size=args.block_size, timeout=args.timeout, attention=args.attention, threads=args.threads,
              seed=args.seed)
    env = torchrun_env()
    if env is not None and env["world"] - 1 != workers:
        raise PdlabError(f"torchrun started {env['world']} processes; this run needs {workers + 1} "
                         f"(the coordinator + {workers} workers)")
    if env is not None and env["rank"] > 0:               # a torchrun worker rank
        import os

        from .launch import worker_options
        from .worker import main
        os.environ["PDLAB_LOCAL_DEVICE"] = str(env["local"])
        k = kill[1] if kill and kill[0] == env["rank"] - 1 else 0
        main(env["rank"] - 1, worker_options(env["host"], env["port"], workers, kill_after=k, **kw))
        return 0
    from ..engine import model as M
    reqs = make_requests(args, M.preset(args.model).vocab_size)
    try:
        rt = (Runtime.attach(env["host"], env["port"], workers, names, **kw) if env is not None
              else Runtime.spawn(workers, names, kill, **kw))
        with rt:
            res, summary, _ = serve(rt, reqs, cfg, args.transfer)
    except WorkerLost as e:
        print(f"pdlab: error: {e}", file=sys.stderr)
        return 1
    if args.tokens:
        summary["tokens"] = {str(s.id): list(s.output_ids) for s in res.sequences}
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        from ..report import print_table
        print(f"{summary['clock']}, {len(reqs)} requests, {args.mode}"
              + (f", KV {args.transfer}" if args.mode == "disaggregated" else ""))
        print_table([summary])
        kv = summary.get("kv_transfer")
        if kv and kv["count"]:
            print(f"KV transfers: {kv['count']} ({kv['overlapped']} overlapped with their prefill), "
                  f"{kv['bytes'] / 1e6:.1f} MB, {kv['seconds_p50'] * 1e3:.2f} ms p50, "
                  f"pause after the prefill {kv['exposed_s_p50'] * 1e3:.2f} ms p50"
                  + (f", {kv['gbps']:.2f} GB/s on the wire" if kv["gbps"] else ""))
    return 0
