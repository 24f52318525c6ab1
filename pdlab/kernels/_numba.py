"""Everything Numba-specific that the kernels share, in one place.

Importing this module imports numba; ``pdlab.kernels`` itself never does, so the torch backend
keeps working on machines where numba is missing or broken.

- the numpy-2.5 shim (applied before the first compile),
- simulator detection (``NUMBA_ENABLE_CUDASIM=1``: kernels run as Python threads on the CPU),
- ``kernel(...)``: ``cuda.jit`` with GPU-only options (fastmath, lineinfo, a register cap) kept
  away from the simulator,
- device helpers with two bodies: a fast GPU one and a plain-Python simulator one
  (16-byte loads of fp16/bf16 bits and of fp32, fp16/bf16 unpacking and packing, the lane
  sum/max that need warp shuffles),
- torch <-> Numba array wrapping (cached, so persistent tensors are wrapped once),
- the stream Numba launches on (torch's current stream, so CUDA-graph capture sees it).
"""

from __future__ import annotations

import functools
import operator
import os
import threading

import numpy as np

# numba-cuda 0.30.4 calls ``np.row_stack`` while compiling its first kernel; numpy 2.5 removed it
# (it was a deprecated alias of ``np.vstack``). Put the alias back before numba compiles anything.
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

from numba import cuda, float32, int32, types  # noqa: E402  (after the shim on purpose)
from numba.cuda import libdevice  # noqa: E402

SIM: bool = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"

# Python floats are float64; every literal a kernel uses goes through float32() so the kernel
# stays in fp32 (an .f64 instruction runs 64x slower on an H200's CUDA cores).
NEG = float32(-1e30)  # "minus infinity" for masked scores; finite so fastmath stays valid
LOG2E = float32(1.4426950408889634)  # log2(e): kernels keep scores in base 2, softmax by exp2


def kernel(fn=None, *, sig=None, max_registers=None):
    """``cuda.jit`` for a kernel. On a GPU: fastmath (fast exp, fused multiply-add) and lineinfo
    (source lines in profilers), compiled eagerly when ``sig`` is given (cheaper launches).
    ``max_registers`` caps registers per thread (more blocks fit on an SM; too low a cap spills).
    The simulator rejects those options, so it gets a bare ``cuda.jit``."""

    def wrap(f):
        if SIM:
            return cuda.jit(f)
        opts = dict(fastmath=True, lineinfo=True)
        if max_registers:
            opts["max_registers"] = max_registers
        return cuda.jit(sig, **opts)(f) if sig is not None else cuda.jit(**opts)(f)

    return wrap(fn) if fn is not None else wrap


def device(gpu_impl, sim_impl):
    """A device function with a GPU body and a simulator body (plain Python, runs per thread)."""
    if SIM:
        return sim_impl
    return cuda.jit(device=True, inline="always")(gpu_impl)


def _index_sim(i):
    return int(i)


#: ``arr[index(i)]``: an index the kernel knows is >= 0. Numba wraps negative (signed) indices
#: around, a compare and a select per access; an unsigned index skips them. Epilogues that run
#: once per block read cold instruction memory, so their code size matters.
index = _index_sim if SIM else types.uint32


# ---------------------------------------------------------------------------------------------
# bf16 -> fp32. Numba has no bf16 type: the cache is viewed as int16 and each value unpacked by
# putting its 16 bits on top of an fp32 (bf16 is exactly the upper half of an fp32).
def _bf16_gpu(bits):
    return libdevice.int_as_float(int32((int32(bits) & int32(0xFFFF)) << int32(16)))


def _bf16_sim(bits):
    return np.array([(int(bits) & 0xFFFF) << 16], dtype=np.uint32).view(np.float32)[0]


bf16_to_f32 = device(_bf16_gpu, _bf16_sim)


def _f16_gpu(x):
    return float32(x)


def _f16_sim(x):
    return np.float32(x)


f16_to_f32 = device(_f16_gpu, _f16_sim)


# ---------------------------------------------------------------------------------------------
# 16-byte loads. Numba issues one 2-byte load per fp16/bf16 element by itself; one 16-byte load
# moves the same bytes in 8x fewer instructions, which a memory-bound kernel needs (GPU-NOTES:
# 1.3 -> 2.2 TB/s). ``load16`` returns the raw bits as 4 int32 words (2 values each) so the loads
# can be issued early and unpacked later, when the values are used (``unpack2``).
def _item_pointer(context, builder, arrty, aval, idxty, ival):
    """LLVM pointer to ``arr[idx]`` of a 1-D array (the intrinsics below load and store there)."""
    from numba import types
    from numba.cuda import cgutils

    ival = context.cast(builder, ival, idxty, types.intp)
    ary = context.make_array(arrty)(context, builder, aval)
    return cgutils.get_item_pointer(context, builder, arrty, ary, [ival], wraparound=False)


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
ALIGN = None if SIM else 16   # 16-byte aligned shared arrays (the simulator refuses alignment)


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


def _asm_statement(text: str):
    """An intrinsic running one PTX statement that orders memory (no operands, clobbers memory)."""
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    @intrinsic
    def statement(typingctx):
        def codegen(context, builder, signature, args):
            asm = ir.InlineAsm(ir.FunctionType(ir.VoidType(), []), text, "~{memory}", side_effect=True)
            builder.call(asm, [])
            return context.get_dummy_value()

        return types.void(), codegen

    return statement


@functools.lru_cache(maxsize=None)
def has_cp_async() -> bool:
    """cp.async exists from sm_80 (Ampere) on; the simulator runs it as a plain copy. Asked once
    per process (every decode call picks its kernel with it)."""
    return SIM or cuda.get_current_device().compute_capability >= (8, 0)


def _cp_async16_sim(dst, di, src, si):   # copy at once: the simulator has no asynchrony
    dst[di : di + 4] = np.asarray(src[si : si + 8]).view(np.float32)


def _no_op():
    pass


def cp_async16(evict_first: bool = False):
    """``copy(dst, di, src, si)``: 16 bytes from global ``src[si:]`` (8 fp16/bf16 values, viewed as
    int16) to shared ``dst[di:di+4]`` (a float32 array used as raw words), asynchronously.
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


def paging(block_size: int):
    """(page_of, in_page) for a paged cache of ``block_size`` tokens per page: token t lives in
    block-table column page_of(t), at in_page(t) within the page. Powers of two (16, 32) use a
    shift and a mask: Python's // and % on signed 64-bit indices cost several instructions each."""
    bs = block_size
    if bs & (bs - 1) == 0:
        shift = bs.bit_length() - 1

        def page_of(t):
            return t >> shift

        def in_page(t):
            return t & (bs - 1)
    else:
        def page_of(t):
            return t // bs

        def in_page(t):
            return t % bs
    if SIM:
        return page_of, in_page
    return (cuda.jit(device=True, inline="always")(page_of), cuda.jit(device=True, inline="always")(in_page))


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


def load1(kind: str):
    """The scalar loader for ``kind``: one cache element -> fp32."""
    return bf16_to_f32 if kind == "bf16" else f16_to_f32


# ---------------------------------------------------------------------------------------------
def _lane_reduce_sim(width: int, combine):
    """Simulator stand-in for a shuffle butterfly: each thread posts its value in a per-block
    buffer, and after a barrier folds its group's values with ``combine`` (first lane first)."""

    def reduce_sim(x):
        t = threading.current_thread()
        buf = t._manager.__dict__.setdefault("_pdlab_lane_buf", {})
        buf[t.thread_id] = np.float32(x)
        t.syncthreads()
        first = t.thread_id - t.thread_id % width
        acc = buf[first]
        for i in range(first + 1, first + width):
            acc = combine(acc, buf[i])
        t.syncthreads()
        return acc

    return reduce_sim


def _add(a, b):
    return a + b


def _max(a, b):
    return max(a, b)


def _butterfly_gpu(width: int, combine):
    """x combined with every other lane of its group of ``width`` (a power of two <= 32): one
    ``shfl_xor`` step per halving (offsets width/2 .. 1), built as nested device functions (all
    inlined, so the code is the hand-written chain of shuffles)."""
    if width not in (2, 4, 8, 16, 32):
        raise ValueError(f"lane reduction: unsupported width {width} (a power of two from 2 to 32)")
    combine = cuda.jit(device=True, inline="always")(combine)
    step = None
    off = 1
    while off < width:           # build from the innermost (offset 1) outwards
        step = _shuffle_step(off, combine, step)
        off *= 2
    return step


def _shuffle_step(off: int, combine, inner):
    if inner is None:
        def step(x):
            return combine(x, cuda.shfl_xor_sync(0xFFFFFFFF, x, off))
    else:
        def step(x):
            return inner(combine(x, cuda.shfl_xor_sync(0xFFFFFFFF, x, off)))
    return cuda.jit(device=True, inline="always")(step)


# Sum a value over a group of `width` neighbouring lanes (a power of two <= 32); every lane of the
# group gets the total. On a GPU: a butterfly of warp shuffles, no shared memory. The simulator
# has no shuffles, so it exchanges through a per-block buffer between two barriers. Callers must
# reach this from every thread of the block the same number of times (block-uniform loops).
def lane_sum(width: int):
    if SIM:
        return _lane_reduce_sim(width, operator.add)
    return _butterfly_gpu(width, _add)


def lane_max(width: int):
    """Like ``lane_sum``, but the maximum over a group of ``width`` neighbouring lanes."""
    if SIM:
        return _lane_reduce_sim(width, max)
    return _butterfly_gpu(width, _max)


# ---------------------------------------------------------------------------------------------
# torch tensor -> what a Numba launch takes. GPU: a zero-copy device-array view (wrapping costs
# tens of microseconds, so a persistent KV cache is wrapped once, not on every launch).
# Simulator: a numpy view sharing the tensor's memory. bf16 travels as int16 bits. sync=False:
# we launch on torch's current stream, so ordering holds without a (graph-breaking) host sync.
_WRAP_CACHE: dict = {}
_WRAP_CACHE_MAX = 8  # each entry keeps its tensor alive: only the few persistent ones belong here


def as_numba(t, persistent: bool = False):
    """``persistent=True`` for tensors that live across calls (the KV cache): their wrapper is
    cached by pointer/shape/dtype. Everything else is wrapped per call."""
    import torch

    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    if SIM or not t.is_cuda:
        return t.detach().numpy()
    if not persistent:
        return cuda.as_cuda_array(t.detach(), sync=False)
    key = (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype, t.device.index)
    arr = _WRAP_CACHE.get(key)
    if arr is None:
        if len(_WRAP_CACHE) >= _WRAP_CACHE_MAX:
            _WRAP_CACHE.pop(next(iter(_WRAP_CACHE)))  # oldest first
        arr = _WRAP_CACHE[key] = cuda.as_cuda_array(t.detach(), sync=False)
    return arr


def clear_wrap_cache() -> None:
    """Drop cached wrappers (and the tensors they keep alive)."""
    _WRAP_CACHE.clear()


_STREAMS: dict = {}


def stream():
    """torch's current CUDA stream as a Numba stream (inside ``torch.cuda.graph()`` this is the
    capturing stream, which is how Numba launches end up in a CUDA graph). 0 on the simulator."""
    if SIM:
        return 0
    import torch

    handle = torch.cuda.current_stream().cuda_stream
    s = _STREAMS.get(handle)
    if s is None:
        s = _STREAMS[handle] = cuda.external_stream(handle)
    return s


def num_sms() -> int:
    if SIM:
        return 1
    return cuda.get_current_device().MULTIPROCESSOR_COUNT


_occupancy: dict = {}


def blocks_per_sm(kernel, threads: int):
    """How many blocks of a compiled ``kernel`` (one signature) fit on one SM at once, limited by
    its registers (allocated per warp in units of 256), its static shared memory (plus 1 KB the
    driver keeps per block) and the SM's thread limit. None on the simulator."""
    if SIM:
        return None
    key = (id(kernel), threads)
    if key not in _occupancy:
        dev = cuda.get_current_device()
        regs = kernel.get_regs_per_thread()
        smem = kernel.get_shared_mem_per_block() + 1024
        per_warp = -(-regs * 32 // 256) * 256
        by_regs = getattr(dev, "MAX_REGISTERS_PER_MULTIPROCESSOR", 65536) // (per_warp * (threads // 32))
        by_smem = getattr(dev, "MAX_SHARED_MEMORY_PER_MULTIPROCESSOR", 233472) // smem
        by_threads = getattr(dev, "MAX_THREADS_PER_MULTI_PROCESSOR", 2048) // threads
        _occupancy[key] = max(1, min(by_regs, by_smem, by_threads, 32))
    return _occupancy[key]
