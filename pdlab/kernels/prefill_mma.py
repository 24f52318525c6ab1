"""Prefill attention on the tensor cores (device code): paged, chunk-aware, FlashAttention-2-style,
with its matrix products on ``mma.sync.aligned.m16n8k16`` (fp16/bf16 in, fp32 accumulate) through
the inline-PTX intrinsics of ``_mma.py``. Same contract as the fp32 kernel (``prefill_fp32.py``,
the readable version, and the one for GPUs before sm_80); the host side is
``prefill_attention.py``.

Work split: one block per (query head, tile of BM queries, sequence), WARPS warps of 32 threads;
warp w owns MT m-tiles of 16 query rows (BM = 16 * MT * WARPS). The block walks the keys in tiles
of BN (up to its last query's position: causal), and per key tile:

  1. K (and, a step later, V) come from the pages into shared memory with ``cp.async``: a BN-key
     tile spans several pages, so each thread looks up the page of every row it copies in the
     block table (thread t copies 16-byte chunk t % (D/8) of rows t // (D/8), + THREADS/(D/8), ...).
     Rows are 2 D bytes; chunk c of row r is stored at chunk c ^ (r % 8) (an XOR swizzle): the 8
     rows an ``ldmatrix`` reads then fall in 8 different bank groups instead of one.
  2. S = Q K^T on the tensor cores. Q's A fragments are loaded once (``ldmatrix.x4``) and kept in
     registers (MT = 1) or reloaded per tile (MT = 2); K's B fragments come from ``ldmatrix.x4``
     (K stored [key][dim] is already the "col" B layout), two 8-key n-tiles per load.
  3. The online softmax on the fp32 accumulator fragments: a lane holds 2 rows of each m-tile
     (``fragments.c_coords``), the 4 lanes of a quad share a row and agree on its max with two
     ``shfl.sync.bfly`` (``quad_max``). Scores are in base 2 (one FFMA by scale * log2(e), one
     ``ex2.approx``). The output is rescaled by alpha = 2^(m_old - m_new); each lane keeps a
     partial row sum, summed over the quad once at the end.
  4. O += P V: the probabilities are already in registers in the C layout of two n-tiles, which
     is the A layout of m16k16: ``pack2`` (``cvt.rn.bf16x2.f32``) makes them A fragments with no
     trip through shared memory. V's B fragments come from ``ldmatrix.x4.trans`` (V stored
     [key][dim] is row-major; the transposing load gives the "col" layout).

Pipeline (FlashAttention-2's): the copy of V_j is issued before S_j is computed and the copy of
K_{j+1} right after (once every warp is done reading K_j), so both overlap compute; two barriers
per key tile. Shared memory: Q [BM][D] + K [BN][D] + V [BN][D] 16-bit values, all 48 KB of static
shared memory for BM = BN = 64, D = 128.

Rows past the chunk's end load a clamped copy of its last query and are not written; keys past
the context load a clamped copy of its last key and are masked (causally). Masking is applied on
the diagonal tiles only. Measurements: bench/KERNEL-NOTES.md.
"""

from __future__ import annotations

import functools
import math

from . import _memory as mem
from . import _mma
from . import _numba as nb
from ._numba import SIM, cuda, float32, int32

# Tile: (warps per block, m-tiles of 16 rows per warp, BN keys per tile). The simulator runs one
# OS thread per CUDA thread: one warp there (16 query rows per block).
TILE = (1, 1, 32) if SIM else (4, 1, 64)
MAX_REGISTERS = None     # left to the compiler (bench/kernels.py tries caps)
KINDS = ("bf16", "f16")


def shared_words(head_dim: int, tile) -> int:
    """int32 words of shared memory a block of this tile uses: Q, K and V tiles of 16-bit values."""
    warps, mt, bn = tile
    return (16 * mt * warps + 2 * bn) * head_dim // 2


def check_tile(head_dim: int, tile) -> None:
    warps, mt, bn = tile
    if not (warps >= 1 and mt in (1, 2) and bn % 16 == 0 and bn >= 16):
        raise ValueError(f"tile {tile}: needs warps >= 1, 1 or 2 m-tiles per warp, BN a multiple of 16")
    if (warps * 32) % (head_dim // 8) or (16 * mt * warps) % (warps * 32 // (head_dim // 8)) \
            or bn % (warps * 32 // (head_dim // 8)):
        raise ValueError(f"tile {tile}: the copy passes must cover the Q and K/V tiles exactly")
    if shared_words(head_dim, tile) * 4 > 48 * 1024:
        raise ValueError(f"tile {tile}: {shared_words(head_dim, tile) * 4} bytes of shared memory "
                         "(static shared memory is limited to 48 KB per block)")


@functools.lru_cache(maxsize=None)
def prefill_mma_kernel(kind: str, head_dim: int, group: int, block_size: int, tile: tuple = TILE,
                       max_registers=MAX_REGISTERS):
    """Compile (once per configuration) the tensor-core prefill kernel for cache dtype ``kind``;
    q and the output are in the same 16-bit dtype (int16 bits), out viewed as int32 word pairs."""
    check_tile(head_dim, tile)
    D, G, BS = head_dim, group, block_size
    WARPS, MT, BN = tile
    THREADS = 32 * WARPS
    BM = 16 * MT * WARPS          # query rows per block
    WR = 16 * MT                  # query rows per warp
    KT = D // 16                  # k-steps of S = Q K^T (16 dims each)
    NT = BN // 8                  # n-tiles of S (8 keys each)
    PT = BN // 16                 # k-steps of O += P V (16 keys each)
    DT = D // 8                   # n-tiles of O (8 dims each)
    CPR = D // 8                  # 16-byte chunks per row (of Q, K or V)
    WPR = D // 2                  # int32 words per row
    RPP = THREADS // CPR          # rows a copy pass covers
    QPASS, KPASS = BM // RPP, BN // RPP
    OFF_K = BM * WPR              # shared words: Q [BM][WPR] | K [BN][WPR] | V [BN][WPR]
    OFF_V = OFF_K + BN * WPR
    SMEM = OFF_V + BN * WPR
    Q_REGS = MT == 1              # Q's fragments stay in registers (32 of them for D = 128)
    AL = nb.ALIGN
    NEG = nb.NEG
    zfill = _mma.cp_async_zfill()
    commit = mem.cp_async_commit()
    wait_all = mem.cp_async_wait(0)
    ld = _mma.ldmatrix_x4()
    ldt = _mma.ldmatrix_x4_trans()
    mma = _mma.mma_m16n8k16(kind)
    pack2 = _mma.pack2(kind)
    row_max = _mma.quad_max()
    row_sum = _mma.quad_sum()
    page_of, in_page = nb.paging(BS)

    # Copies: thread tid moves 16-byte chunk c = tid % CPR of the rows of its row group
    # rg = tid // CPR: KPASS consecutive rows of a K/V tile (QPASS of the Q tile). When the page
    # size is a multiple of KPASS, a group's rows lie in one page: one block-table lookup per
    # tile and thread, shared by the K and the V copy of the tile.
    GROUPED = BS % KPASS == 0

    def group_slot(block_tables, s, g0, kv_hi):
        """Cache slot of token g0 (clamped into the context: an address that is safe to form)."""
        gp = min(g0, kv_hi - 1)
        return block_tables[s, page_of(gp)] * BS + in_page(gp)

    def stage_kv(smem, off, cache, block_tables, s, g0, kv_hi, slot0, stride, kvbase, c, rg):
        """Start the copies of this thread's rows of the key tile whose group starts at token g0
        (slot0: its slot) into [BN][D] at word ``off``, rows swizzled; rows past the context are
        zero-filled (their scores are masked, their values weigh 0)."""
        for i in range(KPASS):
            r = rg * KPASS + i
            ok = g0 + i < kv_hi
            if GROUPED:
                slot = slot0 + i if ok else slot0
            else:
                slot = group_slot(block_tables, s, g0 + i, kv_hi)
            zfill(smem, off + r * WPR + ((c ^ (r & 7)) << 2), cache, slot * stride + kvbase + c * 8,
                  int32(16) if ok else int32(0))

    if not SIM:
        group_slot = cuda.jit(device=True, inline="always")(group_slot)
        stage_kv = cuda.jit(device=True, inline="always")(stage_kv)
    sig = None if SIM else (
        "void(int16[::1], int16[::1], int16[::1], int32[:, ::1], int32[::1], int32[::1], float32, int32[::1])")

    @nb.kernel(sig=sig, max_registers=max_registers)
    def prefill_mma_kernel(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale, out):
        # q            [total_q * H * D]        16-bit queries of all chunks (int16 bits, flat)
        # k/v_cache    [num_slots * Hkv * D]    flat paged cache, 16-bit values as int16
        # block_tables [S, max_blocks] int32;  cu_seqlens_q [S+1] int32;  seq_lens [S] int32
        # out          [total_q * H * D / 2]    int32: pairs of 16-bit outputs
        h = cuda.blockIdx.x
        s = cuda.blockIdx.z
        H = cuda.gridDim.x
        q_start = cu_seqlens_q[s]
        q_len = cu_seqlens_q[s + 1] - q_start
        q0 = (cuda.gridDim.y - 1 - cuda.blockIdx.y) * BM   # last tiles (most keys) launch first
        if q0 >= q_len:
            return                                          # whole block leaves: no sync skipped
        hkv = H // G
        ctx0 = seq_lens[s] - q_len                          # position of this chunk's first query
        kv_hi = ctx0 + min(q0 + BM, q_len)                  # keys this tile needs: [0, kv_hi)
        tid = cuda.threadIdx.x
        warp = tid >> 5
        lane = tid & 31
        g = lane >> 2                 # this lane's rows: g and g + 8 of each m-tile ...
        t = lane & 3                  # ... and columns 2 t, 2 t + 1 of each n-tile
        c2 = scale * nb.LOG2E         # scores -> base 2
        stride = hkv * D              # cache elements per slot ...
        kvbase = (h // G) * D         # ... and this KV head's offset in a slot

        smem = cuda.shared.array(SMEM, int32, alignment=AL)   # ldmatrix rows: 16-byte aligned
        # ---- prologue: Q tile and the first K tile -------------------------------------------
        c = tid % CPR
        rg = tid // CPR
        for i in range(QPASS):
            r = rg * QPASS + i
            ok = q0 + r < q_len                            # past the chunk: zero rows, not written
            qrow = q_start + q0 + r if ok else q_start
            zfill(smem, r * WPR + ((c ^ (r & 7)) << 2), q, (qrow * H + h) * D + c * 8,
                  int32(16) if ok else int32(0))
        slot_v = group_slot(block_tables, s, rg * KPASS, kv_hi)   # (the first tile's V reuses it)
        stage_kv(smem, OFF_K, k_cache, block_tables, s, rg * KPASS, kv_hi, slot_v, stride, kvbase, c, rg)
        commit()

        S = cuda.local.array((MT, NT, 4), float32)   # scores, then probabilities (C fragments)
        O = cuda.local.array((MT, DT, 4), float32)   # unnormalised output (C fragments)
        qf = cuda.local.array((MT, KT if Q_REGS else 1, 4), int32)   # Q's A fragments
        pa = cuda.local.array((MT, 4), int32)        # P's A fragment of one k-step of P V
        m = cuda.local.array((MT, 2), float32)       # running max of rows g, g + 8 (base 2)
        l = cuda.local.array((MT, 2), float32)       # this lane's part of their running sums
        for mt in range(MT):
            for hh in range(2):
                m[mt, hh] = NEG
                l[mt, hh] = float32(0)
            for n in range(DT):
                for e in range(4):
                    O[mt, n, e] = float32(0)
        # per-lane ldmatrix rows: A (Q) and V^T matrices j = (rows 0-7 | 8-15) x (chunk 0 | 1);
        # K's are (chunk 0 | 1) x (keys 0-7 | 8-15)
        # ldmatrix row addresses of this lane (word offsets). Chunk x of row r sits at x ^ (r % 8),
        # and r % 8 = lane % 8 for every row a lane points at; the XOR only touches the low 3
        # bits of the chunk, so 4 offsets per operand cover every k-step (kk >= 4: + 8 chunks).
        sw = lane & 7
        a_row = (lane & 7) + ((lane >> 3) & 1) * 8    # A (Q) and V^T: matrix j = rows 8 (j % 2),
        a_chunk = lane >> 4                           #   chunk j // 2 of the 16 x 16 block
        b_row = (lane & 7) + (lane >> 4) * 8          # K: matrix j = chunk j % 2, keys 8 (j // 2)
        b_chunk = (lane >> 3) & 1
        qoff = cuda.local.array(4, int32)
        koff = cuda.local.array(4, int32)
        voff = cuda.local.array(4, int32)
        for x in range(4):
            qoff[x] = (warp * WR + a_row) * WPR + (((2 * x + a_chunk) ^ sw) << 2)
            koff[x] = OFF_K + b_row * WPR + (((2 * x + b_chunk) ^ sw) << 2)
            voff[x] = OFF_V + a_row * WPR + (((2 * x + a_chunk) ^ sw) << 2)
        wait_all()
        cuda.syncthreads()
        if Q_REGS:
            for mt in range(MT):
                for kk in range(KT):
                    qf[mt, kk, 0], qf[mt, kk, 1], qf[mt, kk, 2], qf[mt, kk, 3] = ld(
                        smem, qoff[kk & 3] + (kk >> 2) * 32 + mt * 16 * WPR)
        row_first = ctx0 + q0 + warp * WR    # position of this warp's first query row

        for k0 in range(0, kv_hi, BN):
            # K_j has landed (waited for at the end of the last tile, or in the prologue)
            stage_kv(smem, OFF_V, v_cache, block_tables, s, k0 + rg * KPASS, kv_hi, slot_v, stride, kvbase, c, rg)
            commit()
            # ---- S = Q K^T ---------------------------------------------------------------
            for mt in range(MT):
                for n in range(NT):
                    for e in range(4):
                        S[mt, n, e] = float32(0)
            for kk in range(KT):
                if not Q_REGS:
                    for mt in range(MT):
                        qf[mt, 0, 0], qf[mt, 0, 1], qf[mt, 0, 2], qf[mt, 0, 3] = ld(
                            smem, qoff[kk & 3] + (kk >> 2) * 32 + mt * 16 * WPR)
                for np_ in range(NT // 2):
                    b0, b1, b2, b3 = ld(smem, koff[kk & 3] + (kk >> 2) * 32 + np_ * 16 * WPR)
                    for mt in range(MT):
                        f = kk if Q_REGS else 0
                        a0, a1, a2, a3 = qf[mt, f, 0], qf[mt, f, 1], qf[mt, f, 2], qf[mt, f, 3]
                        n = 2 * np_
                        S[mt, n, 0], S[mt, n, 1], S[mt, n, 2], S[mt, n, 3] = mma(
                            a0, a1, a2, a3, b0, b1, S[mt, n, 0], S[mt, n, 1], S[mt, n, 2], S[mt, n, 3])
                        S[mt, n + 1, 0], S[mt, n + 1, 1], S[mt, n + 1, 2], S[mt, n + 1, 3] = mma(
                            a0, a1, a2, a3, b2, b3, S[mt, n + 1, 0], S[mt, n + 1, 1], S[mt, n + 1, 2],
                            S[mt, n + 1, 3])
            wait_all()                 # V_j has landed (this thread's copies) ...
            cuda.syncthreads()         # ... everyone's, and every warp is done reading K_j
            if k0 + BN < kv_hi:
                slot_v = group_slot(block_tables, s, k0 + BN + rg * KPASS, kv_hi)
                stage_kv(smem, OFF_K, k_cache, block_tables, s, k0 + BN + rg * KPASS, kv_hi, slot_v, stride,
                         kvbase, c, rg)
            commit()
            # ---- mask (diagonal tiles) and online softmax on the fragments ----------------
            if k0 + BN - 1 > row_first:                    # some key is after some row (warp-uniform)
                for mt in range(MT):
                    for n in range(NT):
                        key = k0 + n * 8 + 2 * t
                        for e in range(4):
                            if key + (e & 1) > row_first + mt * 16 + g + 8 * (e >> 1):
                                S[mt, n, e] = NEG
            for mt in range(MT):
                for hh in range(2):                        # rows g (e = 0, 1) and g + 8 (e = 2, 3)
                    mx = S[mt, 0, 2 * hh]
                    for n in range(NT):
                        mx = max(mx, max(S[mt, n, 2 * hh], S[mt, n, 2 * hh + 1]))
                    mx = max(m[mt, hh], row_max(mx) * c2)  # the row's new max, on its 4 lanes
                    alpha = math.exp2(m[mt, hh] - mx)
                    m[mt, hh] = mx
                    tot = float32(0)
                    for n in range(NT):
                        for e in range(2 * hh, 2 * hh + 2):
                            p = math.exp2(S[mt, n, e] * c2 - mx)
                            S[mt, n, e] = p
                            tot += p
                    l[mt, hh] = l[mt, hh] * alpha + tot
                    for n in range(DT):
                        O[mt, n, 2 * hh] *= alpha
                        O[mt, n, 2 * hh + 1] *= alpha
            # ---- O += P V: P's C fragments of n-tiles 2 j, 2 j + 1 are the A fragment of step j
            for j in range(PT):
                for mt in range(MT):
                    pa[mt, 0] = pack2(S[mt, 2 * j, 0], S[mt, 2 * j, 1])
                    pa[mt, 1] = pack2(S[mt, 2 * j, 2], S[mt, 2 * j, 3])
                    pa[mt, 2] = pack2(S[mt, 2 * j + 1, 0], S[mt, 2 * j + 1, 1])
                    pa[mt, 3] = pack2(S[mt, 2 * j + 1, 2], S[mt, 2 * j + 1, 3])
                for np_ in range(DT // 2):
                    b0, b1, b2, b3 = ldt(smem, voff[np_ & 3] + (np_ >> 2) * 32 + j * 16 * WPR)
                    for mt in range(MT):
                        a0, a1, a2, a3 = pa[mt, 0], pa[mt, 1], pa[mt, 2], pa[mt, 3]
                        n = 2 * np_
                        O[mt, n, 0], O[mt, n, 1], O[mt, n, 2], O[mt, n, 3] = mma(
                            a0, a1, a2, a3, b0, b1, O[mt, n, 0], O[mt, n, 1], O[mt, n, 2], O[mt, n, 3])
                        O[mt, n + 1, 0], O[mt, n + 1, 1], O[mt, n + 1, 2], O[mt, n + 1, 3] = mma(
                            a0, a1, a2, a3, b2, b3, O[mt, n + 1, 0], O[mt, n + 1, 1], O[mt, n + 1, 2],
                            O[mt, n + 1, 3])
            wait_all()                 # K_{j+1} has landed ...
            cuda.syncthreads()         # ... and every warp is done reading V_j

        # ---- epilogue: divide by the row sums, write 16-bit pairs ------------------------------
        for mt in range(MT):
            for hh in range(2):
                inv = float32(1) / row_sum(l[mt, hh])     # > 0: every query sees key 0
                r = warp * WR + mt * 16 + g + 8 * hh
                if q0 + r < q_len:
                    base = ((q_start + q0 + r) * H + h) * (D // 2) + t
                    for n in range(DT):
                        out[base + n * 4] = pack2(O[mt, n, 2 * hh] * inv, O[mt, n, 2 * hh + 1] * inv)

    return prefill_mma_kernel
