"""The paged decode attention kernel (device code): one query token per sequence against its
whole paged KV cache. The host side (validation, split planning, the launch) is
``decode_attention.py``.

Decode is memory-bound: every K and V byte of the context is read once per generated token and
used for only ~2 FLOPs per query head. So the kernel is organised around moving bytes, and
around spending few instructions on each byte (a profile of the first version showed it short of
issue slots before it was short of bandwidth; bench/KERNEL-NOTES.md has the measurements):

- One thread block per (KV head, sequence, split). All ``group`` query heads that share the KV
  head are handled by the same block (GQA), so each K/V byte is read from memory once.
- A token's K row (head_dim values) is split over ``LPR = head_dim / 16`` neighbouring lanes;
  each owns 16 dims and reads them with two 16-byte loads (8 fp16/bf16 values each), one in
  each half of the row, so a row's lanes read contiguous bytes. Per-token work that every lane
  repeats (shuffles, exponentials, addresses) is shared by 8 lanes instead of 16. (Groups of 8
  heads keep 8 dims per lane: their per-lane state would not fit in registers.)
- A 128-thread block works on ``128 / LPR`` token rows at once (a *row group*), ``UNROLL``
  tokens per thread per step.
- Bytes in flight: to stream at full bandwidth an SM needs tens of KB of loads in flight, and
  loads into registers can only have in flight what the registers hold. So each lane starts
  asynchronous copies (``cp.async``) of its slice of the row groups ``RING - UNROLL`` groups
  ahead into a ring of shared memory (RING_BYTES per block: all 48 KB of static shared memory,
  the epilogue's small arrays carved from the same buffer), and reads back only what it copied
  itself: no barrier. The copies carry an L2 evict-first hint: K/V are read once per launch, so
  L2 keeps the block tables and partial outputs rather than the stream.
  ``ring=0`` keeps the register pipeline (a token's registers refilled with the next step's
  token as soon as they are used): for comparison, and on GPUs older than sm_80 (a T4), which
  have no ``cp.async``.
- Each lane does its 16 multiply-adds of q.k per head, then the partial dots are summed over the
  LPR lanes with warp shuffles (``lane_sum``). Softmax is *online* (running max m, sum l,
  output acc per query head), so scores never go to memory, and in base 2: q is scaled by
  scale * log2(e) once, so each exponential is one ``exp2`` instruction. The output is
  rescaled every step (branch-free: faster than skipping the rescale when the max does not
  grow).
- q is read in its own dtype (16-byte loads) and the output written in it: no conversion
  kernels around the launch (each would cost a few microseconds in a ~60 us decode step).
- Tokens past the end of a sequence are clamped to its last token (a re-read, masked out), so
  the loads need no branch; with a page size that is a multiple of the token rows per step, one
  block-table lookup serves a whole row group.
- At the end the rows of a row group have seen different tokens: each posts (m, l, acc) to
  shared memory, one thread per (row, head) turns the maxima into weights, and each thread sums
  4 output dims over the rows with 16-byte loads.
- FlashDecoding: with a small batch there are too few (KV head, sequence) blocks to fill the
  SMs, so the context is cut into ``num_splits`` pieces processed by separate blocks; each writes
  a partial output and its log-sum-exp, and the split that finishes last (an acquire-release
  atomic counter per sequence and KV head) merges them: no second kernel. The host picks the
  split count so that all blocks run in one wave. The epilogues run once per launch, while the
  bandwidth idles, so their code is kept small and branch-free (unsigned indices, loops of
  constant trip count).

The file is longer than the package's other modules: the kernel is one closure over its compile-
time constants, and splitting it would turn those constants into arguments.
"""

from __future__ import annotations

import functools
import math

from numba import types

from . import _memory as mem
from . import _numba as nb
from ._numba import SIM, cuda, float32, int32

VEC = 8          # fp16/bf16 values per 16-byte load
THREADS = 32 if SIM else 128   # 4 warps per block on a GPU; one on the simulator (1 OS thread each)
UNROLL = 2       # tokens per thread per step (one max and one rescale per step)
MAX_REGISTERS = None   # registers per thread left to the compiler (bench/kernels.py tries caps)
# K/V staging. "ring": each lane copies its slice of the coming row groups into a ring of
# shared memory with cp.async, RING_BYTES per block, and reads it back when the step comes: the
# bytes in flight no longer sit in registers. 0 slots: the register pipeline (each lane loads
# its next tokens straight into registers; a block can then only have as many bytes in flight as
# its registers hold).
RING_BYTES = 48 * 1024   # all the static shared memory a block may have
# splits the last split's merge reads per round of loads (each round is a dependent trip to L2):
# 33 covers one wave of an H200 for 8 KV heads (2 x 132 block slots / 8) in one round. Measured
# against 16 (three rounds there): 1.7% faster at 1 x 32768, the same for the batched shapes
# (bench/kernels.py variant merge_round16); the loop, not the merge, sets the register count
MERGE_ROUND = 33


def dims_per_lane(group: int) -> int:
    """Head dims each lane owns: 16 (two 16-byte loads of K and of V per token) when a KV head
    serves up to 4 query heads; 8 for groups of 8, whose per-lane state (2 x group x dims fp32
    registers) would not fit in registers otherwise."""
    return 16 if group <= 4 else 8


def ring_slots(head_dim: int, group: int, lane_dims=None) -> int:
    """Row groups the shared-memory ring holds: as many as RING_BYTES allow (6 for head dim 128
    and groups up to 4: 4 KB of K and 4 KB of V per row group of 16 tokens)."""
    nv = (lane_dims or dims_per_lane(group)) // VEC
    return RING_BYTES // (2 * nv * THREADS * 16)



@functools.lru_cache(maxsize=None)
def decode_kernel(kind: str, head_dim: int, group: int, block_size: int, wide: bool = True,
                  unroll: int = UNROLL, qkind: str = "f32", lazy: bool = True,
                  max_registers=MAX_REGISTERS, lane_dims: int = None, ring: int = None,
                  merge_round: int = None, evict_first: bool = True):
    """Compile (once per configuration) the split-K decode kernel. The arguments are baked in
    as constants so loops over them unroll and the small per-thread arrays live in registers.
    ``wide``: 16-byte loads (else eight 2-byte loads per lane, the slower fallback).
    ``qkind``: dtype of q ("f32", or "f16"/"bf16" passed as int16 bits). ``lazy``: rescale the
    output only when the running max grows. ``lane_dims``: head dims per lane (default
    ``dims_per_lane(group)``). ``ring``: row-group slots of the shared-memory ring K/V are staged
    through (default ``ring_slots``; 0: the register pipeline). ``evict_first``: the ring's copies
    ask L2 to evict K/V lines first (they are read once per launch)."""
    D, G, BS, U, LAZY = head_dim, group, block_size, unroll, lazy
    DL = lane_dims or dims_per_lane(group)   # dims of a token row this lane owns
    NV = DL // VEC               # 16-byte loads per lane per row (of K, and again of V)
    W = DL // 2                  # int32 words per lane per row (2 values each)
    LPR = D // DL                # lanes sharing one token row: 8 for D=128, 4 for D=64 (DL=16)
    SL = D // NV                 # width of a slice of the row; a lane owns VEC dims of each
    NG = THREADS // LPR          # token rows a block works on at once
    STEP = NG * U                # tokens a block consumes per loop iteration
    NC = 2 * NV                  # 16-byte chunks a lane stages per token row (NV of K, NV of V)
    RING = ring_slots(head_dim, group, lane_dims) if ring is None else ring
    if RING and RING < U + 1:
        raise ValueError(f"ring of {RING} row groups: needs at least unroll + 1 = {U + 1}")
    RING_WORDS = RING * NC * THREADS * 4          # fp32-sized words: 4 per 16-byte chunk
    NGG = NG * G                 # (token row, head) pairs of the rows' merge
    OUT4 = G * D // 4            # groups of 4 output dims of a block (a thread merges one at a time)
    SH4 = (D // 4).bit_length() - 1   # log2(D / 4): head dims are powers of two
    DP = D + 4                   # a row's padded length in the merge buffer: rows start on other banks
    # the ring, reused at the end for the rows' merge and its small arrays (one static buffer:
    # every byte of the 48 KB a block may have goes to the ring)
    OFF_M = NG * G * DP          # [NG, G, DP] row outputs, then the rows' maxima, sums, weights,
    OFF_L = OFF_M + NG * G       # the heads' maxima and the arrival ticket
    OFF_W = OFF_L + NG * G
    OFF_MX = OFF_W + NG * G
    OFF_T = OFF_MX + G
    SMEM = max(RING_WORDS, OFF_T + 4)
    AL = nb.ALIGN                # 16-byte aligned: the ring is read 16 bytes at a time
    NEG = nb.NEG
    load16 = mem.load16(wide)     # 16-byte load -> 4 raw int32 words (plain Python on the simulator)
    unpack2 = mem.unpack2(kind)   # word -> 2 fp32 (fp16 or bf16 bits)
    row_sum = nb.lane_sum(LPR)   # sum over the LPR lanes of a row (warp shuffles on a GPU)
    if qkind == "f32":
        def q8(q, i):            # 8 consecutive query values as fp32
            return (q[i], q[i + 1], q[i + 2], q[i + 3], q[i + 4], q[i + 5], q[i + 6], q[i + 7])
    else:
        unpack_q = mem.unpack2(qkind)

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
    page_of, in_page = nb.paging(BS)   # token -> (block-table column, slot in the page)

    def slot_of(block_tables, s, t0, row, end, last):
        """Cache slot of token t0 + row. Tokens past the end are clamped to the last token (a
        harmless re-read, masked out later; never an unwritten slot): the loads need no branch.
        ``last``: the first token of the last row group."""
        if ALIGNED:
            t0 = min(t0, last)
            return block_tables[s, page_of(t0)] * BS + in_page(t0) + min(row, end - 1 - t0)
        t = min(t0 + row, end - 1)
        return block_tables[s, page_of(t)] * BS + in_page(t)

    def first_slot(block_tables, s, t0, row, end, last):
        """``slot_of`` for the prologue, which runs while seq_lens is still on its way: the
        block-table entry is loaded at once, its column clamped to the table rather than to the
        sequence, so the two loads overlap instead of following each other; it is looked up
        again only for a sequence that ends before ``t0``."""
        if not ALIGNED:
            return slot_of(block_tables, s, t0, row, end, last)
        e = block_tables[s, min(page_of(t0), block_tables.shape[1] - 1)]
        if t0 > last:
            t0 = last
            e = block_tables[s, page_of(t0)]
        return e * BS + in_page(t0) + min(row, end - 1 - t0)

    def load_row(cache, at, buf, u):
        """This lane's dims of one cached K or V row (offset ``at``) -> raw words ``buf[u, :]``."""
        for v in range(NV):
            x4 = load16(cache, at + v * SL)
            for w in range(4):
                buf[u, 4 * v + w] = x4[w]

    def unpack_row(buf, u, f):
        """Raw words ``buf[u, :]`` -> the lane's DL values as fp32 in ``f``."""
        for w in range(W):
            a, b = unpack2(buf[u, w])
            f[2 * w] = a
            f[2 * w + 1] = b

    copy16 = mem.cp_async16(evict_first)   # 16 bytes global -> shared, asynchronously
    commit = mem.cp_async_commit()
    wait_step = mem.cp_async_wait(max(RING - U, 0))   # this step's U row groups have landed
    wait_all = mem.cp_async_wait(0)
    load_words = mem.load_words()

    def stage_row(buf, slot, k_cache, v_cache, at, tid):
        """Start copying this lane's dims of one K and one V row (cache offset ``at``) into ring
        ``slot``. Chunk c of every lane of the block sits side by side, so a warp reading chunk c
        back reads 512 contiguous bytes (no bank conflicts)."""
        for v in range(NV):
            copy16(buf, ((slot * NC + v) * THREADS + tid) * 4, k_cache, at + v * SL)
            copy16(buf, ((slot * NC + NV + v) * THREADS + tid) * 4, v_cache, at + v * SL)

    def unpack_staged(buf, slot, c0, tid, f):
        """This lane's K (``c0 = 0``) or V (``c0 = NV``) dims from ring ``slot`` -> fp32 in ``f``."""
        for v in range(NV):
            w4 = load_words(buf, ((slot * NC + c0 + v) * THREADS + tid) * 4)
            for w in range(4):
                a, b = unpack2(w4[w])
                f[VEC * v + 2 * w] = a
                f[VEC * v + 2 * w + 1] = b

    def scores(qv, kf, sc, u):
        """q.k of token ``u`` of the step (its K slice unpacked in ``kf``) for every head: the
        lane's DL products, summed over the row's lanes with shuffles -> ``sc[g, u]``."""
        for g in range(G):
            part = float32(0)
            for i in range(DL):
                part += qv[g, i] * kf[i]
            sc[g, u] = row_sum(part)                   # full q.k, on every lane of the row

    def accumulate(acc, kf, sc, u):
        """acc += p * v for token ``u`` (its V slice unpacked in ``kf``), every head."""
        for g in range(G):
            p = sc[g, u]
            for i in range(DL):
                acc[g, i] += p * kf[i]

    def online_softmax(sc, m, l, acc, base, row, end):
        """Fold this step's scores ``sc[g, u]`` into the running (max m, sum l, output acc) of
        each query head, and turn them into probabilities in place: one max and one rescale per
        step (with LAZY, a rescale only when the max grew). Tokens past ``end`` (clamped
        re-reads) get probability 0."""
        for g in range(G):
            mx = m[g]
            for u in range(U):
                if base + u * NG + row < end:          # a real token, not a clamped re-read
                    mx = max(mx, sc[g, u])
            if mx > m[g] or not LAZY:                  # the max grew: rescale what was summed
                alpha = math.exp2(m[g] - mx)           # (all lanes of a row agree on mx)
                l[g] *= alpha
                for i in range(DL):
                    acc[g, i] *= alpha
                m[g] = mx
            lsum = l[g]
            for u in range(U):
                p = math.exp2(sc[g, u] - mx) if base + u * NG + row < end else float32(0)
                lsum += p
                sc[g, u] = p
            l[g] = lsum

    if not SIM:
        scores = cuda.jit(device=True, inline="always")(scores)
        accumulate = cuda.jit(device=True, inline="always")(accumulate)
        online_softmax = cuda.jit(device=True, inline="always")(online_softmax)
        stage_row = cuda.jit(device=True, inline="always")(stage_row)
        unpack_staged = cuda.jit(device=True, inline="always")(unpack_staged)
        q8 = cuda.jit(device=True, inline="always")(q8)
        slot_of = cuda.jit(device=True, inline="always")(slot_of)
        first_slot = cuda.jit(device=True, inline="always")(first_slot)
        load_row = cuda.jit(device=True, inline="always")(load_row)
        unpack_row = cuda.jit(device=True, inline="always")(unpack_row)
    pack = mem.pack1(qkind)       # fp32 -> the output's dtype (q's)
    load4f = mem.load4f()         # 4 fp32 in one 16-byte load (the merges read 4 dims at a time)
    store4f = mem.store4f()
    arrive = mem.arrive()         # count a split in, with release and acquire semantics
    ix = nb.index                # an index known to be >= 0: no negative-index wraparound code
    R = merge_round or MERGE_ROUND   # splits a merging thread loads per round
    q_t = "float32" if qkind == "f32" else "int16"
    sig = None if SIM else (
        f"void({q_t}[::1], int16[::1], int16[::1], int32[:, ::1], int32[::1], "
        f"float32, int32, float32[::1], float32[::1], int32[::1], {q_t}[::1])")

    @nb.kernel(sig=sig, max_registers=max_registers)
    def decode_kernel(q, k_cache, v_cache, block_tables, seq_lens, scale, steps, o_part, lse_part,
                      done, out):
        # q            [S * H * D]               query, one per sequence (flat; fp32 or 16-bit)
        # k/v_cache    [num_slots * Hkv * D]     flat paged cache, 16-bit values as int16
        # block_tables [S, max_blocks] int32;  seq_lens [S] int32
        # steps        block steps (STEP tokens) in max_blocks pages, dealt out to the P splits
        # o_part       [S * H * P * D]           fp32 output of each of the P splits (normalised)
        # lse_part     [S * H * P]               fp32 log2-sum-exp2 of each split's scores
        # done         [S * Hkv] int32           splits finished per (sequence, KV head); all 0
        #                                        between launches (the merging split resets it)
        # out          [S * H * D]               the output, in q's dtype
        kvh = cuda.blockIdx.x
        s = cuda.blockIdx.y
        split = cuda.blockIdx.z
        hkv = cuda.gridDim.x
        P = cuda.gridDim.z
        tid = cuda.threadIdx.x
        row = tid // LPR         # which token row of the current step this thread works on
        # which dims of that row: VEC of them in each of the NV slices of width D/NV, so that a
        # row's LPR lanes read one contiguous run of LPR * 16 bytes per load (coalesced)
        d0 = (tid % LPR) * VEC
        kvoff = kvh * D + d0                # element offset of this lane's dims within a slot
        stride = hkv * D                    # elements per cache slot

        qv = cuda.local.array((G, DL), float32)    # this lane's slice of every query head
        acc = cuda.local.array((G, DL), float32)   # unnormalised output slice per head
        m = cuda.local.array(G, float32)           # running max score per head
        l = cuda.local.array(G, float32)           # running sum of 2^(score - m) per head
        kb = cuda.local.array((U, W), int32)       # raw K words of this step's U tokens
        vb = cuda.local.array((U, W), int32)       # raw V words of the same tokens
        at = cuda.local.array(U, types.int64)      # cache offset of the next step's tokens
        sc = cuda.local.array((G, U), float32)     # this step's scores, then probabilities
        kf = cuda.local.array(DL, float32)         # one unpacked K or V row slice
        buf = cuda.shared.array(SMEM, float32, alignment=AL)   # the K/V ring, then the merge
        # this split's tokens: whole steps, dealt out as evenly as they go (see split_plan)
        start = split * steps // P * STEP
        end = min((split + 1) * steps // P * STEP, seq_lens[s])
        last = (end - 1) - (end - 1) % NG   # first token of the last row group
        if RING:
            # K/V go through the shared-memory ring: each lane copies its own slice of a row
            # group ahead of time (cp.async) and reads back only what it copied, so no barrier
            # is needed. Row groups of steps the loop will not run are not staged (their copy
            # groups are committed empty); those of the last step are (clamped to the last row)
            lim = start + (end - start + STEP - 1) // STEP * STEP   # end, rounded up to a step
            for j in range(RING - U):                    # prologue: the first RING - U groups
                at0 = first_slot(block_tables, s, start + j * NG, row, end, last) * stride + kvoff
                if start + j * NG < lim:
                    stage_row(buf, j, k_cache, v_cache, at0, tid)
                commit()
        else:
            # the register pipeline. Prologue: start loading the first step
            for u in range(U):
                at[u] = first_slot(block_tables, s, start + u * NG, row, end, last) * stride + kvoff
                load_row(k_cache, at[u], kb, u)
                load_row(v_cache, at[u], vb, u)
        # q, while the first K/V are on their way. Scores in base 2: q is scaled by
        # scale * log2(e) once, so softmax uses exp2 (one instruction) and the split results
        # carry a log2-sum-exp2.
        qscale = scale * nb.LOG2E
        for g in range(G):
            for v in range(NV):
                qq = q8(q, ((s * hkv + kvh) * G + g) * D + v * SL + d0)
                for i in range(VEC):
                    qv[g, v * VEC + i] = qq[i] * qscale
            for i in range(DL):
                acc[g, i] = float32(0)
            m[g] = NEG
            l[g] = float32(0)
        if RING:
            rd = 0                       # ring slot of this step's first row group
            wr = RING - U                # ring slot of the next row group to stage
            nxt = start + (RING - U) * NG   # its first token
            for base in range(start, end, STEP):
                # refill the slots the previous step read with the row groups RING - U ahead
                for u in range(U):
                    if nxt < lim:
                        at0 = slot_of(block_tables, s, nxt, row, end, last) * stride + kvoff
                        stage_row(buf, wr, k_cache, v_cache, at0, tid)
                    commit()
                    nxt += NG
                    wr = wr + 1 if wr + 1 < RING else 0
                wait_step()
                for u in range(U):       # 1) scores
                    slot = rd + u if rd + u < RING else rd + u - RING
                    unpack_staged(buf, slot, 0, tid, kf)
                    scores(qv, kf, sc, u)
                online_softmax(sc, m, l, acc, base, row, end)   # 2)
                for u in range(U):       # 3) P.V
                    slot = rd + u if rd + u < RING else rd + u - RING
                    unpack_staged(buf, slot, NV, tid, kf)
                    accumulate(acc, kf, sc, u)
                rd = rd + U if rd + U < RING else rd + U - RING
            wait_all()                   # (only empty groups can be left)
            cuda.syncthreads()           # every lane is done with the ring: reuse it below
        else:
            # Same trip count for every thread of the block: row_sum needs all lanes present.
            for base in range(start, end, STEP):
                nxt = base + STEP
                # 1) scores of this step's tokens. Each token's K registers are refilled with the
                #    next step's token as soon as they are used: those loads fly while the rest
                #    of the step computes (no copies between a "current" and a "next" buffer)
                for u in range(U):
                    unpack_row(kb, u, kf)
                    scores(qv, kf, sc, u)
                    at[u] = slot_of(block_tables, s, nxt + u * NG, row, end, last) * stride + kvoff
                    load_row(k_cache, at[u], kb, u)
                online_softmax(sc, m, l, acc, base, row, end)   # 2)
                # 3) P.V, each V row unpacked once for all heads; then refill its registers
                for u in range(U):
                    unpack_row(vb, u, kf)
                    accumulate(acc, kf, sc, u)
                    load_row(v_cache, at[u], vb, u)

        # 4) the NG rows saw different tokens: merge their (m, l, acc) through shared memory.
        #    Each row posts its state; one thread per (row, head) turns the row maxima into
        #    weights 2^(m_row - m_max); then each thread sums 4 output dims over the rows with
        #    16-byte loads. (No exponentials or dependent loads in the per-dim loop: this runs
        #    while the SM's bandwidth goes unused.)
        sm_acc = buf                     # [NG, G, DP] flat: each row's output slice per head
        sm_m = buf[OFF_M:OFF_L]          # [NG, G] each row's max per head ...
        sm_l = buf[OFF_L:OFF_W]          # ... its sum ...
        sm_w = buf[OFF_W:OFF_MX]         # ... and its weight 2^(m_row - m_max)
        sm_mx = buf[OFF_MX:OFF_T]        # [G] each head's max over the rows
        sm_last = buf[OFF_T:OFF_T + 1]   # the merge step's arrival count (exact as fp32)
        ov = cuda.local.array((R, 4), float32)             # partial outputs, 4 dims each ...
        lv = cuda.local.array(R, float32)                  # ... and log-sum-exps, one round
        mv = cuda.local.array(4, float32)
        for g in range(G):
            if d0 == 0:
                sm_m[ix(row * G + g)] = m[g]
                sm_l[ix(row * G + g)] = l[g]
            for v in range(NV):
                at0 = (row * G + g) * DP + v * SL + d0
                store4f(sm_acc, at0, acc[g, v * VEC], acc[g, v * VEC + 1], acc[g, v * VEC + 2], acc[g, v * VEC + 3])
                store4f(sm_acc, at0 + 4, acc[g, v * VEC + 4], acc[g, v * VEC + 5], acc[g, v * VEC + 6],
                        acc[g, v * VEC + 7])
        cuda.syncthreads()
        for k in range(-(-NGG // THREADS)):               # (loops of constant trip count
            rg = tid + k * THREADS                         #  unroll into straight code)
            if rg >= NGG:
                break
            g = rg % G
            mx = NEG
            for r2 in range(NG):
                mx = max(mx, sm_m[ix(r2 * G + g)])
            sm_w[ix(rg)] = math.exp2(sm_m[ix(rg)] - mx)       # 0 for a row that saw no token
            if rg < G:
                sm_mx[ix(g)] = mx
        cuda.syncthreads()
        for k in range(-(-OUT4 // THREADS)):              # 4 output dims per thread
            o4 = tid + k * THREADS
            if o4 >= OUT4:
                break
            g = o4 >> SH4                                 # o4 // (D / 4), o4 >= 0
            d = (o4 & (D // 4 - 1)) << 2
            tot = float32(0)
            for i in range(4):
                mv[i] = float32(0)
            for r in range(NG):
                w = sm_w[ix(r * G + g)]
                tot += sm_l[ix(r * G + g)] * w
                a0, a1, a2, a3 = load4f(sm_acc, (r * G + g) * DP + d)
                mv[0] += w * a0
                mv[1] += w * a1
                mv[2] += w * a2
                mv[3] += w * a3
            h = (s * hkv + kvh) * G + g                   # the query head, counted over sequences
            inv = float32(1) / tot if tot > float32(0) else float32(0)   # 0: an empty split
            if P == 1:                                    # one split: this is the answer
                for i in range(4):
                    out[ix(h * D + d + i)] = pack(mv[i] * inv)
            else:
                store4f(o_part, (h * P + split) * D + d, mv[0] * inv, mv[1] * inv, mv[2] * inv, mv[3] * inv)
                if d == 0:
                    lse_part[ix(h * P + split)] = sm_mx[ix(g)] + math.log2(tot) if tot > float32(0) else NEG
        if P == 1:
            return

        # 5) FlashDecoding merge, done by whichever split of this (sequence, KV head) finishes
        #    last: it finds every split's partial in L2, and no second kernel launch is needed.
        #    One thread signals for the block (the barrier orders the others' writes before its
        #    release), as a grid-wide barrier does: one atomic both releases this split's partials
        #    before it counts itself and acquires those of the splits counted before
        cuda.syncthreads()
        if tid == 0:
            sm_last[0] = float32(arrive(done, s * hkv + kvh))   # splits counted before this one
        cuda.syncthreads()
        if sm_last[0] != float32(P - 1):
            return                       # (block-uniform) not the last: nothing more to do
        # Each thread merges 4 output dims of one head over the P splits, R splits per round: it
        # issues the R log-sum-exps and R partial outputs together (one memory round trip per
        # round: this runs while most SMs have finished and wait), then folds them in with a
        # running max, as the online softmax does with scores. Branch-free: past the last split
        # it re-reads that split and gives it weight 0
        for k in range(-(-OUT4 // THREADS)):
            o4 = tid + k * THREADS
            if o4 >= OUT4:
                break
            g = o4 >> SH4
            d = (o4 & (D // 4 - 1)) << 2
            h = (s * hkv + kvh) * G + g
            mx = NEG
            tot = float32(0)
            for i in range(4):
                mv[i] = float32(0)
            for p0 in range(0, P, R):
                for r in range(R):                           # 2R loads in flight ...
                    p = min(p0 + r, P - 1)
                    x = lse_part[ix(h * P + p)]
                    lv[r] = x if p0 + r < P else NEG
                    ov[r, 0], ov[r, 1], ov[r, 2], ov[r, 3] = load4f(o_part, (h * P + p) * D + d)
                mr = mx                                      # ... then folded in
                for r in range(R):
                    mr = max(mr, lv[r])
                alpha = math.exp2(mx - mr)
                tot *= alpha
                for i in range(4):
                    mv[i] *= alpha
                for r in range(R):
                    w = math.exp2(lv[r] - mr)                # 0 for an empty split (lse -1e30)
                    tot += w
                    for i in range(4):
                        mv[i] += w * ov[r, i]
                mx = mr
            inv = float32(1) / tot
            for i in range(4):
                out[ix(h * D + d + i)] = pack(mv[i] * inv)
        if tid == 0:
            done[s * hkv + kvh] = 0      # ready for the next launch (and the next graph replay)

    return decode_kernel
