"""Tensor-core intrinsics: ``ldmatrix`` and ``mma.sync.aligned.m16n8k16`` from Numba.

Numba has no tensor-core API, but a kernel can emit any PTX instruction through inline assembly
(``llvmlite.ir.InlineAsm`` inside a ``numba.cuda.extending.intrinsic``), as ``_memory.py`` does
for ``cp.async``. The three instructions here are what a FlashAttention-2-style kernel needs:

- ``ldmatrix_x4(smem, i)`` / ``ldmatrix_x4_trans(smem, i)``: four 8 x 8 matrices of 16-bit
  values from shared memory into the registers of a warp, in the layout ``mma`` takes (with
  ``.trans``: transposed on the way). ``smem`` is an int32 shared array (each word two 16-bit
  values) and ``i`` the word index of the 16-byte row this lane points at.
- ``mma_m16n8k16(kind)``: ``d = a @ b + c`` for one 16 x 16 A, one 16 x 8 B and a 16 x 8 fp32
  accumulator, A and B in fp16 or bf16 ("f16" / "bf16"). Every lane passes its own 4 A words,
  2 B words and 4 C values and receives 4 D values.
- ``pack2(kind)(lo, hi)``: two fp32 -> one word of two fp16/bf16 (round to nearest even,
  ``cvt.rn.bf16x2.f32``): how a C fragment becomes an A fragment.
- ``quad_max`` / ``quad_sum``: a value reduced over the 4 lanes that hold one row of a C tile
  (two ``shfl.sync.bfly``).
- ``cp_async_zfill``: a 16-byte ``cp.async`` into such an int32 array that zero-fills instead of
  reading when told to (rows past the end of a sequence).

Which lane holds which element is in ``fragments.py`` (the PTX ISA's tables); read it first.

All of these are warp-collective: the 32 lanes of a warp must execute them together, with
their own operands. The simulator runs one OS thread per CUDA thread and has none of them, so
each has a simulator body built on a per-warp exchange: every lane posts its operands in a
shared slot, waits at a ``threading.Barrier`` of its warp's 32 threads, then computes what the
hardware would hand it, from ``fragments.py``'s layouts. Two slots alternate, so one barrier per
instruction suffices: a lane can only overwrite a slot two instructions later, after every lane
has passed the barrier in between, and so has finished reading it.
"""

from __future__ import annotations

import threading

import numpy as np

from . import fragments
from ._numba import SIM, _butterfly_gpu, _item_pointer

WARP = 32


# ---------------------------------------------------------------------------------------------
# GPU bodies (inline PTX)
def _shared_address(context, builder, arrty, aval, idxty, ival):
    """The 32-bit shared-window address of word ``idx`` of the 4-byte shared array ``arr`` (what
    ldmatrix and cp.async take). Computed as the array's base address (the same for every call:
    the compiler keeps it in one register) plus 4 * idx in 32 bits: the index arithmetic then
    stays 32-bit, and constant parts of it fold into the instruction's immediate offset."""
    from llvmlite import ir
    from numba import types

    i32 = ir.IntType(32)
    base = _item_pointer(context, builder, arrty, aval, types.intp, ir.Constant(ir.IntType(64), 0))
    shared = builder.addrspacecast(builder.bitcast(base, ir.IntType(8).as_pointer()), ir.PointerType(ir.IntType(8), 3))
    base32 = builder.trunc(builder.ptrtoint(shared, ir.IntType(64)), i32)
    idx32 = builder.trunc(context.cast(builder, ival, idxty, types.int64), i32)
    return builder.add(base32, builder.shl(idx32, ir.Constant(i32, 2)))


def _make_ldmatrix_gpu(trans: bool):
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    text = ("ldmatrix.sync.aligned.m8n8.x4%s.shared.b16 {$0, $1, $2, $3}, [$4];" % (".trans" if trans else ""))

    @intrinsic
    def ldmatrix(typingctx, arr, idx):
        # arr: int32 shared array; idx: word index of this lane's 16-byte row (16-byte aligned)
        sig = types.UniTuple(types.int32, 4)(arr, idx)

        def codegen(context, builder, signature, args):
            addr = _shared_address(context, builder, signature.args[0], args[0], signature.args[1], args[1])
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.LiteralStructType([i32] * 4), [i32])
            # side effect: it reads memory cp.async and other warps wrote; keep it after the barrier
            res = builder.call(ir.InlineAsm(fnty, text, "=r,=r,=r,=r,r", side_effect=True), [addr])
            vals = [builder.extract_value(res, i) for i in range(4)]
            return context.make_tuple(builder, signature.return_type, vals)

        return sig, codegen

    return ldmatrix


def _make_mma_gpu(kind: str):
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    t = {"bf16": "bf16", "f16": "f16"}[kind]
    text = (f"mma.sync.aligned.m16n8k16.row.col.f32.{t}.{t}.f32 "
            "{$0, $1, $2, $3}, {$4, $5, $6, $7}, {$8, $9}, {$10, $11, $12, $13};")
    i32, f32 = types.int32, types.float32

    @intrinsic
    def mma(typingctx, a0, a1, a2, a3, b0, b1, c0, c1, c2, c3):
        sig = types.UniTuple(f32, 4)(i32, i32, i32, i32, i32, i32, f32, f32, f32, f32)

        def codegen(context, builder, signature, args):
            li32, lf32 = ir.IntType(32), ir.FloatType()
            fnty = ir.FunctionType(ir.LiteralStructType([lf32] * 4), [li32] * 6 + [lf32] * 4)
            asm = ir.InlineAsm(fnty, text, "=f,=f,=f,=f,r,r,r,r,r,r,f,f,f,f", side_effect=True)
            res = builder.call(asm, list(args))
            vals = [builder.extract_value(res, i) for i in range(4)]
            return context.make_tuple(builder, signature.return_type, vals)

        return sig, codegen

    return mma


def _make_pack2_gpu(kind: str):
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    # cvt puts its first source in the upper half: {hi, lo}
    text = f"cvt.rn.{'bf16x2' if kind == 'bf16' else 'f16x2'}.f32 $0, $1, $2;"

    @intrinsic
    def pack2(typingctx, lo, hi):
        sig = types.int32(types.float32, types.float32)

        def codegen(context, builder, signature, args):
            fnty = ir.FunctionType(ir.IntType(32), [ir.FloatType(), ir.FloatType()])
            return builder.call(ir.InlineAsm(fnty, text, "=r,f,f"), [args[1], args[0]])

        return sig, codegen

    return pack2


def _make_cp_async_zfill_gpu():
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    @intrinsic
    def cp_async_zfill(typingctx, dst, di, src, si, nbytes):
        # dst: int32 shared array, word di 16-byte aligned; src: global array, 16-byte aligned at si
        sig = types.void(dst, di, src, si, types.int32)

        def codegen(context, builder, signature, args):
            dty, dity, sty, sity, _ = signature.args
            d32 = _shared_address(context, builder, dty, args[0], dity, args[1])
            src = builder.bitcast(_item_pointer(context, builder, sty, args[2], sity, args[3]),
                                  ir.IntType(8).as_pointer())
            fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(32), src.type, ir.IntType(32)])
            asm = ir.InlineAsm(fnty, "cp.async.cg.shared.global [$0], [$1], 16, $2;", "r,l,r,~{memory}",
                               side_effect=True)
            builder.call(asm, [d32, src, args[4]])
            return context.get_dummy_value()

        return sig, codegen

    return cp_async_zfill


# ---------------------------------------------------------------------------------------------
# Simulator bodies: the same semantics, one OS thread per lane
class _Warp:
    def __init__(self):
        self.barrier = threading.Barrier(WARP)
        self.slots = ([None] * WARP, [None] * WARP)
        self.turn = [0] * WARP          # which slot each lane posts to next
        self.result = [None, None]      # a value computed once per instruction, for all lanes
        self.lock = threading.Lock()


def _exchange(x):
    """Post ``x`` for this lane; return (slot with every lane's value, slot parity, lane)."""
    t = threading.current_thread()
    warps = t._manager.__dict__.setdefault("_pdlab_warps", {})
    w = warps.get(t.thread_id // WARP)
    if w is None:
        w = warps.setdefault(t.thread_id // WARP, _Warp())
    lane = t.thread_id % WARP
    k = w.turn[lane]
    w.turn[lane] = k ^ 1
    w.slots[k][lane] = x
    w.result[k] = None                  # (every lane clears it before the barrier; none after)
    w.barrier.wait(timeout=120)         # a lane that died would otherwise hang the others
    return w, k, lane


def _words(arr, idx):
    return int(np.asarray(arr[idx]).view(np.uint32))


def _ldmatrix_sim(trans: bool):
    def ldmatrix(arr, idx):
        w, k, lane = _exchange(int(idx))
        rows = w.slots[k]               # rows[8 j + r]: word index of row r of matrix j
        out = []
        for j in range(4):
            halves = []
            for r, c in fragments.ldmatrix_coords(lane, trans):
                word = _words(arr, rows[8 * j + r] + c // 2)
                halves.append((word >> (16 * (c % 2))) & 0xFFFF)
            out.append(np.uint32(halves[0] | (halves[1] << 16)).view(np.int32))
        return tuple(out)

    return ldmatrix


def _unpack_bf16(words):
    w = np.asarray(words, dtype=np.int64) & 0xFFFFFFFF
    lo = ((w & 0xFFFF) << 16).astype(np.uint32).view(np.float32)
    hi = (w & 0xFFFF0000).astype(np.uint32).view(np.float32)
    return lo, hi


def _unpack_f16(words):
    w = np.asarray(words, dtype=np.int64) & 0xFFFFFFFF
    lo = (w & 0xFFFF).astype(np.uint16).view(np.float16).astype(np.float32)
    hi = (w >> 16).astype(np.uint16).view(np.float16).astype(np.float32)
    return lo, hi


UNPACK = {"bf16": _unpack_bf16, "f16": _unpack_f16}


def _mma_sim(kind: str):
    unpack = UNPACK[kind]

    def mma(a0, a1, a2, a3, b0, b1, c0, c1, c2, c3):
        w, k, lane = _exchange((a0, a1, a2, a3, b0, b1, c0, c1, c2, c3))
        with w.lock:                    # the first lane through computes the warp's product
            if w.result[k] is None:
                ops = w.slots[k]
                w.result[k] = fragments.mma_reference([o[0:4] for o in ops], [o[4:6] for o in ops],
                                                      [o[6:10] for o in ops], unpack)
            d = w.result[k][lane]
        return (np.float32(d[0]), np.float32(d[1]), np.float32(d[2]), np.float32(d[3]))

    return mma


def _pack2_sim(kind: str):
    def pack2(lo, hi):
        v = np.array([lo, hi], dtype=np.float32)
        if kind == "bf16":   # round to nearest even on the top 16 bits
            b = v.view(np.uint32).astype(np.uint64)
            h = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF
        else:
            h = v.astype(np.float16).view(np.uint16).astype(np.uint64)
        return np.uint32(int(h[0]) | (int(h[1]) << 16)).view(np.int32)

    return pack2


def _quad_sim(combine):
    def reduce(x):
        w, k, lane = _exchange(np.float32(x))
        vals = w.slots[k]
        first = lane & ~3
        # the butterfly's order: (x0 + x1) + (x2 + x3), for lane 0's view
        return combine(combine(vals[first], vals[first + 1]), combine(vals[first + 2], vals[first + 3]))

    return reduce


def _cp_async_zfill_sim(dst, di, src, si, nbytes):
    if nbytes:
        dst[di : di + 4] = np.asarray(src[si : si + 8]).view(dst.dtype)
    else:
        dst[di : di + 4] = 0


def _add(a, b):
    return a + b


def _max(a, b):
    return max(a, b)


# ---------------------------------------------------------------------------------------------
def ldmatrix_x4():
    """``(r0, r1, r2, r3) = ldmatrix_x4(smem, i)``: lanes 8 j .. 8 j + 7 point (word index ``i``)
    at the 8 rows of matrix j; register j of lane l gets row l >> 2 of matrix j, values
    2 (l % 4), 2 (l % 4) + 1 (``fragments.ldmatrix_coords``)."""
    return _ldmatrix_sim(False) if SIM else _make_ldmatrix_gpu(False)


def ldmatrix_x4_trans():
    """``ldmatrix_x4`` with ``.trans``: register j of lane l gets column l >> 2 of matrix j,
    rows 2 (l % 4), 2 (l % 4) + 1."""
    return _ldmatrix_sim(True) if SIM else _make_ldmatrix_gpu(True)


def mma_m16n8k16(kind: str):
    """``(d0, d1, d2, d3) = mma(a0, a1, a2, a3, b0, b1, c0, c1, c2, c3)``: D = A B + C for A, B
    in ``kind`` ("bf16" or "f16"), C and D fp32 (``fragments`` gives the layout)."""
    if kind not in UNPACK:
        raise ValueError(f"mma: kind {kind!r} not in {tuple(UNPACK)}")
    return _mma_sim(kind) if SIM else _make_mma_gpu(kind)


def pack2(kind: str):
    """``word = pack2(lo, hi)``: two fp32 rounded to ``kind``, ``lo`` in the low 16 bits."""
    if kind not in UNPACK:
        raise ValueError(f"pack2: kind {kind!r} not in {tuple(UNPACK)}")
    return _pack2_sim(kind) if SIM else _make_pack2_gpu(kind)


def cp_async_zfill():
    """``copy(smem, i, src, j, nbytes)``: ``cp.async`` of 16 bytes from global ``src[j:]`` to the
    int32 shared array's words ``i .. i + 3`` when ``nbytes`` is 16; with 0 nothing is read and
    the 16 bytes are zeroed (rows past the end of a sequence: zeros are harmless in both
    products, where a clamped re-read would need a row-by-row page lookup)."""
    return _cp_async_zfill_sim if SIM else _make_cp_async_zfill_gpu()


def quad_max():
    """The maximum of a value over the 4 lanes of a quad (lanes 4 g .. 4 g + 3), on every lane."""
    return _quad_sim(_max) if SIM else _butterfly_gpu(4, _max)


def quad_sum():
    """The sum of a value over the 4 lanes of a quad, on every lane."""
    return _quad_sim(_add) if SIM else _butterfly_gpu(4, _add)

