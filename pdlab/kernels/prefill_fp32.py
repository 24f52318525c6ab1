"""The fp32 CUDA-core prefill attention kernel (device code): paged, chunk-aware,
FlashAttention-style. The host side (validation, the launch) is ``prefill_attention.py``.

One launch serves a ragged batch: sequence s contributes q_len_s query rows (a whole prompt or a
chunk of one) whose K/V, and the K/V of everything before them, are already in the paged cache.
Query i of sequence s sits at position seq_len_s - q_len_s + i and attends to keys 0..position.

Work split: one thread block per (query head, tile of BM queries, sequence). The block walks the
keys in tiles of BN (only up to its last query's position: causal). Its THREADS threads form a
(THREADS/16) x 16 grid, thread (ty, tx); like an SGEMM micro-kernel, each thread owns a small
register tile of every matrix product (with 256 threads and BM = 64: 4 rows):

  1. S = (scale Q) K^T for the BM x BN tile. Thread (ty, tx) owns rows ty*RM .. ty*RM+RM-1 and
     keys tx*CN .. tx*CN+CN-1 (e.g. 4 x 4). Q^T and K^T are staged in shared memory DC dims at a
     time; per dim the thread reads its RM + CN operands with 16-byte loads (``load4f``) and does
     RM * CN multiply-adds (register tiling: each loaded value feeds several multiply-adds).
     K comes from the pages with 16-byte loads (8 fp16/bf16 values) and is widened to fp32.
     Staging loops have constant trip counts and neighbouring threads take neighbouring rows,
     so the transposed stores spread over the shared-memory banks.
  2. Online softmax, in registers: the 16 threads that share a row (one half-warp) agree on the
     row max with warp shuffles (``lane_max``), rescale their output rows by
     alpha = exp(m_old - m_new) and keep a *partial* row sum l each (summed across the 16 lanes
     only once, at the end). The probabilities P go to shared memory, transposed.
  3. O += P V: thread (ty, tx) owns rows ty*RM.. and TD output dims, 4 at tx*4 in each 64-dim
     slice (so a half-warp's V reads are 256 contiguous bytes); V is staged VH keys at a time
     with 16-byte shared stores.

Everything is fp32 (the cache is widened on load). No tensor cores: Numba cannot reach them, so
this runs on the fp32 CUDA cores (H200: 67 TFLOP/s peak, versus ~990 on the tensor cores that
SDPA uses). That gap is the lesson, not a bug. Shared memory is static and so limited to 48 KB
per block, which is what fixes the tile shapes.

Scores are kept in base 2 (q scaled by log2(e)), so each exponential is one ``exp2``.
Measurements: bench/KERNEL-NOTES.md.
"""

from __future__ import annotations

import functools
import math

from . import _memory as mem
from . import _numba as nb
from ._numba import SIM, cuda, float32, int32

# Tile shape: (threads, BM queries, BN keys, DC dims per Q/K chunk, VH keys per V chunk).
# The simulator runs one OS thread per CUDA thread, so it gets 32 threads and 16 queries.
TILE = (32, 16, 64, 32, 32) if SIM else (256, 64, 64, 32, 32)
THREADS, BM, BN, DC, VH = TILE
# 128 registers per thread: two 256-thread blocks (16 warps) share an SM, enough warps to hide
# the shared-memory and barrier latencies (bench/kernels.py also times 128-thread tiles)
MAX_REGISTERS = None if SIM else 128


def _pow2(*xs):
    return all(x > 0 and x & (x - 1) == 0 for x in xs)


@functools.lru_cache(maxsize=None)
def prefill_kernel(kind: str, head_dim: int, group: int, block_size: int, tile: tuple = TILE,
                   max_registers=MAX_REGISTERS):
    D, G = head_dim, group
    THREADS, BM, BN, DC, VH = tile
    TY = THREADS // 16           # thread (ty, tx): tx = tid % 16, the 16 lanes of a half-warp
    RM = BM // TY                # query rows per thread:   ty*RM .. ty*RM + RM-1
    CN = BN // 16                # keys per thread in S:    tx*CN .. tx*CN + CN-1
    TD = D // 16                 # output dims per thread, in groups of 4: jg*64 + tx*4 .. +3
    assert RM % 4 == 0 and CN % 4 == 0 and TD % 4 == 0, "register tiles are read 4 values at a time"
    assert D % DC == 0 and DC % 8 == 0 and BN % VH == 0
    assert _pow2(BM, BN, DC, VH, D), "tile sides are powers of two (index math by shifts and masks)"
    QP, KP, PP = BM + 4, BN + 4, BM + 4   # padded rows: fewer bank conflicts, still 16-byte aligned
    AL = nb.ALIGN                   # 16: shared arrays read with load4f must be 16-byte aligned
    KOFF = DC * QP               # K^T chunk [DC][KP] sits after the Q^T chunk [DC][QP]
    BUF = max(DC * QP + DC * KP, VH * D)  # ... and a V chunk [VH][D] reuses the same space
    PTN = BN * PP                # P^T [BN][PP]
    LBM, LBN, LD8 = BM.bit_length() - 1, BN.bit_length() - 1, (D // 8).bit_length() - 1
    NQ, NK, NVC = BM * DC // 4 // THREADS, BN * DC // 8 // THREADS, VH * D // 8 // THREADS  # loads/thread
    assert NQ * THREADS * 4 == BM * DC and NK * THREADS * 8 == BN * DC and NVC * THREADS * 8 == VH * D
    UN = 4                       # micro-kernel steps per loop trip
    NEG = nb.NEG
    load16 = mem.load16()         # 8 fp16/bf16 cache values in one 16-byte load
    unpack2 = mem.unpack2(kind)   # int32 word -> 2 fp32
    load4f = mem.load4f()         # 4 fp32 in one 16-byte load
    store4f = mem.store4f()       # ... and in one 16-byte store
    page_of, in_page = nb.paging(block_size)   # token -> (block-table column, slot in the page)
    row_max = nb.lane_max(16)    # max / sum over the 16 lanes that share a query row
    row_sum = nb.lane_sum(16)
    sig = None if SIM else (
        "void(float32[::1], int16[::1], int16[::1], int32[:, ::1], int32[::1], "
        "int32[::1], float32, float32[:, :, ::1])")

    @nb.kernel(sig=sig, max_registers=max_registers)
    def prefill_kernel(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale, out):
        # q            [total_q * H * D]        fp32 queries of all chunks, back to back (flat)
        # k/v_cache    [num_slots * Hkv * D]    flat paged cache, 16-bit values as int16
        # block_tables [S, max_blocks] int32;  cu_seqlens_q [S+1] int32;  seq_lens [S] int32
        # out          [total_q, H, D]          fp32
        h = cuda.blockIdx.x
        s = cuda.blockIdx.z
        H = cuda.gridDim.x
        q_start = cu_seqlens_q[s]
        q_len = cu_seqlens_q[s + 1] - q_start
        q0 = (cuda.gridDim.y - 1 - cuda.blockIdx.y) * BM   # last tiles (most keys) launch first
        if q0 >= q_len:
            return                                          # whole block leaves: no sync skipped
        hkv = H // G
        kvh = h // G
        ctx0 = seq_lens[s] - q_len                          # position of this chunk's first query
        kv_hi = ctx0 + min(q0 + BM, q_len)                  # keys this tile needs: [0, kv_hi)
        tid = cuda.threadIdx.x
        tx = tid % 16
        r0 = (tid // 16) * RM    # this thread's first query row (of the tile)
        c0 = tx * CN             # its first key column of S
        # scores in base 2: q is scaled by scale * log2(e), so the softmax is exp2 (one instruction)
        qscale = scale * nb.LOG2E

        buf = cuda.shared.array(BUF, float32, alignment=AL)       # Q^T | K^T chunks, later a V chunk
        pt = cuda.shared.array(PTN, float32, alignment=AL)       # P^T [BN][PP]: probabilities
        sacc = cuda.local.array((RM, CN), float32)  # this thread's piece of S
        acc = cuda.local.array((RM, TD), float32)   # this thread's piece of O (unnormalised)
        m = cuda.local.array(RM, float32)           # running max of each of its rows
        l = cuda.local.array(RM, float32)           # running sum over *its* columns of each row
        a = cuda.local.array(RM, float32)
        b = cuda.local.array(TD if TD > CN else CN, float32)
        for i in range(RM):
            m[i] = NEG
            l[i] = float32(0)
            for j in range(TD):
                acc[i, j] = float32(0)

        for k0 in range(0, kv_hi, BN):
            for i in range(RM):
                for j in range(CN):
                    sacc[i, j] = float32(0)
            # ---- 1. S = (scale * Q) K^T, DC dims at a time --------------------------------
            for dc in range(0, D, DC):
                # Q^T chunk [DC][BM], 4 dims per load. Neighbouring threads take neighbouring
                # rows, so their transposed stores land in different shared-memory banks. The
                # trip counts are constants (the loops unroll; row and dims follow from tid).
                for it in range(NQ):
                    e = tid + it * THREADS
                    r = e & (BM - 1)
                    dd = (e >> LBM) * 4
                    x0 = x1 = x2 = x3 = float32(0)
                    if q0 + r < q_len:
                        x0, x1, x2, x3 = load4f(q, ((q_start + q0 + r) * H + h) * D + dc + dd)
                    buf[(dd + 0) * QP + r] = x0 * qscale
                    buf[(dd + 1) * QP + r] = x1 * qscale
                    buf[(dd + 2) * QP + r] = x2 * qscale
                    buf[(dd + 3) * QP + r] = x3 * qscale
                for it in range(NK):                             # K^T chunk [DC][BN], 8 dims/load
                    e = tid + it * THREADS
                    c = e & (BN - 1)                             # (neighbouring keys, as for Q)
                    dd = (e >> LBN) * 8
                    pos = k0 + c
                    kw = (int32(0), int32(0), int32(0), int32(0))
                    if pos < kv_hi:
                        slot = block_tables[s, page_of(pos)] * block_size + in_page(pos)   # paging
                        kw = load16(k_cache, (slot * hkv + kvh) * D + dc + dd)
                    for w in range(4):
                        lo, hi = unpack2(kw[w])
                        buf[KOFF + (dd + 2 * w) * KP + c] = lo
                        buf[KOFF + (dd + 2 * w + 1) * KP + c] = hi
                cuda.syncthreads()
                for d4 in range(0, DC, UN):          # the micro-kernel: RM x CN outer products
                    for u in range(UN):              # (UN per trip: less loop overhead)
                        dd = d4 + u
                        for i in range(0, RM, 4):
                            a[i], a[i + 1], a[i + 2], a[i + 3] = load4f(buf, dd * QP + r0 + i)
                        for j in range(0, CN, 4):
                            b[j], b[j + 1], b[j + 2], b[j + 3] = load4f(buf, KOFF + dd * KP + c0 + j)
                        for i in range(RM):
                            for j in range(CN):
                                sacc[i, j] += a[i] * b[j]
                cuda.syncthreads()
            # ---- 2. mask (diagonal and ragged tiles only) and online softmax, in registers ---
            full = k0 + BN <= ctx0 + q0 + 1 and q0 + BM <= q_len   # every key visible to every row
            for i in range(RM):
                r = r0 + i
                qpos = ctx0 + q0 + r
                mx = NEG
                for j in range(CN):
                    if full or (k0 + c0 + j <= qpos and q0 + r < q_len):  # causal (=> < seq_len)
                        mx = max(mx, sacc[i, j])
                    else:
                        sacc[i, j] = NEG
                mx = max(m[i], row_max(mx))          # the row's new max, same on its 16 lanes
                alpha = math.exp2(m[i] - mx)         # rescale what was summed so far
                m[i] = mx
                tot = l[i] * alpha
                for j in range(CN):
                    sv = sacc[i, j]
                    p = math.exp2(sv - mx) if sv > NEG else float32(0)
                    tot += p
                    pt[(c0 + j) * PP + r] = p
                l[i] = tot
                for j in range(TD):
                    acc[i, j] *= alpha
            # ---- 3. O += P V, VH keys at a time ------------------------------------------
            for vh in range(0, BN, VH):
                for it in range(NVC):                            # V chunk [VH][D], 8 dims/load
                    e = tid + it * THREADS
                    c = e >> LD8
                    dd = (e & (D // 8 - 1)) * 8
                    pos = k0 + vh + c
                    vw = (int32(0), int32(0), int32(0), int32(0))
                    if pos < kv_hi:
                        slot = block_tables[s, page_of(pos)] * block_size + in_page(pos)
                        vw = load16(v_cache, (slot * hkv + kvh) * D + dd)
                    v0, v1 = unpack2(vw[0])
                    v2, v3 = unpack2(vw[1])
                    v4, v5 = unpack2(vw[2])
                    v6, v7 = unpack2(vw[3])
                    store4f(buf, c * D + dd, v0, v1, v2, v3)      # two 16-byte stores, not eight
                    store4f(buf, c * D + dd + 4, v4, v5, v6, v7)
                cuda.syncthreads()                   # V chunk and P are in shared memory
                for c4 in range(0, VH, UN):          # the micro-kernel: RM x TD outer products
                    for u in range(UN):
                        c = c4 + u
                        for i in range(0, RM, 4):
                            a[i], a[i + 1], a[i + 2], a[i + 3] = load4f(pt, (vh + c) * PP + r0 + i)
                        for jg in range(0, TD, 4):   # dims jg*16 + tx*4 ..: a half-warp reads 256
                            b[jg], b[jg + 1], b[jg + 2], b[jg + 3] = load4f(   # contiguous bytes
                                buf, c * D + jg * 16 + tx * 4)
                        for i in range(RM):
                            for j in range(TD):
                                acc[i, j] += a[i] * b[j]
                cuda.syncthreads()

        for i in range(RM):
            tot = row_sum(l[i])               # the row's full sum (every lane calls: shuffles)
            r = r0 + i
            if q0 + r < q_len:
                inv = float32(1) / tot        # > 0: every query sees at least key 0
                for j in range(TD):
                    out[q_start + q0 + r, h, (j // 4) * 64 + tx * 4 + j % 4] = acc[i, j] * inv

    return prefill_kernel
