"""Paged decode attention: one query token per sequence against its whole paged KV cache.

Decode is memory-bound: every K and V byte of the context is read once per generated token and
used for only ~2 FLOPs per query head. So the kernel is organised around moving bytes:

- One thread block per (KV head, sequence, split). All ``group`` query heads that share the KV
  head are handled by the same block (GQA), so each K/V byte is read from memory once.
- A token's K row (head_dim values) is split over ``LPR = head_dim / 8`` neighbouring lanes, each
  doing one 16-byte load (8 fp16/bf16 values). A 128-thread block thus works on ``128 / LPR``
  token rows at once, ``UNROLL`` tokens per thread per step, and loads step i+1 while it
  computes step i (prefetch), so enough bytes are in flight to keep HBM busy.
- Each lane does its 8 multiply-adds of q.k, then the partial dots are summed over the LPR lanes
  with warp shuffles (``lane_sum``). Softmax is *online* (running max m, sum l, output acc per
  query head), so scores never go to memory. The output is rescaled only when a step raises the
  running max, which after the first few steps is rare: decode is short of instruction issue
  slots as much as of bandwidth (4 multiply-adds per K/V value for a group of 4 heads).
- q is read in its own dtype (16-byte loads) and the output written in it: no conversion
  kernels around the launch (each would cost a few microseconds in a ~60 us decode step).
- Tokens past the end of a sequence are clamped to its last token (a re-read, masked out), so
  the loads need no branch; with a page size that is a multiple of the token rows per step, one
  block-table lookup serves a whole row group.
- FlashDecoding: with a small batch there are too few (KV head, sequence) blocks to fill 132
  SMs, so the context is cut into ``num_splits`` pieces processed by separate blocks; each writes
  a partial output and its log-sum-exp, and ``merge_kernel`` combines them. The split count is
  chosen so that all blocks run in one wave (``BLOCKS_PER_SM`` per SM, fixed by the register
  cap): a second, partial wave would leave most SMs idle while it runs.

Measured on an H200 (bench/results/kernels-h200-2026-11-29.json; bf16, 32/8 heads, head dim 128):
3.0-3.1 TB/s at batch 16 x 4096 and 64 x 1024 (70-73% of a device copy), 2.3 TB/s for one
32k-token sequence (its 64 splits are short, so the per-block start and merge weigh more).
torch SDPA on dense K/V reaches 3.3-4.1 TB/s.
"""

from __future__ import annotations

import functools
import math

import torch

from numba import types

from . import _numba as nb
from . import validate
from ._numba import SIM, cuda, float32, int32

VEC = 8          # fp16/bf16 values per 16-byte load
THREADS = 32 if SIM else 128   # 4 warps per block on a GPU; one on the simulator (1 OS thread each)
UNROLL = 2       # tokens per thread per step (x2 in flight: the next step is prefetched)
HEAD_DIMS = (64, 128)
MIN_TOKENS_PER_SPLIT = 256
MAX_REGISTERS = 128   # 128 threads x 128 registers: 4 blocks (16 warps) fit on an SM (64K registers)
BLOCKS_PER_SM = 65536 // (THREADS * MAX_REGISTERS)   # (groups of 8 heads need more: 2 per SM)
LAZY_RESCALE = True   # rescale the output only when the running max grows (False: every step)


def _kind(cache) -> str:
    return "bf16" if cache.dtype == torch.bfloat16 else "f16"


@functools.lru_cache(maxsize=None)
def decode_kernel(kind: str, head_dim: int, group: int, block_size: int, wide: bool = True,
                  unroll: int = UNROLL, qkind: str = "f32", lazy: bool = True,
                  max_registers=MAX_REGISTERS):
    """Compile (once per configuration) the split-K decode kernel. The arguments are baked in
    as constants so loops over them unroll and the small per-thread arrays live in registers.
    ``wide``: 16-byte loads (else eight 2-byte loads per lane, the slower fallback).
    ``qkind``: dtype of q ("f32", or "f16"/"bf16" passed as int16 bits). ``lazy``: rescale the
    output only when the running max grows."""
    D, G, BS, U, LAZY = head_dim, group, block_size, unroll, lazy
    LPR = D // VEC               # lanes sharing one token row: 16 for D=128, 8 for D=64
    W = VEC // 2                 # int32 words per lane per row (2 values each)
    NG = THREADS // LPR          # token rows a block works on at once
    STEP = NG * U                # tokens a block consumes per loop iteration
    NEG = nb.NEG
    load16 = nb.load16(wide)     # 16-byte load -> 4 raw int32 words (plain Python on the simulator)
    unpack2 = nb.unpack2(kind)   # word -> 2 fp32 (fp16 or bf16 bits)
    row_sum = nb.lane_sum(LPR)   # sum over the LPR lanes of a row (warp shuffles on a GPU)
    if qkind == "f32":
        def q8(q, i):            # 8 consecutive query values as fp32
            return (q[i], q[i + 1], q[i + 2], q[i + 3], q[i + 4], q[i + 5], q[i + 6], q[i + 7])
    else:
        unpack_q = nb.unpack2(qkind)

        def q8(q, i):            # the same from fp16/bf16 bits: one 16-byte load, then widen
            w = load16(q, i)
            a0, a1 = unpack_q(w[0])
            b0, b1 = unpack_q(w[1])
            c0, c1 = unpack_q(w[2])
            d0, d1 = unpack_q(w[3])
            return (a0, a1, b0, b1, c0, c1, d0, d1)
    # Token rows: row group i covers tokens t0 .. t0+NG-1 (t0 a multiple of NG). When NG divides
    # the page size, a row group never straddles two pages: one block-table lookup (the same for
    # every thread of the group) serves all its rows.
    ALIGNED = BS % NG == 0

    def slot_of(block_tables, s, t0, row, end):
        """Cache slot of token t0 + row. Tokens past the end are clamped to the last token (a
        harmless re-read, masked out later; never an unwritten slot): the loads need no branch."""
        if ALIGNED:
            t0 = min(t0, (end - 1) - (end - 1) % NG)      # the last row group, if past the end
            return block_tables[s, t0 // BS] * BS + t0 % BS + min(row, end - 1 - t0)
        t = min(t0 + row, end - 1)
        return block_tables[s, t // BS] * BS + t % BS

    if not SIM:
        q8 = cuda.jit(device=True, inline="always")(q8)
        slot_of = cuda.jit(device=True, inline="always")(slot_of)
    pack = nb.pack1(qkind)       # fp32 -> the output's dtype (q's)
    q_t = "float32" if qkind == "f32" else "int16"
    sig = None if SIM else (
        f"void({q_t}[::1], int16[::1], int16[::1], int32[:, ::1], int32[::1], "
        f"float32, int32, float32[:, :, :, ::1], float32[:, :, ::1], {q_t}[::1])")

    @nb.kernel(sig=sig, max_registers=max_registers)
    def decode_kernel(q, k_cache, v_cache, block_tables, seq_lens, scale, split_len, o_part, lse_part,
                      out):
        # q            [S * H * D]               query, one per sequence (flat; fp32 or 16-bit)
        # k/v_cache    [num_slots * Hkv * D]     flat paged cache, 16-bit values as int16
        # block_tables [S, max_blocks] int32;  seq_lens [S] int32
        # o_part       [S, H, num_splits, D]     fp32 output of this split (normalised)
        # lse_part     [S, H, num_splits]        fp32 log-sum-exp of this split's scores
        # out          [S * H * D]               the output in q's dtype, when there is one split
        kvh = cuda.blockIdx.x
        s = cuda.blockIdx.y
        split = cuda.blockIdx.z
        hkv = cuda.gridDim.x
        tid = cuda.threadIdx.x
        row = tid // LPR         # which token row of the current step this thread works on
        d0 = (tid % LPR) * VEC   # which 8 dims of that row
        start = split * split_len
        end = min(start + split_len, seq_lens[s])

        qv = cuda.local.array((G, VEC), float32)    # this lane's slice of every query head
        acc = cuda.local.array((G, VEC), float32)   # unnormalised output slice per head
        m = cuda.local.array(G, float32)            # running max score per head
        l = cuda.local.array(G, float32)            # running sum of exp(score - m) per head
        kw = cuda.local.array((U, W), int32)        # raw K/V words being loaded (next step)
        vw = cuda.local.array((U, W), int32)
        kc = cuda.local.array((U, W), int32)        # raw K/V words being used (this step)
        vc = cuda.local.array((U, W), int32)
        sc = cuda.local.array(U, float32)           # this step's scores for one head
        ok = cuda.local.array(U, types.boolean)     # which of this step's tokens are real
        kf = cuda.local.array(VEC, float32)
        for g in range(G):
            qq = q8(q, ((s * hkv + kvh) * G + g) * D + d0)
            for i in range(VEC):
                qv[g, i] = qq[i] * scale           # fold the scale into q once
                acc[g, i] = float32(0)
            m[g] = NEG
            l[g] = float32(0)
        # prologue: start loading the first step
        for u in range(U):
            slot = slot_of(block_tables, s, start + u * NG, row, end)   # paging: block id -> slot
            idx = (slot * hkv + kvh) * D + d0
            k4 = load16(k_cache, idx)
            v4 = load16(v_cache, idx)
            for w in range(W):
                kw[u, w] = k4[w]
                vw[u, w] = v4[w]

        # Same trip count for every thread of the block: row_sum needs all lanes present.
        for base in range(start, end, STEP):
            # 1) take this step's words, then issue the next step's loads before computing:
            #    the memory system works on step i+1 while the ALUs work on step i
            for u in range(U):
                for w in range(W):
                    kc[u, w] = kw[u, w]
                    vc[u, w] = vw[u, w]
            for u in range(U):
                slot = slot_of(block_tables, s, base + STEP + u * NG, row, end)
                idx = (slot * hkv + kvh) * D + d0
                k4 = load16(k_cache, idx)
                v4 = load16(v_cache, idx)
                for w in range(W):
                    kw[u, w] = k4[w]
                    vw[u, w] = v4[w]
            for u in range(U):
                ok[u] = base + u * NG + row < end         # a real token, not a clamped re-read
            # 2) per query head: U scores, one max/rescale for the step, then P.V
            for g in range(G):
                mx = m[g]
                for u in range(U):
                    for w in range(W):
                        a, b = unpack2(kc[u, w])
                        kf[2 * w] = a
                        kf[2 * w + 1] = b
                    part = float32(0)
                    for i in range(VEC):
                        part += qv[g, i] * kf[i]
                    sc[u] = row_sum(part)                  # full q.k, on every lane of the row
                    if ok[u]:
                        mx = max(mx, sc[u])
                if mx > m[g] or not LAZY:                  # the max grew: rescale what was summed
                    alpha = math.exp(m[g] - mx)            # (all lanes of a row agree on mx)
                    l[g] *= alpha
                    for i in range(VEC):
                        acc[g, i] *= alpha
                lsum = l[g]
                for u in range(U):
                    p = math.exp(sc[u] - mx) if ok[u] else float32(0)
                    lsum += p
                    for w in range(W):
                        a, b = unpack2(vc[u, w])
                        acc[g, 2 * w] += p * a
                        acc[g, 2 * w + 1] += p * b
                l[g] = lsum
                m[g] = mx

        # 3) the NG rows saw different tokens: merge their (m, l, acc) through shared memory
        sm_m = cuda.shared.array((NG, G), float32)
        sm_l = cuda.shared.array((NG, G), float32)
        sm_acc = cuda.shared.array((NG, G, D), float32)
        for g in range(G):
            if d0 == 0:
                sm_m[row, g] = m[g]
                sm_l[row, g] = l[g]
            for i in range(VEC):
                sm_acc[row, g, d0 + i] = acc[g, i]
        cuda.syncthreads()
        for o in range(tid, G * D, THREADS):
            g = o // D
            d = o % D
            mx = NEG
            for r in range(NG):
                mx = max(mx, sm_m[r, g])
            tot = float32(0)
            val = float32(0)
            for r in range(NG):
                w = math.exp(sm_m[r, g] - mx)
                tot += sm_l[r, g] * w
                val += sm_acc[r, g, d] * w
            h = kvh * G + g
            if cuda.gridDim.z == 1:                       # one split: this is the answer
                out[(s * hkv * G + h) * D + d] = pack(val / tot)   # tot > 0: seq_len >= 1
            else:
                lse = NEG
                if tot > float32(0):
                    o_part[s, h, split, d] = val / tot
                    lse = mx + math.log(tot)
                else:                                     # an empty split (past seq_len)
                    o_part[s, h, split, d] = float32(0)
                if d == 0:
                    lse_part[s, h, split] = lse

    return decode_kernel


@functools.lru_cache(maxsize=None)
def merge_kernel(okind: str = "f32"):
    """Combine the splits: out = sum_p exp(lse_p - max) * o_p / sum_p exp(lse_p - max), written
    in the output's dtype (``okind``: "f32", or "f16"/"bf16" bits as int16)."""
    pack = nb.pack1(okind)
    o_t = "float32" if okind == "f32" else "int16"
    sig = None if SIM else f"void(float32[:, :, :, ::1], float32[:, :, ::1], {o_t}[::1])"

    @nb.kernel(sig=sig)
    def merge_kernel(o_part, lse_part, out):
        # o_part [S, H, P, D], lse_part [S, H, P] -> out [S * H * D]; grid (H, S), one thread per d
        h = cuda.blockIdx.x
        s = cuda.blockIdx.y
        d = cuda.threadIdx.x
        n = lse_part.shape[2]
        mx = nb.NEG
        for p in range(n):
            mx = max(mx, lse_part[s, h, p])
        tot = float32(0)
        val = float32(0)
        for p in range(n):
            w = math.exp(lse_part[s, h, p] - mx)   # 0 for empty splits (lse = -1e30)
            tot += w
            val += w * o_part[s, h, p, d]
        out[(s * cuda.gridDim.x + h) * o_part.shape[3] + d] = pack(val / tot)

    return merge_kernel


#: "wide" (16-byte loads) unless building them failed on this machine, then "scalar"
LOAD_PATH = "wide"


def _get_kernel(kind, d, group, bs, unroll=None, qkind="f32"):
    global LOAD_PATH
    unroll = unroll or UNROLL
    # the cap fits the default unroll with up to 4 heads per KV head; more state would spill
    regs = MAX_REGISTERS if unroll == UNROLL and group <= 4 else None
    if LOAD_PATH == "wide":
        try:
            k = decode_kernel(kind, d, group, bs, True, unroll, qkind, LAZY_RESCALE, regs)
            if not SIM:
                for compiled in k.overloads.values():
                    compiled.bind()   # assemble and load now, so a PTX error surfaces here
            return k
        except Exception as e:  # an NVVM/driver that rejects the inline PTX: keep working, slower
            import warnings

            warnings.warn(f"16-byte loads unavailable ({type(e).__name__}: {e}); using 2-byte loads")
            LOAD_PATH = "scalar"
    return decode_kernel(kind, d, group, bs, False, unroll, qkind, LAZY_RESCALE, regs)


def check_supported(head_dim: int, group: int) -> None:
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"q: head_dim {head_dim} not supported by the Numba decode kernel "
                         f"(supported: {HEAD_DIMS}); use get_backend('torch')")
    if group > 8:
        raise ValueError(f"q: {group} query heads per KV head; the Numba kernels support up to 8")


def choose_splits(num_seqs: int, num_kv_heads: int, max_context: int, blocks_per_sm: int = None) -> int:
    """FlashDecoding split count: as many splits as fit in *one wave* of blocks (BLOCKS_PER_SM
    resident blocks on each SM), but no split shorter than MIN_TOKENS_PER_SPLIT tokens (each
    split costs a partial write and a share of the merge). Rounding up instead (say 5 splits of
    16 x 8 blocks = 640 > 528 slots) starts a second wave that runs on a few SMs while the rest
    idle. No split once the batch alone fills the slots."""
    blocks = max(1, num_seqs * num_kv_heads)
    slots = (blocks_per_sm or BLOCKS_PER_SM) * nb.num_sms()
    return max(1, min(slots // blocks, -(-max_context // MIN_TOKENS_PER_SPLIT)))


def split_plan(max_context: int, num_splits: int, head_dim: int, unroll=None):
    """(splits, tokens per split) for ``num_splits`` requested: every split but the last starts on
    a whole block step (and so on a row group), so the split count can come out a little lower."""
    step = (THREADS // (head_dim // VEC)) * (unroll or UNROLL)   # tokens a block consumes per step
    split_len = -(-max_context // num_splits)
    split_len = -(-split_len // step) * step
    return -(-max_context // split_len), split_len


def decode_attention(q, k_cache, v_cache, block_tables, seq_lens, scale, num_splits=None, check=True,
                     unroll=None):
    """q [S, H, D] -> out [S, H, D] (q's dtype). ``num_splits`` fixes the FlashDecoding split
    count (default: chosen from the batch and the block table width, no host sync). ``check=False``
    skips argument validation (the CUDA-graph path validates once before capture)."""
    if check:
        validate.check_decode(q, k_cache, v_cache, block_tables, seq_lens, scale)
    nblk, bs, hkv, d = k_cache.shape
    S, H, _ = q.shape
    check_supported(d, H // hkv)
    out = torch.empty(S, H, d, dtype=q.dtype, device=q.device)   # [S, H, D], written by a kernel
    if S == 0:
        return out
    max_ctx = block_tables.shape[1] * bs          # upper bound on any seq_len, known without a sync
    splits = num_splits or choose_splits(S, hkv, max_ctx)
    splits, split_len = split_plan(max_ctx, splits, d, unroll)
    if splits == 1:                                # the kernel writes `out` itself: no partials
        o_part = torch.empty(1, 1, 1, d, dtype=torch.float32, device=q.device)
        lse = torch.empty(1, 1, 1, dtype=torch.float32, device=q.device)
    else:
        o_part = torch.empty(S, H, splits, d, dtype=torch.float32, device=q.device)
        lse = torch.empty(S, H, splits, dtype=torch.float32, device=q.device)
    # q goes in as it is (no conversion kernel) and out comes back in q's dtype: fp32, or
    # fp16/bf16 as int16 bits (q read 16 bytes at a time)
    qkind = "f32" if q.dtype == torch.float32 else _kind(q)
    qf, of = q.contiguous().view(-1), out.view(-1)
    if qkind != "f32":
        qf, of = qf.view(torch.int16), of.view(torch.int16)
        if qf.data_ptr() % 16:                    # an odd view: 16-byte loads need alignment
            qf = qf.clone()
    st = nb.stream()
    k = _get_kernel(_kind(k_cache), d, H // hkv, bs, unroll, qkind)
    k[(hkv, S, splits), THREADS, st](
        nb.as_numba(qf), nb.as_numba(k_cache.view(torch.int16).view(-1), persistent=True),
        nb.as_numba(v_cache.view(torch.int16).view(-1), persistent=True), nb.as_numba(block_tables),
        nb.as_numba(seq_lens), float32(scale), split_len, nb.as_numba(o_part), nb.as_numba(lse),
        nb.as_numba(of))
    if splits > 1:
        merge_kernel(qkind)[(H, S), d, st](nb.as_numba(o_part), nb.as_numba(lse), nb.as_numba(of))
    return out
