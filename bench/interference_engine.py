"""Measured interference on a real GPU: do long prompts stall the running streams?

    python bench/interference_engine.py --out bench/results/interference-h200-2026-11-29.json

A stream of short chats (prompts 64-512 tokens, 64-160 output tokens, Poisson arrivals) plus a
few long prompts (8192 tokens) served by the real engine (``ModelExecutor``, llama-3.2-1b shape,
random bf16 weights, --backend torch or numba attention) under two policies:

- aggregated: a waiting prompt is prefilled whole, in its own iteration: every stream waits;
- chunked:    a 512-token budget per iteration, decodes first: a long prompt is spread out.

Reported per mode: ITL (every gap between consecutive tokens of the chat streams) p50/p99/max,
TTFT and TPOT percentiles. All times are measured step times on this GPU (CUDA events), laid
on the event loop's clock.

The helpers here (``workload``, ``serve_measured``, ``serve_simulated``) are shared with
``bench/fidelity.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pdlab import ServingConfig, run_serving  # noqa: E402
from pdlab.metrics import per_request  # noqa: E402
from pdlab.request import Request  # noqa: E402

MODEL = "llama-3.2-1b"
GPU = "h200"                # the cost-model preset of the simulated runs (bench/fidelity.py --model tiny: cpu)
WORKLOAD_NOTE = ("workload: bench/interference_engine.py workload() seed 0: 60 chats (prompts 64-512, "
                 "outputs 64-160 tokens, Poisson 6/s) + 3 prompts of 8192 tokens (16 outputs)")
BLOCK_SIZE = 16
NUM_BLOCKS = 16384          # 262k tokens of KV per worker (8.6 GB in bf16 for this shape)


def workload(n_chats=60, rate=6.0, n_long=3, long_len=8192, seed=0, vocab=128256, fast=False) -> list[Request]:
    """Short chats at ``rate`` per second plus ``n_long`` long prompts spread over the run."""
    out_lo, out_hi = 64, 161
    if fast:
        n_chats, n_long, long_len, out_lo, out_hi = 8, 1, 1024, 8, 17
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1.0 / rate, n_chats))
    reqs = []
    for i in range(n_chats):
        p, o = int(rng.integers(64, 513)), int(rng.integers(out_lo, out_hi))
        reqs.append((float(t[i]), p, o, "chat"))
    span = float(t[-1])
    for j in range(n_long):
        reqs.append((span * (j + 1) / (n_long + 1), long_len, 16, "long"))
    reqs.sort()
    out = []
    for i, (arr, p, o, _) in enumerate(reqs):
        ids = tuple(int(x) for x in rng.integers(0, vocab, p))
        out.append(Request(i, arr, p, o, ids))
    return out


def config(mode: str, chunk: int | None = None, profile: str | None = None) -> ServingConfig:
    return ServingConfig(mode=mode, model=MODEL, gpu=GPU, chunk_size=chunk, block_size=BLOCK_SIZE,
                         num_blocks=NUM_BLOCKS, profile=profile, link="nvlink")


def serve_measured(model, requests, mode, chunk=None, backend="torch", step_log=None, profile=None):
    """Serve with the real engine. With ``step_log`` (a list) and ``profile``, every step also
    records (predicted s, measured s, prefill chunks, decodes, prefill tokens): the cost model's
    time for that very batch beside the measured one."""
    from pdlab.engine.executor import factory
    from pdlab.run import cost_model_for
    make = factory(model, backend=backend)
    on_step = None
    if step_log is not None and profile:
        cm = cost_model_for(config(mode, chunk, profile))

        def on_step(worker, batch, result):    # before postprocess: the batch is as it ran
            step_log.append((cm.step_time(batch), result.seconds, len(batch.prefills), len(batch.decodes),
                             batch.num_prefill_tokens))
    return run_serving(requests, config(mode, chunk), executor_factory=make, on_step=on_step)


def step_errors(step_log) -> dict:
    """Per-step |predicted / measured - 1| over a served run, split by step kind."""
    if not step_log:
        return {}
    a = np.array([r[:2] for r in step_log], dtype=float)
    kinds = np.array(["mixed" if r[2] and r[3] else "prefill" if r[2] else "decode" for r in step_log])
    rel = a[:, 0] / a[:, 1] - 1
    out = {"steps": len(step_log), "median_rel_error": float(np.median(rel)),
           "median_abs_rel_error": float(np.median(np.abs(rel))), "p90_abs_rel_error": float(np.percentile(np.abs(rel), 90)),
           "measured_step_p50_ms": 1e3 * float(np.median(a[:, 1]))}
    for k in ("prefill", "decode", "mixed"):
        m = kinds == k
        if m.any():
            out[k] = {"steps": int(m.sum()), "median_rel_error": float(np.median(rel[m])),
                      "measured_p50_ms": 1e3 * float(np.median(a[m, 1])),
                      "predicted_p50_ms": 1e3 * float(np.median(a[m, 0]))}
    return out


def serve_simulated(requests, mode, chunk=None, profile=None):
    return run_serving(requests, config(mode, chunk, profile))


def pct(x, q):
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return float(np.percentile(x, q)) if x.size else None


def latency_table(result, long_len_min=4096) -> dict:
    """TTFT/TPOT over all requests, ITL over the chat streams only (the ones that stall)."""
    arr = per_request(result.sequences)
    chats = np.array([s.prompt_len < long_len_min for s in result.sequences])
    itl = arr["itl"][chats[arr["itl_owner"]]] if arr["itl"].size else arr["itl"]
    row = {}
    for name, x in (("ttft", arr["ttft"]), ("tpot", arr["tpot"]), ("itl", itl)):
        for q in (50, 90, 99):
            row[f"{name}_p{q}_ms"] = None if pct(x, q) is None else 1e3 * pct(x, q)
    row["itl_max_ms"] = 1e3 * float(np.max(itl)) if len(itl) else None
    row["steps"] = len(result.steps)
    row["preemptions"] = sum(s.num_preemptions for s in result.sequences)
    return row


def warm_up(model, backend="torch"):
    """Compile and allocate once (cuBLAS handles, SDPA kernels) so the first measured step is
    not a cold start."""
    serve_measured(model, workload(fast=True, vocab=model.cfg.vocab_size)[:4], "chunked", 256, backend)


def load_model(num_layers=None):
    import torch
    from dataclasses import replace
    from pdlab.engine import model as M
    cfg = M.preset(MODEL)
    if num_layers:
        cfg = replace(cfg, num_layers=num_layers)
    if not torch.cuda.is_available() and cfg.dtype != "float32":
        cfg = replace(cfg, dtype="float32")     # CPU smoke test: bf16 matmuls are slow there
    return M.build(cfg, device="cuda" if torch.cuda.is_available() else "cpu")


def write_report(path, reqs, modes: dict, backend: str, notes=None, chunk_size=None) -> dict:
    """The interference JSON: per mode, measured (and, when given, simulated) latency tables."""
    import torch

    agg = next(v["measured"] for k, v in modes.items() if k.startswith("aggregated"))
    chk = next(v["measured"] for k, v in modes.items() if k.startswith("chunked"))
    out = {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
           "model": MODEL + " shape, random bf16 weights", "backend": backend,
           "workload": {"requests": len(reqs), "chats": sum(r.prompt_len < 4096 for r in reqs),
                        "long_prompts": sum(r.prompt_len >= 4096 for r in reqs),
                        "long_prompt_tokens": max(r.prompt_len for r in reqs)},
           "what": "ITL over the chat streams; TTFT/TPOT over all requests; measured step times (CUDA events)",
           "modes": modes,
           "itl_p99_ratio_aggregated_over_chunked": agg["itl_p99_ms"] / chk["itl_p99_ms"],
           "itl_max_ratio_aggregated_over_chunked": agg["itl_max_ms"] / chk["itl_max_ms"]}
    if chunk_size is not None:
        out["chunk_size"] = chunk_size
    if notes:
        out["notes"] = list(notes)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/interference-h200-2026-11-29.json")
    ap.add_argument("--profile", default=None, help="calibrated profile: also report the simulator's numbers")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--fast", action="store_true", help="tiny workload (smoke test)")
    ap.add_argument("--num-layers", type=int, default=None, help="fewer layers (smoke test on a CPU)")
    args = ap.parse_args(argv)
    model = load_model(args.num_layers)
    warm_up(model, args.backend)
    reqs = workload(fast=args.fast)
    modes = {}
    for mode, chunk in (("aggregated", None), ("chunked", args.chunk)):
        t0 = time.perf_counter()
        res = serve_measured(model, reqs, mode, chunk, args.backend)
        row = {"measured": latency_table(res), "wall_s": round(time.perf_counter() - t0, 1)}
        if args.profile:
            row["simulated"] = latency_table(serve_simulated(reqs, mode, chunk, args.profile))
        key = mode if chunk is None else f"{mode}-{chunk}"
        modes[key] = row
        print(key, json.dumps(row), flush=True)
    write_report(args.out, reqs, modes, args.backend, chunk_size=args.chunk,
                 notes=[WORKLOAD_NOTE, "python " + " ".join(sys.argv)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
