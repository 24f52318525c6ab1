"""Paged, chunk-aware prefill attention (FlashAttention-style, fp32 CUDA cores).

One launch serves a ragged batch: sequence s contributes q_len_s query rows (a whole prompt or a
chunk of one) whose K/V, and the K/V of everything before them, are already in the paged cache.
Query i of sequence s sits at position seq_len_s - q_len_s + i and attends to keys 0..position.

Work split: one thread block per (query head, tile of BM queries, sequence). The block walks the
keys in tiles of BN (only up to its last query's position: causal), and for each tile

  1. S = Q K^T for the BM x BN tile, accumulated in registers: each thread owns an RM x (BN/16)
     piece of S and reads Q and K^T chunks of DC dims from shared memory (register tiling: every
     value loaded from shared memory feeds several multiply-adds),
  2. masks (causal, sequence end), and updates the online softmax per row (running max m,
     running sum l; the rescale factor alpha is applied to the output accumulators),
  3. O += P V, again register-tiled: each thread owns RM rows x D/16 dims of the output.

No tensor cores: Numba cannot reach them, so this runs on the fp32 CUDA cores (H200: 67 TFLOP/s
peak, versus ~990 on tensor cores that SDPA uses). That gap is the lesson, not a bug. Measured on
an H200 (bench/results/kernels-h200-2026-11-29.json): 5.9 TFLOP/s for a causal 4096-token prompt
(SDPA: 530). The kernel uses 216 registers per thread, so only 2 blocks (8 warps) fit on an SM,
and the per-row softmax runs on half the threads between barriers: occupancy and barriers, not
the multiply-adds, bound it.
"""

from __future__ import annotations

import functools
import math

import torch

from . import _numba as nb
from . import validate
from ._numba import SIM, cuda, float32

# Tile shape. The simulator runs one OS thread per CUDA thread and pays per padded multiply-add,
# so it uses small tiles; the GPU uses 64 x 64 tiles and 128 threads.
# (threads, BM queries, BN keys, DC dims per Q/K chunk, VH keys per V half-tile)
TILE = (32, 16, 16, 32, 16) if SIM else (128, 64, 64, 32, 32)
THREADS, BM, BN, DC, VH = TILE
HEAD_DIMS = (64, 128)


def _kind(cache) -> str:
    return "bf16" if cache.dtype == torch.bfloat16 else "f16"


@functools.lru_cache(maxsize=None)
def prefill_kernel(kind: str, head_dim: int, group: int, block_size: int, tile: tuple = TILE):
    D, G, BS = head_dim, group, block_size
    THREADS, BM, BN, DC, VH = tile
    TY = THREADS // 16           # thread rows: thread (ty, tx) with tx = tid % 16
    RM = BM // TY                # query rows per thread: ty, ty + TY, ...
    CN = BN // 16                # keys per thread in S: tx, tx + 16, ...
    TD = D // 16                 # output dims per thread: tx, tx + 16, ...
    QP, KP = BM + 1, BN + 1      # padded row lengths: the +1 spreads columns over the 32 banks
    KOFF = DC * QP               # K^T chunk sits after the Q^T chunk in the shared buffer
    BUF = max(DC * QP + DC * KP, VH * D)
    NEG = nb.NEG
    load1 = nb.load1(kind)
    cache_t = "int16" if kind == "bf16" else "float16"
    sig = None if SIM else (
        f"void(float32[:, :, ::1], {cache_t}[::1], {cache_t}[::1], int32[:, ::1], int32[::1], "
        "int32[::1], float32, float32[:, :, ::1])")

    @nb.kernel(sig=sig)
    def prefill_kernel(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale, out):
        # q            [total_q, H, D]          fp32 queries of all chunks, back to back
        # k/v_cache    [num_slots * Hkv * D]    flat paged cache (fp16, or bf16 bits as int16)
        # block_tables [S, max_blocks] int32;  cu_seqlens_q [S+1] int32;  seq_lens [S] int32
        # out          [total_q, H, D]          fp32
        h = cuda.blockIdx.x
        s = cuda.blockIdx.z
        q_start = cu_seqlens_q[s]
        q_len = cu_seqlens_q[s + 1] - q_start
        q0 = (cuda.gridDim.y - 1 - cuda.blockIdx.y) * BM   # last tiles (most keys) launch first
        if q0 >= q_len:
            return                                          # whole block leaves: no sync skipped
        hkv = cuda.gridDim.x // G                           # grid.x = H = G * Hkv
        kvh = h // G
        ctx0 = seq_lens[s] - q_len                          # position of this chunk's first query
        kv_hi = ctx0 + min(q0 + BM, q_len)                  # keys this tile needs: [0, kv_hi)
        tid = cuda.threadIdx.x
        ty = tid // 16
        tx = tid % 16

        buf = cuda.shared.array(BUF, float32)       # Q^T|K^T chunks, later a half tile of V
        ss = cuda.shared.array((BM, KP), float32)   # scores S, then probabilities P
        m_s = cuda.shared.array(BM, float32)        # running max per query row
        l_s = cuda.shared.array(BM, float32)        # running sum per query row
        a_s = cuda.shared.array(BM, float32)        # this tile's rescale factor per row
        sacc = cuda.local.array((RM, CN), float32)  # this thread's piece of S
        acc = cuda.local.array((RM, TD), float32)   # this thread's piece of O
        a = cuda.local.array(RM, float32)
        b = cuda.local.array(TD, float32)
        for i in range(RM):
            for j in range(TD):
                acc[i, j] = float32(0)
        if tid < BM:
            m_s[tid] = NEG
            l_s[tid] = float32(0)

        for k0 in range(0, kv_hi, BN):
            for i in range(RM):
                for j in range(CN):
                    sacc[i, j] = float32(0)
            # ---- 1. S = (scale * Q) K^T, DC dims at a time --------------------------------
            for dc in range(0, D, DC):
                for e in range(tid, BM * DC, THREADS):       # Q^T chunk [DC][BM]
                    r = e // DC
                    dd = e % DC                               # consecutive threads: consecutive d
                    val = float32(0)
                    if q0 + r < q_len:
                        val = q[q_start + q0 + r, h, dc + dd] * scale
                    buf[dd * QP + r] = val
                for e in range(tid, BN * DC, THREADS):       # K^T chunk [DC][BN], from the pages
                    c = e // DC
                    dd = e % DC
                    pos = k0 + c
                    val = float32(0)
                    if pos < kv_hi:
                        slot = block_tables[s, pos // BS] * BS + pos % BS
                        val = load1(k_cache[(slot * hkv + kvh) * D + dc + dd])
                    buf[KOFF + dd * KP + c] = val
                cuda.syncthreads()
                for dd in range(DC):
                    for i in range(RM):
                        a[i] = buf[dd * QP + ty + TY * i]
                    for j in range(CN):
                        b[j] = buf[KOFF + dd * KP + tx + 16 * j]
                    for i in range(RM):
                        for j in range(CN):
                            sacc[i, j] += a[i] * b[j]
                cuda.syncthreads()
            # ---- 2. mask, stage S in shared memory, start loading V -----------------------
            for i in range(RM):
                r = ty + TY * i
                qpos = ctx0 + q0 + r
                for j in range(CN):
                    c = tx + 16 * j
                    ok = (k0 + c <= qpos) and (q0 + r < q_len)   # causal (implies < seq_len)
                    ss[r, c] = sacc[i, j] if ok else NEG
            for half in range(0, BN, VH):
                for e in range(tid, VH * D, THREADS):        # V rows [VH][D] of this half
                    c = e // D
                    dd = e % D
                    pos = k0 + half + c
                    val = float32(0)
                    if pos < kv_hi:
                        slot = block_tables[s, pos // BS] * BS + pos % BS
                        val = load1(v_cache[(slot * hkv + kvh) * D + dd])
                    buf[c * D + dd] = val
                cuda.syncthreads()
                if half == 0:
                    # online softmax, one thread per query row
                    if tid < BM:
                        m_old = m_s[tid]
                        mx = m_old
                        for c in range(BN):
                            mx = max(mx, ss[tid, c])
                        alpha = math.exp(m_old - mx)
                        tot = float32(0)
                        for c in range(BN):
                            sv = ss[tid, c]
                            p = math.exp(sv - mx) if sv > NEG else float32(0)
                            ss[tid, c] = p
                            tot += p
                        l_s[tid] = l_s[tid] * alpha + tot
                        m_s[tid] = mx
                        a_s[tid] = alpha
                    cuda.syncthreads()
                    for i in range(RM):
                        al = a_s[ty + TY * i]
                        for j in range(TD):
                            acc[i, j] *= al
                # ---- 3. O += P V for this half of the key tile ---------------------------
                for c in range(VH):
                    for i in range(RM):
                        a[i] = ss[ty + TY * i, half + c]
                    for j in range(TD):
                        b[j] = buf[c * D + tx + 16 * j]
                    for i in range(RM):
                        for j in range(TD):
                            acc[i, j] += a[i] * b[j]
                cuda.syncthreads()

        for i in range(RM):
            r = ty + TY * i
            if q0 + r < q_len:
                inv = float32(1) / l_s[r]     # > 0: every query sees at least key 0
                for j in range(TD):
                    out[q_start + q0 + r, h, tx + 16 * j] = acc[i, j] * inv

    return prefill_kernel


def check_supported(head_dim: int, group: int) -> None:
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"q: head_dim {head_dim} not supported by the Numba prefill kernel "
                         f"(supported: {HEAD_DIMS}); use get_backend('torch')")
    if group > 8:
        raise ValueError(f"q: {group} query heads per KV head; the Numba kernels support up to 8")


def prefill_attention(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale,
                      max_q_len=None, check=True, tile=None):
    """q [total_q, H, D] -> out [total_q, H, D] (q's dtype). ``max_q_len`` (the longest chunk)
    sizes the grid; it is read from cu_seqlens_q when not given."""
    if check:
        _, mq = validate.check_prefill(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale)
        max_q_len = max_q_len if max_q_len is not None else mq
    nblk, bs, hkv, d = k_cache.shape
    total_q, H, _ = q.shape
    check_supported(d, H // hkv)
    out32 = torch.empty(total_q, H, d, dtype=torch.float32, device=q.device)   # [total_q, H, D]
    num_seqs = cu_seqlens_q.shape[0] - 1
    if max_q_len is None:
        cu = cu_seqlens_q.cpu()
        max_q_len = int((cu[1:] - cu[:-1]).max()) if num_seqs else 0
    if total_q == 0 or max_q_len == 0:
        return out32.to(q.dtype)
    tile = tuple(tile or TILE)
    threads, bm = tile[0], tile[1]
    tiles = -(-max_q_len // bm)
    k = prefill_kernel(_kind(k_cache), d, H // hkv, bs, tile)
    k[(H, tiles, num_seqs), threads, nb.stream()](
        nb.as_numba(q.float().contiguous()), nb.as_numba(k_cache.view(-1), persistent=True),
        nb.as_numba(v_cache.view(-1), persistent=True), nb.as_numba(block_tables),
        nb.as_numba(cu_seqlens_q), nb.as_numba(seq_lens), float32(scale), nb.as_numba(out32))
    return out32.to(q.dtype)
