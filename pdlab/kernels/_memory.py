"""Memory intrinsics: what Numba will not emit by itself, as small inline-PTX / LLVM-IR pieces.

- 16-byte loads of fp16/bf16 bits and of fp32, and 16-byte fp32 stores,
- fp16/bf16 unpacking to fp32 and packing back,
- asynchronous global -> shared copies (``cp.async``, with an optional L2 evict-first policy),
- the acquire-release arrival atomic of decode's split merge.

Each helper returns the GPU intrinsic, or on the simulator a plain-Python function with the same
meaning (run per thread).
"""

from __future__ import annotations

import threading

import numpy as np

from ._numba import SIM, _asm_statement, _item_pointer, cuda, int32


# ---------------------------------------------------------------------------------------------
# 16-byte loads. Numba issues one 2-byte load per fp16/bf16 element by itself; one 16-byte load
# moves the same bytes in 8x fewer instructions, which a memory-bound kernel needs (GPU-NOTES:
# 1.3 -> 2.2 TB/s). ``load16`` returns the raw bits as 4 int32 words (2 values each) so the loads
# can be issued early and unpacked later, when the values are used (``unpack2``).
def _make_vector_load4_gpu(lane: str):
    """An intrinsic ``load(arr, idx)`` returning ``arr``'s 16 bytes at element ``idx`` as a tuple
    of 4 lanes (``lane``: "int32" raw words, or "float32"), in one ``ld.v4`` instruction."""
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    nb_lane = {"int32": types.int32, "float32": types.float32}[lane]

    @intrinsic
    def load(typingctx, arr, idx):
        # arr: 1-D array, 16-byte aligned at idx (int16 bits of fp16/bf16, or float32)
        sig = types.UniTuple(nb_lane, 4)(arr, idx)

        def codegen(context, builder, signature, args):
            ptr = _item_pointer(context, builder, signature.args[0], args[0], signature.args[1], args[1])
            i32 = ir.IntType(32)
            ll_lane = i32 if lane == "int32" else ir.FloatType()
            # view the address as <4 x lane> and load it with 16-byte alignment
            vec = builder.load(builder.bitcast(ptr, ir.VectorType(ll_lane, 4).as_pointer()), align=16)
            vals = [builder.extract_element(vec, ir.Constant(i32, w)) for w in range(4)]
            return context.make_tuple(builder, signature.return_type, vals)

        return sig, codegen

    return load


def _make_store4f_gpu():
    """An intrinsic ``store(arr, idx, a, b, c, d)``: 4 fp32 values to ``arr[idx:idx+4]`` in one
    ``st.v4.f32`` (``arr`` 16-byte aligned at ``idx``)."""
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    @intrinsic
    def store(typingctx, arr, idx, a, b, c, d):
        sig = types.void(arr, idx, types.float32, types.float32, types.float32, types.float32)

        def codegen(context, builder, signature, args):
            ptr = _item_pointer(context, builder, signature.args[0], args[0], signature.args[1], args[1])
            f32, i32 = ir.FloatType(), ir.IntType(32)
            vec = ir.Constant(ir.VectorType(f32, 4), ir.Undefined)
            for w, x in enumerate(args[2:]):
                vec = builder.insert_element(vec, x, ir.Constant(i32, w))
            builder.store(vec, builder.bitcast(ptr, ir.VectorType(f32, 4).as_pointer()), align=16)
            return context.get_dummy_value()

        return sig, codegen

    return store


def _make_unpack2_gpu(kind: str):
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    @intrinsic
    def unpack2(typingctx, word):
        # one int32 word = two 16-bit values, low half first (little endian) -> two fp32
        sig = types.UniTuple(types.float32, 2)(types.int32)

        def codegen(context, builder, signature, args):
            (w,) = args
            i32, i16, f32 = ir.IntType(32), ir.IntType(16), ir.FloatType()
            if kind == "bf16":  # bf16 = the top half of an fp32: move the bits there
                lo = builder.bitcast(builder.shl(w, ir.Constant(i32, 16)), f32)
                hi = builder.bitcast(builder.and_(w, ir.Constant(i32, -65536)), f32)  # 0xFFFF0000
            else:  # fp16: reinterpret as `half` and widen (cvt.f32.f16)
                lo16 = builder.trunc(w, i16)
                hi16 = builder.trunc(builder.lshr(w, ir.Constant(i32, 16)), i16)
                lo = builder.fpext(builder.bitcast(lo16, ir.HalfType()), f32)
                hi = builder.fpext(builder.bitcast(hi16, ir.HalfType()), f32)
            return context.make_tuple(builder, signature.return_type, [lo, hi])

        return sig, codegen

    return unpack2


def _load16_scalar_gpu(arr, i):  # eight 2-byte loads: the fallback if the wide load won't build
    return ((int32(arr[i]) & 0xFFFF) | (int32(arr[i + 1]) << 16),
            (int32(arr[i + 2]) & 0xFFFF) | (int32(arr[i + 3]) << 16),
            (int32(arr[i + 4]) & 0xFFFF) | (int32(arr[i + 5]) << 16),
            (int32(arr[i + 6]) & 0xFFFF) | (int32(arr[i + 7]) << 16))


def _load16_sim(arr, idx):
    b = np.asarray(arr[idx : idx + 8]).view(np.uint16).astype(np.uint32)
    return tuple((b[0::2] | (b[1::2] << 16)).view(np.int32))


def _unpack2_sim_bf16(word):
    w = np.array([word], dtype=np.int32).view(np.uint32)
    return (((w << 16).view(np.float32))[0], ((w & 0xFFFF0000).view(np.float32))[0])


def _unpack2_sim_f16(word):
    w = np.array([word], dtype=np.int32).view(np.uint16)  # [low half, high half]
    return (np.float32(w[0:1].view(np.float16)[0]), np.float32(w[1:2].view(np.float16)[0]))


def _load4f_sim(arr, idx):
    return (arr[idx], arr[idx + 1], arr[idx + 2], arr[idx + 3])


def load4f():
    """4 consecutive fp32 values ``arr[idx:idx+4]`` in one 16-byte load (``ld.v4.f32``): register-
    tiled kernels read their shared-memory operands this way, 4x fewer load instructions.
    ``arr`` must be 16-byte aligned (``cuda.shared.array(..., alignment=16)``), ``idx % 4 == 0``."""
    if SIM:
        return _load4f_sim
    return _make_vector_load4_gpu("float32")


def _store4f_sim(arr, idx, a, b, c, d):
    arr[idx], arr[idx + 1], arr[idx + 2], arr[idx + 3] = a, b, c, d


def store4f():
    """The store twin of ``load4f``: 4 fp32 values to ``arr[idx:idx+4]`` in one 16-byte store."""
    if SIM:
        return _store4f_sim
    return _make_store4f_gpu()


# ---------------------------------------------------------------------------------------------
# Asynchronous copies global -> shared memory (``cp.async``, sm_80+). A thread starts a 16-byte
# copy and goes on: the bytes land in shared memory without passing through its registers, so
# a kernel can keep many copies in flight while holding few registers (a register-pipelined
# loop must hold every byte it has in flight). Copies are grouped (``commit``) and waited for
# by group (``wait(n)``: all but the n most recent groups are complete). A wait only covers the
# thread's own copies: a kernel in which each thread reads back only what it copied needs no
# barrier.
def _make_cp_async16_gpu(evict_first: bool):
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    @intrinsic
    def cp_async16(typingctx, dst, di, src, si):
        # dst: shared array, 16-byte aligned at di; src: global array, 16-byte aligned at si
        sig = types.void(dst, di, src, si)

        def codegen(context, builder, signature, args):
            dty, dity, sty, sity = signature.args
            dval, dival, sval, sival = args
            i8p = ir.IntType(8).as_pointer()
            dst = builder.bitcast(_item_pointer(context, builder, dty, dval, dity, dival), i8p)
            src = builder.bitcast(_item_pointer(context, builder, sty, sval, sity, sival), i8p)
            # cp.async names its destination by a 32-bit shared-window address
            dshared = builder.addrspacecast(dst, ir.PointerType(ir.IntType(8), 3))
            d32 = builder.trunc(builder.ptrtoint(dshared, ir.IntType(64)), ir.IntType(32))
            text, constraints, operands = "cp.async.cg.shared.global [$0], [$1], 16;", "r,l", [d32, src]
            if evict_first:
                # the cache policy is a constant (ptxas folds it into the copy's memory descriptor)
                policy = builder.call(ir.InlineAsm(ir.FunctionType(ir.IntType(64), []),
                                                   "createpolicy.fractional.L2::evict_first.b64 $0, 1.0;", "=l"), [])
                text = "cp.async.cg.shared.global.L2::cache_hint [$0], [$1], 16, $2;"
                constraints, operands = "r,l,l", operands + [policy]
            fnty = ir.FunctionType(ir.VoidType(), [o.type for o in operands])
            builder.call(ir.InlineAsm(fnty, text, constraints + ",~{memory}", side_effect=True), operands)
            return context.get_dummy_value()

        return sig, codegen

    return cp_async16


def _cp_async16_sim(dst, di, src, si):   # copy at once: the simulator has no asynchrony
    dst[di : di + 4] = np.asarray(src[si : si + 8]).view(dst.dtype)   # the bits, as dst's words


def _no_op():
    pass


def cp_async16(evict_first: bool = False):
    """``copy(dst, di, src, si)``: 16 bytes from global ``src[si:]`` (8 fp16/bf16 values, viewed as
    int16) to shared ``dst[di:di+4]`` (a float32 or int32 array used as raw words), asynchronously.
    ``evict_first``: the bytes are read once (decode's K/V), so L2 evicts their lines first and
    keeps what is read again (block tables, partial outputs) instead of the stream."""
    if SIM:
        return _cp_async16_sim
    return _make_cp_async16_gpu(evict_first)


def cp_async_commit():
    """Close the group of copies this thread started since the last commit."""
    if SIM:
        return _no_op
    return _asm_statement("cp.async.commit_group;")


def cp_async_wait(pending: int):
    """Wait until at most ``pending`` of this thread's most recent copy groups are unfinished."""
    if SIM:
        return _no_op
    return _asm_statement(f"cp.async.wait_group {int(pending)};")


def _make_arrive_gpu():
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    @intrinsic
    def arrive(typingctx, arr, idx):
        sig = types.int32(arr, idx)

        def codegen(context, builder, signature, args):
            ptr = _item_pointer(context, builder, signature.args[0], args[0], signature.args[1], args[1])
            asm = ir.InlineAsm(ir.FunctionType(ir.IntType(32), [ptr.type]), "atom.acq_rel.gpu.add.u32 $0, [$1], 1;",
                               "=r,l,~{memory}", side_effect=True)
            return builder.call(asm, [ptr])

        return sig, codegen

    return arrive


_arrive_lock = threading.Lock()


def _arrive_sim(arr, idx):   # the simulator runs a block's threads as OS threads
    with _arrive_lock:
        old = arr[idx]
        arr[idx] = old + 1
    return old


def arrive():
    """``arrive(counter, i)``: add 1 to the int32 ``counter[i]`` and return its old value, in one
    ``atom.acq_rel.gpu``: a release (what this thread, and through a barrier before it its block,
    wrote is visible GPU-wide before the count) and an acquire (what the blocks counted before
    wrote is visible after it). Cheaper than a relaxed atomic between two ``fence.acq_rel.gpu``:
    one ``MEMBAR.GPU`` instead of two."""
    if SIM:
        return _arrive_sim
    return _make_arrive_gpu()


def _load_words_sim(arr, idx):
    return tuple(np.asarray(arr[idx : idx + 4]).view(np.int32))


def load_words():
    """The 16 bytes at ``arr[idx:idx+4]`` of a float32 array as 4 raw int32 words, in one load:
    reads back what ``cp_async16`` copied (still fp16/bf16 pairs, for ``unpack2``)."""
    if SIM:
        return _load_words_sim
    return _make_vector_load4_gpu("int32")


def load16(wide: bool = True):
    """8 consecutive 16-bit values at ``arr[idx:idx+8]`` as 4 int32 words: one 16-byte load
    (``wide``), or eight 2-byte loads."""
    if SIM:
        return _load16_sim
    return _make_vector_load4_gpu("int32") if wide else cuda.jit(device=True, inline="always")(_load16_scalar_gpu)


def unpack2(kind: str):
    """int32 word -> (fp32, fp32) for ``kind`` in {"f16", "bf16"}."""
    if SIM:
        return _unpack2_sim_bf16 if kind == "bf16" else _unpack2_sim_f16
    return _make_unpack2_gpu(kind)


def _make_pack1_gpu(kind: str):
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    @intrinsic
    def pack1(typingctx, x):
        # fp32 -> the 16 bits of an fp16/bf16 value (round to nearest even), as an int16
        sig = types.int16(types.float32)

        def codegen(context, builder, signature, args):
            (v,) = args
            i32, i16 = ir.IntType(32), ir.IntType(16)
            if kind == "bf16":  # keep the top half, rounded: + 0x7FFF + (lowest kept bit)
                b = builder.bitcast(v, i32)
                odd = builder.and_(builder.lshr(b, ir.Constant(i32, 16)), ir.Constant(i32, 1))
                b = builder.add(b, builder.add(odd, ir.Constant(i32, 0x7FFF)))
                return builder.trunc(builder.lshr(b, ir.Constant(i32, 16)), i16)
            return builder.bitcast(builder.fptrunc(v, ir.HalfType()), i16)   # cvt.rn.f16.f32

        return sig, codegen

    return pack1


def _pack1_sim_bf16(x):
    b = np.array([x], dtype=np.float32).view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    return b.astype(np.uint16).view(np.int16)[0]


def _pack1_sim_f16(x):
    return np.array([x], dtype=np.float16).view(np.int16)[0]


def _pack1_f32(x):
    return x


def pack1(kind: str):
    """fp32 -> what an output array of ``kind`` stores: the value itself for "f32", the 16 bits of
    the rounded fp16/bf16 value (an int16; the tensor is viewed as int16) for "f16"/"bf16". Lets a
    kernel write its output in the caller's dtype instead of leaving a conversion to torch."""
    if kind == "f32":
        return _pack1_f32 if SIM else cuda.jit(device=True, inline="always")(_pack1_f32)
    if SIM:
        return _pack1_sim_bf16 if kind == "bf16" else _pack1_sim_f16
    return _make_pack1_gpu(kind)
