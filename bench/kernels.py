"""Benchmark the Numba attention kernels on a GPU and write the numbers as JSON.

    python bench/kernels.py --out bench/results/kernels-h200-2026-11-29.json

What is measured (CUDA events, after warm-up, median of repeats):
- copy_tbps: torch device-to-device copy of a 2 GiB buffer, bytes read + bytes written: the
  practical bandwidth ceiling a decode kernel is compared with.
- decode: Numba paged decode (32 query heads, 8 KV heads, head dim 128, bf16 KV, block 16),
  GRAPH_CALLS calls captured in one CUDA graph and replayed, time per call: the kernel plus the
  gap before the next (as a decode step's graph runs its kernels back to back; triton's
  do_bench_cudagraph times kernels the same way). TB/s = K+V bytes read / time. graph1_*: one
  call per replayed graph, which adds the graph's own launch (~1 us on the H200).
  sdpa_tbps: torch SDPA on the same K/V stored dense (no paging), the vendor-kernel anchor,
  timed the same way (sdpa_eager_*: launched from Python).
- prefill: one causal 4096-token prompt, and a 512-token chunk after 3584 cached tokens, same
  heads; FLOPs = 4 * D * H * (visible query-key pairs) (QK^T and PV over the causal part).
  The tensor-core kernel (``kernel="mma"``, the default on sm_80+) in each tile of
  MMA_VARIANTS, the fp32 CUDA-core kernel (``kernel="fp32"``), and torch SDPA on the same K/V
  stored dense (causal, lower-right aligned for the chunk: the flash kernel), all in one run.
- launch_us: per-kernel launch overhead from Python (eager, the decode kernel) and per kernel
  inside a replayed CUDA graph (an empty kernel, so launch cost alone); see its "note".
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

H, HKV, D, BS = 32, 8, 128, 16
# prefill variants tried: (tile = (threads, BM, BN, DC, VH), register cap); the first is the
# package default. A cap lets more blocks share an SM (65536 registers) at the price of spills.
PREFILL_VARIANTS = [((256, 64, 64, 32, 32), 128), ((256, 64, 64, 32, 32), None),
                    ((128, 64, 64, 32, 32), None), ((128, 64, 64, 32, 32), 168)]
# tensor-core prefill variants: (name, tile = (warps, m-tiles of 16 rows per warp, BN keys),
# register cap); the first is the package default. 4w1m64: 64 query rows per block, Q's
# fragments in registers (233 registers, 2 blocks per SM); 4w2m32: 128 rows, 32 rows per warp
# (each K/V fragment feeds two m-tiles: half the shared-memory reads per FLOP), Q reloaded from
# shared memory; 8w1m32: 128 rows over 8 warps (half the copies per FLOP); 4w1m32: 32-key
# tiles, 168 registers (3 blocks per SM); 2w1m64: 32 rows per block; cap168: 3 blocks per SM at
# the price of a few spills.
MMA_VARIANTS = [("4w1m64", (4, 1, 64), None), ("4w2m32", (4, 2, 32), None), ("8w1m32", (8, 1, 32), None),
                ("4w1m32", (4, 1, 32), None), ("2w1m64", (2, 1, 64), None), ("4w1m64cap168", (4, 1, 64), 168)]
DTYPE = torch.bfloat16
# decode variants: (name, decode_attention options, split multiplier); the first is
# the package default (K/V staged through a shared-memory ring with cp.async). registers: the
# register pipeline (no ring). lanes8: each lane owns 8 head dims (the layout groups of 8 heads
# use). cap168: at most 168 registers per thread, so 3 blocks share an SM. merge_round16: the
# last split's merge reads 16 splits per round of loads instead of 33 (three rounds at 1 x 32768).
# ring5: a ring of 5 row groups (3 ahead) instead of the 6 that 48 KB hold. no_evict_first: the
# K/V copies without the L2 evict-first hint.
DECODE_VARIANTS = [("default", {}, 1), ("cap168", dict(max_registers=168), 1), ("unroll1", dict(unroll=1), 1),
                   ("ring3", dict(ring=3), 1), ("lanes8", dict(lane_dims=8), 1),
                   ("lanes8_unroll4", dict(lane_dims=8, unroll=4), 1), ("splits_x2", {}, 2),
                   ("registers", dict(ring=0), 1), ("registers_lanes8_unroll4", dict(ring=0, lane_dims=8, unroll=4), 1),
                   ("merge_round16", dict(merge_round=16), 1), ("ring5", dict(ring=5), 1),
                   ("no_evict_first", dict(evict_first=False), 1)]


GRAPH_CALLS = 20   # calls per captured graph in graph_ms


def timed(fn, iters=20, repeats=5):
    """Median milliseconds per call of fn() over `repeats` runs of `iters` calls (CUDA events;
    perf_counter without a GPU, for the benchmarks' CPU smoke runs)."""
    for _ in range(3):
        fn()
    if not torch.cuda.is_available():
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(iters):
                fn()
            times.append((time.perf_counter() - t) / iters * 1e3)
        times.sort()
        return times[len(times) // 2]
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(iters):
            fn()
        e1.record()
        torch.cuda.synchronize()
        times.append(e0.elapsed_time(e1) / iters)
    times.sort()
    return times[len(times) // 2]


def graph_ms(fn, n=GRAPH_CALLS):
    """Milliseconds per call of fn() when n calls captured in one CUDA graph are replayed."""
    fn()                                          # compile, allocate, wrap: not capturable
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(n):
            fn()
    return timed(g.replay, iters=3) / n


def copy_tbps():
    a = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    ms = timed(lambda: b.copy_(a), iters=10)
    return 2 * a.numel() / (ms * 1e-3) / 1e12


def paged_cache(batch, context, seed=0):
    """Random bf16 KV in a scrambled paged layout: [num_blocks, BS, HKV, D]."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    per_seq = -(-context // BS)
    nblocks = batch * per_seq
    k_cache = torch.randn(nblocks, BS, HKV, D, device="cuda", dtype=DTYPE, generator=g)
    v_cache = torch.randn(nblocks, BS, HKV, D, device="cuda", dtype=DTYPE, generator=g)
    perm = torch.randperm(nblocks, device="cuda", generator=g).to(torch.int32)
    block_tables = perm.view(batch, per_seq).contiguous()
    seq_lens = torch.full((batch,), context, dtype=torch.int32, device="cuda")
    return k_cache, v_cache, block_tables, seq_lens


def bench_decode(nbk, batch, context):
    from pdlab.kernels import decode_attention as da
    from pdlab.kernels.graphs import DecodeGraph

    k_cache, v_cache, bt, sl = paged_cache(batch, context)
    q = torch.randn(batch, H, D, device="cuda", dtype=DTYPE)
    scale = D ** -0.5
    kv_bytes = 2 * batch * context * HKV * D * k_cache.element_size()
    ref = torch_ref_decode(q, k_cache, v_cache, bt, sl, scale)
    variants = []
    for name, opts, more_splits in DECODE_VARIANTS:
        splits = da.auto_splits(q, k_cache, bt, **opts) * more_splits
        run = lambda: da.decode_attention(q, k_cache, v_cache, bt, sl, scale, num_splits=splits,  # noqa: E731
                                          check=False, **opts)
        ms = graph_ms(run)
        err = (run().float() - ref.float()).abs().max().item()
        effective_splits = da.split_plan(context, splits, D, H // HKV, **opts)[0]
        variants.append(dict(name=name, **opts, num_splits=effective_splits, ms=ms,
                             tbps=kv_bytes / (ms * 1e-3) / 1e12, max_abs_err_vs_torch=err))
        if name == "default":   # the engine's DecodeGraph: one call per replay
            g = DecodeGraph(q, k_cache, v_cache, bt, sl, scale, num_splits=splits)
            graph1_ms = timed(g.replay, iters=50)
            del g
    default = variants[0]
    best = min(variants, key=lambda v: v["ms"])
    eager_ms = timed(lambda: nbk.decode_attention(q, k_cache, v_cache, bt, sl, scale, check=False), iters=20)
    # SDPA on the same K/V stored dense: [B, HKV, ctx, D]
    kd = torch.randn(batch, HKV, context, D, device="cuda", dtype=DTYPE)
    vd = torch.randn_like(kd)
    q4 = q[:, :, None, :]
    sdpa = lambda: F.scaled_dot_product_attention(q4, kd, vd, scale=scale, enable_gqa=True)  # noqa: E731
    sdpa_ms = graph_ms(sdpa)
    sdpa_eager_ms = timed(sdpa, iters=50)
    del k_cache, v_cache, kd, vd
    torch.cuda.empty_cache()
    # the headline number is the package default (what the engine runs), not the best variant
    return dict(batch=batch, context=context, num_splits=default["num_splits"],
                ms=default["ms"], tbps=default["tbps"], best_variant_tbps=best["tbps"], graph_calls=GRAPH_CALLS,
                graph1_ms=graph1_ms, graph1_tbps=kv_bytes / (graph1_ms * 1e-3) / 1e12, eager_ms=eager_ms,
                eager_tbps=kv_bytes / (eager_ms * 1e-3) / 1e12,
                sdpa_ms=sdpa_ms, sdpa_tbps=kv_bytes / (sdpa_ms * 1e-3) / 1e12,
                sdpa_eager_ms=sdpa_eager_ms, sdpa_eager_tbps=kv_bytes / (sdpa_eager_ms * 1e-3) / 1e12,
                max_abs_err_vs_torch=default["max_abs_err_vs_torch"], variants=variants)


def torch_ref_decode(q, k_cache, v_cache, bt, sl, scale):
    from pdlab.kernels import get_backend

    return get_backend("torch").decode_attention(q, k_cache, v_cache, bt, sl, scale)


def sdpa_prefill(q, tokens, context, scale):
    """torch SDPA on the same shapes with K/V dense: causal (is_causal) for a whole prompt; for a
    chunk after cached context, causal aligned to the lower right (query i sees keys up to
    context - tokens + i), which SDPA runs in its flash kernel. Milliseconds per call."""
    qd = q.transpose(0, 1)[None]                                  # [1, H, L, D]
    kd = torch.randn(1, HKV, context, D, device="cuda", dtype=DTYPE)
    vd = torch.randn_like(kd)
    if context == tokens:
        return timed(lambda: F.scaled_dot_product_attention(qd, kd, vd, is_causal=True, scale=scale,
                                                            enable_gqa=True), iters=20)
    from torch.nn.attention.bias import causal_lower_right

    kd, vd = kd.repeat_interleave(H // HKV, 1), vd.repeat_interleave(H // HKV, 1)   # [1, H, ctx, D]
    bias = causal_lower_right(tokens, context)
    return timed(lambda: F.scaled_dot_product_attention(qd, kd, vd, attn_mask=bias, scale=scale), iters=20)


def bench_prefill(nbk, tokens, context=None, fp32_variants=False):
    context = context or tokens
    k_cache, v_cache, bt, sl = paged_cache(1, context)
    q = torch.randn(tokens, H, D, device="cuda", dtype=DTYPE)
    cu = torch.tensor([0, tokens], dtype=torch.int32, device="cuda")
    scale = D ** -0.5
    # query i at position context - tokens + i sees context - tokens + i + 1 keys
    pairs = sum(context - tokens + i + 1 for i in range(tokens))
    flops = 4 * D * H * pairs
    from pdlab.kernels import get_backend

    ref = get_backend("torch").prefill_attention(q, k_cache, v_cache, bt, cu, sl, scale)

    def measure(**kw):
        run = lambda: nbk.prefill_attention(q, k_cache, v_cache, bt, cu, sl, scale,  # noqa: E731
                                            max_q_len=tokens, check=False, **kw)
        ms = timed(run, iters=10 if kw["kernel"] == "mma" else 5, repeats=3)
        err = (run().float() - ref.float()).abs().max().item()
        return dict(ms=ms, tflops=flops / (ms * 1e-3) / 1e12, max_abs_err_vs_torch=err)

    mma = [dict(name=name, tile=list(tile), max_registers=regs, **measure(kernel="mma", tile=tile, max_registers=regs))
           for name, tile, regs in MMA_VARIANTS]
    fp32 = [dict(tile=list(tile), max_registers=regs, **measure(kernel="fp32", tile=tile, max_registers=regs))
            for tile, regs in (PREFILL_VARIANTS if fp32_variants else PREFILL_VARIANTS[:1])]
    sdpa_ms = sdpa_prefill(q, tokens, context, scale)
    default, best = mma[0], max(mma, key=lambda v: v["tflops"])
    # the headline number is the package default (what the engine runs), not the best variant
    row = dict(tokens=tokens, context=context, kernel="mma", tile=default["tile"], ms=default["ms"],
               tflops=default["tflops"], max_abs_err_vs_torch=default["max_abs_err_vs_torch"],
               best_variant=best["name"], best_variant_tflops=best["tflops"],
               fp32_ms=fp32[0]["ms"], fp32_tflops=fp32[0]["tflops"],
               sdpa_ms=sdpa_ms, sdpa_tflops=flops / (sdpa_ms * 1e-3) / 1e12, mma_variants=mma, fp32_variants=fp32)
    row["ratio_to_sdpa"] = row["tflops"] / row["sdpa_tflops"]
    row["speedup_over_fp32"] = row["tflops"] / row["fp32_tflops"]
    return row


def per_launch_us(launches, n):
    """Microseconds per launch when ``launches()`` (which issues n kernel launches) runs from
    Python, and when the same n launches replay from one captured CUDA graph. A launch in a graph
    costs its scheduling plus the kernel itself: nothing is subtracted."""
    launches()                                    # warm-up: compile, load, wrap
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    launches()
    torch.cuda.synchronize()
    eager_us = (time.perf_counter() - t0) / n * 1e6
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        launches()                                # n launches recorded, none executed
    graph.replay()
    torch.cuda.synchronize()
    return eager_us, timed(graph.replay, iters=5) * 1e3 / n


def bench_launch(nbk):
    """Per-kernel overhead: the raw Numba decode kernel on a tiny problem (1 sequence, 16 tokens,
    one split), launched N times from Python, then N times from one replayed CUDA graph."""
    from pdlab.kernels import _numba as nb
    from pdlab.kernels import decode_attention as da

    k_cache, v_cache, bt, sl = paged_cache(1, 16)
    q32 = torch.randn(1, H, D, device="cuda")
    o = torch.empty(4, device="cuda")            # no partials: one split
    lse = torch.empty(H, device="cuda")           # [S * H * P] flat, unused with one split
    done = torch.zeros(HKV, dtype=torch.int32, device="cuda")
    out = torch.empty(H * D, device="cuda")
    kern = da._get_kernel("bf16", D, H // HKV, BS)
    args = (nb.as_numba(q32.view(-1)), nb.as_numba(k_cache.view(-1), persistent=True),
            nb.as_numba(v_cache.view(-1), persistent=True), nb.as_numba(bt), nb.as_numba(sl),
            nb.float32(D ** -0.5), da.split_plan(16, 1, D, H // HKV)[1], nb.as_numba(o), nb.as_numba(lse),
            nb.as_numba(done), nb.as_numba(out))
    grid = (HKV, 1, 1)
    n = 200

    def eager():
        st = nb.stream()
        for _ in range(n):
            kern[grid, da.THREADS, st](*args)

    eager_us, decode_graph_us = per_launch_us(eager, n)
    # whole decode_attention call (torch glue + 1 kernel) from Python
    call_ms = timed(lambda: nbk.decode_attention(q32, k_cache, v_cache, bt, sl, D ** -0.5, num_splits=1,
                                                 check=False), iters=100)
    from numba import cuda

    @cuda.jit("void(int32)")
    def noop(x):                                  # measures launch cost alone
        pass

    def noops():
        st = nb.stream()
        for _ in range(n):
            noop[1, 32, st](0)

    noop_eager_us, noop_graph_us = per_launch_us(noops, n)
    return dict(eager=eager_us, graph=noop_graph_us, empty_kernel_eager=noop_eager_us,
                decode_kernel_in_graph=decode_graph_us, decode_call_eager=call_ms * 1e3,
                note=("per kernel, microseconds. eager: one Numba decode-kernel launch from Python with "
                      "pre-wrapped arrays (launches queue asynchronously, so this is launch cost); graph: per "
                      "kernel when 200 launches of an empty kernel replay from one CUDA graph (launch cost "
                      "alone); empty_kernel_eager: the empty kernel launched from Python; "
                      "decode_kernel_in_graph: per kernel when 200 tiny decode kernels (16 tokens x 32 heads) "
                      "replay from one graph, bounded by their own run time; decode_call_eager: a whole "
                      "decode_attention() call (torch glue + wrapping + 1 kernel)"))


def versions():
    import numpy

    out = dict(python=platform.python_version(), torch=torch.__version__, numpy=numpy.__version__,
               cuda_runtime=torch.version.cuda)
    try:
        import numba

        out["numba"] = numba.__version__
    except Exception as e:  # pragma: no cover
        out["numba"] = repr(e)
    try:
        from importlib.metadata import version

        out["numba_cuda"] = version("numba-cuda")
    except Exception as e:  # pragma: no cover
        out["numba_cuda"] = repr(e)
    return out


def driver():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as e:  # pragma: no cover
        return repr(e)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/kernels.json")
    ap.add_argument("--quick", action="store_true", help="fewer shapes (smoke test)")
    ap.add_argument("--decode-only", action="store_true", help="skip prefill and launch (decode tuning)")
    ap.add_argument("--prefill-only", action="store_true", help="skip decode and launch (prefill tuning)")
    ap.add_argument("--fp32-variants", action="store_true", help="time every fp32 prefill tile, not just the default")
    ap.add_argument("--decode-variants", type=int, default=None,
                    help="time only the first N decode variants (1: the package default; each variant compiles)")
    ap.add_argument("--mma-variants", default=None,
                    help="comma-separated names of the tensor-core tiles to time (default: all; the first is the package's)")
    args = ap.parse_args(argv)
    if args.mma_variants:
        keep = args.mma_variants.split(",")
        MMA_VARIANTS[:] = [v for v in MMA_VARIANTS if v[0] in keep]
    if args.decode_variants:
        DECODE_VARIANTS[:] = DECODE_VARIANTS[:args.decode_variants]
    from pdlab.kernels import get_backend
    from pdlab.kernels import decode_attention as da
    from pdlab.kernels import prefill_attention as pa
    from pdlab.kernels import prefill_mma as pm
    from pdlab.kernels import _numba as nb

    nbk = get_backend("numba")
    res = dict(gpu=torch.cuda.get_device_name(0), driver=driver(), versions=versions(),
               date=time.strftime("%Y-%m-%d"), shapes=dict(num_heads=H, num_kv_heads=HKV, head_dim=D,
                                                         block_size=BS, kv_dtype="bfloat16"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():  # after every section: a run cut short still leaves what it measured
        out.write_text(json.dumps(res, indent=2) + "\n")

    def attempt(what, fn):
        try:
            return fn()
        except Exception as e:  # keep going: the other sections are still worth measuring
            res.setdefault("errors", []).append(f"{what}: {type(e).__name__}: {e}"[:500])
            print(f"{what} FAILED: {e!r}", flush=True)
            return None

    res["copy_tbps"] = copy_tbps()
    print(f"copy: {res['copy_tbps']:.2f} TB/s", flush=True)
    res["decode"] = []
    for batch, context in [] if args.prefill_only else [(16, 4096), (64, 1024), (1, 32768)][: 1 if args.quick else 3]:
        row = attempt(f"decode {batch}x{context}", lambda: bench_decode(nbk, batch, context))
        if row:
            row["ratio_to_copy"] = row["tbps"] / res["copy_tbps"]
            row["graph1_ratio_to_copy"] = row["graph1_tbps"] / res["copy_tbps"]
            row["sdpa_ratio_to_copy"] = row["sdpa_tbps"] / res["copy_tbps"]
            res["decode"].append(row)
            print(f"decode {batch}x{context}: {row}", flush=True)
        save()
    res["decode_load_path"] = da.LOAD_PATH
    res["registers"] = {}
    def usage(kern):  # registers per thread (occupancy: 65536 per SM) and spilled bytes
        return dict(regs=kern.get_regs_per_thread(), local_bytes=kern.get_local_mem_per_thread())

    for name, opts, _ in [] if args.prefill_only else DECODE_VARIANTS:   # the kernels bench_decode ran
        k = attempt("registers", lambda: da._get_kernel("bf16", D, H // HKV, BS, "bf16", **opts))
        if k is not None:
            res["registers"][f"decode_{name}"] = dict(usage(k), blocks_per_sm=nb.blocks_per_sm(k, da.THREADS))
    if args.decode_only:
        save()
        return
    res["prefill"] = []
    for tokens, context in [(4096, 4096), (512, 4096)][: 1 if args.quick else 2]:
        row = attempt(f"prefill {tokens}/{context}", lambda: bench_prefill(nbk, tokens, context, args.fp32_variants))
        if row:
            res["prefill"].append(row)
            print(f"prefill {tokens}/{context}: {row}", flush=True)
        save()
    for tile, regs in PREFILL_VARIANTS if args.fp32_variants else PREFILL_VARIANTS[:1]:
        res["registers"][f"prefill_{'x'.join(map(str, tile))}{f'_cap{regs}' if regs else ''}"] = attempt(
            "registers", lambda: usage(pa.prefill_kernel("bf16", D, H // HKV, BS, tile, regs)))
    for name, tile, regs in MMA_VARIANTS:
        k = attempt("registers", lambda: pm.prefill_mma_kernel("bf16", D, H // HKV, BS, tile, regs))
        if k is not None:
            res["registers"][f"prefill_mma_{name}"] = dict(usage(k), shared_bytes=k.get_shared_mem_per_block(),
                                                           blocks_per_sm=nb.blocks_per_sm(k, 32 * tile[0]))
    if not args.prefill_only:
        res["launch_us"] = attempt("launch", lambda: bench_launch(nbk))
        print(f"launch: {res['launch_us']}", flush=True)
    save()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
