"""Where a decode launch spends its time: per-block timestamps from inside the kernel.

    python bench/decode_timeline.py --out bench/results/decode-timeline-h200-2026-11-29.json

A fit of time against context (bench/decode_scaling.py) says *that* a launch has a fixed cost;
this says *where*. It compiles a copy of the decode kernel's source with ``%globaltimer`` reads
(the GPU's nanosecond clock, one clock for all SMs) at each phase boundary, and has thread 0 of
every block write them after its partial output. The package's kernel is not touched: the
copy is made from its source text at the anchors listed in ``STAMPS``, and a missing anchor
(the kernel changed) stops the script instead of measuring the wrong thing. Timestamps are
relative to the earliest block start of the launch, in microseconds, summarised over blocks
(min, p10, p50, p90, max). Phases:

- start: the block begins; first_data: its first step's K/V have landed (the ramp)
- loop_end: warp 0 has consumed its last step; all_warps: the whole block has
- rows_in_smem / partial_written: the merge of the block's token rows (through shared memory)
  and the write of its partial output
- counted: its arrival is counted (one acquire-release atomic); for the block that arrives last:
  merge_round1 / merge_end: the FlashDecoding merge of the splits (first round of loads, end)

Shapes are bench/kernels.py's, LAUNCHES launches back to back in one replayed CUDA graph (a
launch that follows another, as in a decode step, is not one that follows the host: the first
K/V and the tail differ), each launch summarised over its blocks, then the median over launches.
The stamps add a few instructions per block and slow a launch slightly; they do not change the
loop's structure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from kernels import BS, D, DTYPE, H, HKV, paged_cache  # noqa: E402

SLOTS = 12   # timestamps per block in the trace area


def _globaltimer():
    """An intrinsic reading the GPU's global nanosecond clock (``%globaltimer``) as an int64."""
    from llvmlite import ir
    from numba import types as nt
    from numba.cuda.extending import intrinsic

    @intrinsic
    def globaltimer(typingctx):
        def codegen(context, builder, sig, args):
            asm = ir.InlineAsm(ir.FunctionType(ir.IntType(64), []), "mov.u64 $0, %globaltimer;", "=l",
                               side_effect=True)
            return builder.call(asm, [])

        return nt.int64(), codegen

    return globaltimer


def _stamp(slot, indent):
    """Thread 0 writes the clock (low 24 bits, exact in fp32) into its block's trace slot."""
    return (f"{indent}if tid == 0:\n"
            f"{indent}    o_part[trace_ + {slot}] = float32(nb.globaltimer() & 0xFFFFFF)\n")


# (phase name, slot, anchor in decode_attention.py, stamp placed "after" or "before" it, indent)
STAMPS = [
    ("first_data", 1, "                wait_step()\n", "after_first_step", "                    "),
    ("loop_end", 2, "            wait_all()                   # (only empty groups can be left)\n", "after", "            "),
    ("all_warps", 3, "            cuda.syncthreads()           # every lane is done with the ring: reuse it below\n",
     "after", "            "),
    ("rows_in_smem", 4, "                        acc[g, v * VEC + 7])\n        cuda.syncthreads()\n", "after", "        "),
    ("partial_written", 5, "        if P == 1:\n            return\n", "before", "        "),
    ("counted", 6, "            sm_last[0] = float32(arrive(done, s * hkv + kvh))   # splits counted before this one\n"
     "        cuda.syncthreads()\n", "after", "        "),
    ("merge_round1", 7, "                mx = mr\n", "after_first_round", "                    "),
    ("merge_end", 8, "            done[s * hkv + kvh] = 0      # ready for the next launch (and the next graph replay)\n",
     "after", "            "),
]
MERGED = 9   # slot flagging the block that merged the splits


def instrumented_module():
    """A module holding a timestamped copy of the decode kernel (pdlab.kernels.decode_kernel)."""
    from pdlab.kernels import _numba as nb

    nb.globaltimer = _globaltimer()
    src = (ROOT / "pdlab" / "kernels" / "decode_kernel.py").read_text()

    def replace(anchor, new):
        nonlocal src
        if src.count(anchor) != 1:
            raise SystemExit(f"decode_timeline: anchor not found once in decode_kernel.py: {anchor!r}")
        src = src.replace(anchor, new)

    replace("        kvh = cuda.blockIdx.x\n", "        t_start_ = nb.globaltimer()\n        kvh = cuda.blockIdx.x\n")
    replace("        tid = cuda.threadIdx.x\n",
            "        tid = cuda.threadIdx.x\n"
            f"        trace_ = cuda.gridDim.z * cuda.gridDim.y * hkv * G * D + "
            f"((split * cuda.gridDim.y + s) * hkv + kvh) * {SLOTS}\n"
            "        if tid == 0:\n            o_part[trace_] = float32(t_start_ & 0xFFFFFF)\n")
    for name, slot, anchor, where, indent in STAMPS:
        if where == "after":
            replace(anchor, anchor + _stamp(slot, indent))
        elif where == "before":
            replace(anchor, _stamp(slot, indent) + anchor)
        elif where == "after_first_step":
            replace(anchor, anchor + "                if base == start:\n" + _stamp(slot, indent))
        elif where == "after_first_round":
            replace(anchor, anchor + "                if p0 == 0:\n" + _stamp(slot, indent))
    replace(_stamp(8, "            "), _stamp(8, "            ") + f"            o_part[trace_ + {MERGED}] = float32(1)\n")
    mod = types.ModuleType("pdlab.kernels.decode_kernel_timeline")
    mod.__package__ = "pdlab.kernels"
    exec(compile(src, "decode_kernel_timeline", "exec"), mod.__dict__)
    return mod


LAUNCHES = 20   # back to back in one CUDA graph, each with its own trace area


def timeline(mod, batch, context, num_splits=None, **variant):
    """Phase timestamps for ``batch`` sequences of ``context`` tokens (``num_splits`` and
    ``variant``: as ``decode_attention`` takes them): LAUNCHES launches replayed back to back from
    one CUDA graph, as a decode step runs; each launch summarised over its blocks (µs from its
    first block start), then the median over launches 2.. (the first follows the host, not a
    kernel). ``gap`` is the time from one launch's last stamp to the next one's first block."""
    from pdlab.kernels import _numba as nb
    from pdlab.kernels import decode_attention as da

    kc, vc, bt, sl = paged_cache(batch, context)
    q = torch.randn(batch, H, D, device="cuda", dtype=DTYPE)
    # the instrumented copy of the device code, built as the host's _get_kernel builds the package's
    kern = mod.decode_kernel("bf16", D, H // HKV, BS, qkind="bf16", lazy=da.LAZY_RESCALE, **variant)
    splits = num_splits or da.choose_splits(batch, HKV, context, nb.blocks_per_sm(kern, mod.THREADS))
    splits, steps = da.split_plan(context, splits, D, H // HKV, **variant)
    blocks = HKV * batch * splits
    base = batch * H * splits * D                       # the trace area follows the partials
    parts = [torch.zeros(base + blocks * SLOTS, dtype=torch.float32, device="cuda") for _ in range(LAUNCHES)]
    lse = torch.empty(batch * H * splits, device="cuda")
    out = torch.empty(batch, H, D, dtype=DTYPE, device="cuda")
    done = da.done_counters(batch * HKV, q.device)

    def launch(o_part):
        kern[(HKV, batch, splits), mod.THREADS, nb.stream()](
            nb.as_numba(q.view(-1).view(torch.int16)), nb.as_numba(kc.view(torch.int16).view(-1)),
            nb.as_numba(vc.view(torch.int16).view(-1)), nb.as_numba(bt), nb.as_numba(sl), nb.float32(D ** -0.5),
            steps, nb.as_numba(o_part), nb.as_numba(lse), nb.as_numba(done), nb.as_numba(out.view(-1).view(torch.int16)))

    launch(parts[0])                                    # compile and load outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for o in parts:
            launch(o)
    for _ in range(3):                                  # warm-up replays
        graph.replay()
    torch.cuda.synchronize()
    for o in parts:                                     # a fresh trace: which block merged may change
        o[base:].zero_()
    graph.replay()
    torch.cuda.synchronize()
    raws = [o[base:].view(blocks, SLOTS).cpu().numpy().astype(np.int64) for o in parts]
    t0 = raws[0][:, 0].min()
    names = [("start", 0)] + [(n, s) for n, s, *_ in STAMPS]
    if splits == 1:
        names = [(n, s) for n, s in names if n not in ("counted", "merge_round1", "merge_end")]
    per_launch, gaps, prev_end = [], [], None
    for raw in raws:
        rel = ((raw - t0) % (1 << 24)) / 1000.0                      # microseconds since launch 0
        first = rel[:, 0].min()
        merged = raw[:, MERGED] == 1
        phases = {}
        for name, slot in names:
            v = (rel[merged, slot] if name.startswith("merge") else rel[:, slot]) - first
            phases[name] = np.percentile(v, [0, 10, 50, 90, 100])
        end = first + phases[names[-1][0]][-1]
        if prev_end is not None:
            gaps.append(first - prev_end)
        prev_end = end
        per_launch.append(phases)
    row = dict(batch=batch, context=context, num_splits=splits, **variant, blocks=blocks, launches=LAUNCHES,
               gap_us=round(float(np.median(gaps)), 2), phases={})
    for name, _ in names:
        med = np.median(np.array([p[name] for p in per_launch[1:]]), axis=0)
        row["phases"][name] = dict(zip(("min", "p10", "p50", "p90", "max"), med.round(2).tolist()))
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/decode-timeline.json")
    args = ap.parse_args(argv)
    mod = instrumented_module()
    res = dict(gpu=torch.cuda.get_device_name(0), date=time.strftime("%Y-%m-%d"), unit="microseconds",
               shapes=[])
    for batch, context in [(1, 32768), (16, 4096), (64, 1024)]:
        row = timeline(mod, batch, context)
        res["shapes"].append(row)
        print(f"{batch} x {context}, {row['num_splits']} splits, {row['blocks']} blocks, "
              f"gap between launches {row['gap_us']} us")
        for name, st in row["phases"].items():
            print(f"  {name:16s} " + "  ".join(f"{k} {v:7.2f}" for k, v in st.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
