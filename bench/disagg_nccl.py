"""Disaggregated serving for real: the KV transfer and the latencies, measured with worker
processes on one host, and the simulator's ``Link`` checked against the measured transfers.

    python bench/disagg_nccl.py --out bench/results/disagg-cpu-gloo-2026-12-07.json   # CPU, gloo (committed)
    python bench/disagg_nccl.py --device cuda --backend nccl --model llama-3.2-1b \\
        --out bench/results/disagg-h100-nccl-DATE.json       # a 2-GPU machine, one GPU per worker

Four parts, all from one set of two worker processes:

1. the backend's own bandwidth between the two workers: send/recv and all-gather, by size;
2. transfer time per request vs prompt length: per-layer overlapped with the prefill (what the
   request waits for after its prefill), per-layer after the prefill and per-block (the wire);
3. TTFT / TPOT / ITL p50 and p99 of 1P1D vs aggregated and chunked on 1 worker and on 2
   independent replicas, at the same request rates, on a prompt-heavy and a decode-heavy workload;
4. ``pdlab.serving.link.Link`` against the measured transfers: with the bandwidth and latency of
   part 1, and fitted to the transfers themselves (least squares), with the error of each.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pdlab import ServingConfig  # noqa: E402
from pdlab.dist.launch import Runtime  # noqa: E402
from pdlab.dist.serve import serve, transfer_stats  # noqa: E402
from pdlab.request import Request  # noqa: E402
from pdlab.serving.link import Link  # noqa: E402
from pdlab.workload import Lengths, make_requests  # noqa: E402

PCT = (50, 99)


def cfg(mode, args, **kw):
    base = dict(model=args.model, gpu="cpu" if args.device == "cpu" else "h100", num_blocks=args.num_blocks,
                block_size=16)
    if mode == "disaggregated":
        return ServingConfig(mode=mode, prefill_gpus=1, decode_gpus=1, **base, **kw)
    return ServingConfig(mode=mode, chunk_size=args.chunk if mode == "chunked" else None, **base, **kw)


def with_ids(reqs, vocab, seed=0):
    from dataclasses import replace
    rng = np.random.default_rng(seed)
    return [replace(r, prompt_ids=tuple(int(t) for t in rng.integers(0, vocab, r.prompt_len))) for r in reqs]


def link_bench(rt, args) -> dict:
    sizes = [1 << k for k in range(10, 27 if args.device == "cuda" else 25, 2)]
    spec = {"op": "bench", "sizes": sizes, "iters": 20, "bytes_per_size": 256 << 20 if args.device == "cuda" else 64 << 20,
            "repeats": 3}
    for i in range(rt.world):
        rt.mail.send(f"w{i}", spec)
    got = {}
    while len(got) < rt.world:
        msg = rt.mail.poll(timeout=0.05)
        if msg is not None and msg["op"] == "bench_done":
            got[msg["worker"]] = msg["result"]
        rt.check()
    out = {"p2p": got[1]["p2p"], "all_gather": got[0]["all_gather"]}
    t = np.array([r["seconds"] for r in out["p2p"]])
    b = np.array([r["bytes"] for r in out["p2p"]], dtype=float)
    slope, icpt = np.polyfit(b, t, 1)                    # t = latency + bytes / bandwidth
    out["p2p_fit"] = {"gbps": 1 / slope / 1e9, "latency_s": max(icpt, 0.0)}
    out["p2p_peak_gbps"] = max(r["gbps"] for r in out["p2p"])
    out["all_gather_peak_bus_gbps"] = max(r["bus_gbps"] for r in out["all_gather"])
    return out


def transfer_sweep(rt, args, vocab) -> dict:
    """One request at a time per prompt length; the prefill and decode workers are otherwise idle."""
    out = {}
    for label, mode, overlap in (("per-layer overlapped", "per-layer", True),
                                 ("per-layer after prefill", "per-layer", False),
                                 ("per-block", "per-block", False)):
        reqs = []
        for k, n in enumerate(L for L in args.lengths for _ in range(args.repeats)):
            reqs.append(Request(k, k * args.gap, n, 3))
        _, summary, log = serve(rt, with_ids(reqs, vocab), cfg("disaggregated", args), mode, overlap=overlap)
        rows = [{"prompt_tokens": r["tokens"], "bytes": r["bytes"], "seconds": r["seconds"],
                 "exposed_s": r["exposed_s"], "overlapped": r["overlapped"],
                 "gbps": r["bytes"] / r["seconds"] / 1e9} for r in log]
        by_len = {}
        for L in args.lengths:
            mine = [r for r in rows if r["prompt_tokens"] == L]
            if mine:
                by_len[str(L)] = {"bytes": mine[0]["bytes"],
                                  "seconds_median": float(np.median([r["seconds"] for r in mine])),
                                  "exposed_s_median": float(np.median([r["exposed_s"] for r in mine])),
                                  "gbps_median": float(np.median([r["gbps"] for r in mine]))}
        out[label] = {"transfers": rows, "by_prompt_len": by_len, "ttft_p50_s": summary["ttft_s"]["p50"]}
        print(f"  {label}: " + ", ".join(f"{L} tok {v['seconds_median'] * 1e3:.2f} ms" for L, v in by_len.items()),
              file=sys.stderr)
    return out


def latency_table(rt, args, vocab) -> dict:
    setups = {"disaggregated 1P1D (2 workers)": ("disaggregated", {}),
              "aggregated x1": ("aggregated", {"num_gpus": 1}),
              "chunked x1": ("chunked", {"num_gpus": 1}),
              "aggregated x2 (replicas)": ("aggregated", {"num_gpus": 2}),
              "chunked x2 (replicas)": ("chunked", {"num_gpus": 2})}
    out = {}
    for wname, (inp, outp, rates) in args.workloads.items():
        out[wname] = {"input_len": inp, "output_len": outp, "rates": {}}
        for rate in rates:
            reqs = with_ids(make_requests(args.num_requests, rate, Lengths("fixed", a=inp, b=outp), seed=1), vocab)
            row = {}
            for label, (mode, kw) in setups.items():
                _, s, _ = serve(rt, reqs, cfg(mode, args, **kw), "per-layer")
                row[label] = {"gpus": s["gpus"], "completed": s["completed"],
                              **{f"{m}_p{q}_s": s[f"{m}_s"][f"p{q}"] for m in ("ttft", "tpot", "itl") for q in PCT}}
                if mode == "disaggregated":
                    row[label]["kv_transfer"] = s["kv_transfer"]
                print(f"  {wname} @ {rate}/s {label}: TTFT p50 {row[label]['ttft_p50_s'] * 1e3:.0f} ms, "
                      f"ITL p99 {row[label]['itl_p99_s'] * 1e3:.0f} ms", file=sys.stderr)
            out[wname]["rates"][str(rate)] = row
    return out


def link_check(link: dict, sweep: dict) -> dict:
    """The simulator's Link (latency + bytes / bandwidth, one latency per transfer) against the
    measured wire time of every transfer sent after its prefill."""
    out = {}
    for label in ("per-layer after prefill", "per-block"):
        rows = sweep[label]["transfers"]
        b = np.array([r["bytes"] for r in rows], dtype=float)
        t = np.array([r["seconds"] for r in rows])

        def err(gbps, lat):
            pred = np.array([(lambda s, e: e - s)(*Link("check", gbps, lat).send(0.0, int(x))) for x in b])
            rel = (pred - t) / t
            return {"median_abs_rel_error": float(np.median(np.abs(rel))), "max_abs_rel_error": float(np.abs(rel).max()),
                    "mean_rel_error": float(rel.mean())}

        fit = link["p2p_fit"]
        lat, gbps = fit_link(b, t)
        out[label] = {"from_send_bench": {"gbps": fit["gbps"], "latency_s": fit["latency_s"],
                                          **err(fit["gbps"], fit["latency_s"])},
                      "fitted_to_transfers": {"gbps": gbps, "latency_s": lat, **err(gbps, lat)}}
    return out


def fit_link(nbytes: np.ndarray, seconds: np.ndarray) -> tuple[float, float]:
    """(latency s, GB/s) of ``latency + bytes / bandwidth`` with the least squared *relative*
    error (the check reports relative errors; plain least squares would let the largest
    transfers decide everything), latency >= 0."""
    A = np.vstack([np.ones_like(nbytes), nbytes]).T / seconds[:, None]
    (lat, inv_bw), *_ = np.linalg.lstsq(A, np.ones_like(seconds), rcond=None)
    if lat < 0:                                           # refit through the origin
        x = nbytes / seconds
        lat, inv_bw = 0.0, float(x.sum() / (x * x).sum())
    return float(lat), float(1 / inv_bw / 1e9)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--backend", default="gloo", choices=["gloo", "nccl"])
    p.add_argument("--model", default="tiny")
    p.add_argument("--out", default=None, help="JSON file (default bench/results/disagg-cpu-gloo-DATE.json)")
    p.add_argument("--quick", action="store_true", help="fewer requests and lengths (a smoke run)")
    p.add_argument("--num-requests", type=int, default=None)
    p.add_argument("--chunk", type=int, default=256, help="chunked mode's token budget")
    p.add_argument("--recheck", default=None, metavar="JSON",
                   help="recompute only the Link check of a saved run from its measured transfers")
    args = p.parse_args(argv)
    if args.recheck:
        path = Path(args.recheck)
        saved = json.loads(path.read_text())
        saved["link_model_check"] = link_check(saved["link_bench"], saved["transfer_vs_prompt"])
        path.write_text(json.dumps(saved, indent=1) + "\n")
        print(json.dumps(saved["link_model_check"], indent=1))
        return 0
    gpu = args.device == "cuda"
    args.lengths = [64, 256, 1024, 4096, 8192] if gpu else [16, 64, 256, 1024, 2048]
    args.repeats, args.gap = (2, 0.4) if args.quick else (3, 0.5 if gpu else 0.6)
    if args.quick:
        args.lengths = args.lengths[::2]
    args.num_requests = args.num_requests or (12 if args.quick else 24)
    args.workloads = ({"prompt-heavy": (2048, 32, [4.0, 8.0]), "decode-heavy": (128, 256, [4.0, 8.0])} if gpu else
                      {"prompt-heavy": (512, 16, [2.0, 4.0]), "decode-heavy": (32, 96, [1.0, 2.0])})
    args.num_blocks = max(args.lengths) // 16 * 3 + 256
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from pdlab.engine import model as M
    vocab = M.preset(args.model).vocab_size
    load_start = os.getloadavg()
    with Runtime.spawn(2, ["worker0", "worker1"], device=args.device, backend=args.backend, model=args.model,
                       num_blocks=args.num_blocks, block_size=16, timeout=300) as rt:
        print(f"workers on {rt.devices}, {args.backend}", file=sys.stderr)
        link = link_bench(rt, args)
        print(f"  send/recv {link['p2p_peak_gbps']:.2f} GB/s peak, all-gather {link['all_gather_peak_bus_gbps']:.2f} "
              f"GB/s bus", file=sys.stderr)
        sweep = transfer_sweep(rt, args, vocab)
        lat = latency_table(rt, args, vocab)
        devices, kvbpt = rt.devices, rt.kv_bytes_per_token
    import torch
    where = "CPU" if not gpu else devices[0]
    out = {
        "bench": "disagg_nccl", "date": datetime.date.today().isoformat(),
        "measured_at_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "clock": f"measured on {where} ({args.backend} backend, 2 worker processes on one host)"
                 + ("; a CPU run, not a GPU: the link is loopback TCP" if not gpu else ""),
        "device": args.device, "backend": args.backend, "devices": devices, "model": args.model,
        "kv_bytes_per_token": kvbpt, "block_size": 16, "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        # other processes on the host slow the workers down: the 1-minute load average at the start and end
        "load_average_1min": [round(load_start[0], 2), round(os.getloadavg()[0], 2)], "torch": torch.__version__, "python": platform.python_version(),
        "command": "python bench/disagg_nccl.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "link_bench": link, "transfer_vs_prompt": sweep, "latency": lat, "link_model_check": link_check(link, sweep),
    }
    for label in ("per-layer after prefill", "per-block"):
        out["transfer_vs_prompt"][label]["stats"] = transfer_stats([{**r, "overlapped": False} for r in sweep[label]["transfers"]])
    from pdlab.hardware import gpu_preset_for
    tag = "cpu-gloo" if not gpu else f"{gpu_preset_for(devices[0]) or 'gpu'}-{args.backend}"
    path = Path(args.out or ROOT / "bench" / "results" / f"disagg-{tag}-{out['date']}.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
