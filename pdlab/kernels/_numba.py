"""What every Numba kernel of pdlab shares, in one place.

Importing this module imports numba; ``pdlab.kernels`` itself never does, so the torch backend
keeps working on machines where numba is missing or broken.

- the numpy-2.5 shim (applied before the first compile),
- simulator detection (``NUMBA_ENABLE_CUDASIM=1``: kernels run as Python threads on the CPU),
- ``kernel(...)``: ``cuda.jit`` with GPU-only options (fastmath, lineinfo, a register cap) kept
  away from the simulator,
- small building blocks of intrinsics (a pointer to an array element, one PTX statement),
- the lane sum/max that need warp shuffles (with a simulator body: it has no shuffles),
- torch <-> Numba array wrapping (cached, so persistent tensors are wrapped once),
- the stream Numba launches on (torch's current stream, so CUDA-graph capture sees it), and
  occupancy arithmetic.

The intrinsics themselves live beside it: ``_memory`` (16-byte loads and stores, ``cp.async``,
16-bit packing, the arrival atomic) and ``_mma`` (tensor cores: ``ldmatrix``, ``mma.sync``).
Each has a GPU body (inline PTX or LLVM IR) and a plain-Python simulator body.
"""

from __future__ import annotations

import functools
import operator
import os
import sys
import threading

import numpy as np

# numba-cuda 0.30.4 calls ``np.row_stack`` while compiling its first kernel; numpy 2.5 removed it
# (it was a deprecated alias of ``np.vstack``). Put the alias back before numba compiles anything.
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

from numba import cuda, float32, int32, types  # noqa: E402,F401  (after the shim on purpose; re-exported)

from pdlab import kernels as _kernels  # noqa: E402  (the wrapper reservation lives there, numba-free)

SIM: bool = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"
if SIM and sys.getswitchinterval() > 5e-4:
    # The simulator runs a block as one OS thread per CUDA thread, and every barrier (and every
    # warp-collective shim) hands the GIL from thread to thread. At CPython's default 5 ms
    # switch interval each hand-off can wait for the running thread's time slice (the
    # simulator's scheduler polls in a busy loop): kernels simulate 4-6x faster at 0.5 ms.
    sys.setswitchinterval(5e-4)

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


def _index_sim(i):
    return int(i)


#: ``arr[index(i)]``: an index the kernel knows is >= 0. Numba wraps negative (signed) indices
#: around, a compare and a select per access; an unsigned index skips them. Epilogues that run
#: once per block read cold instruction memory, so their code size matters.
index = _index_sim if SIM else types.uint32


#: shared arrays read 16 bytes at a time are 16-byte aligned (the simulator refuses alignment)
ALIGN = None if SIM else 16


def _item_pointer(context, builder, arrty, aval, idxty, ival):
    """LLVM pointer to ``arr[idx]`` of a 1-D array (the intrinsics below load and store there)."""
    from numba import types
    from numba.cuda import cgutils

    ival = context.cast(builder, ival, idxty, types.intp)
    ary = context.make_array(arrty)(context, builder, aval)
    return cgutils.get_item_pointer(context, builder, arrty, ary, [ival], wraparound=False)


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
# each entry keeps its tensor alive: only the few persistent ones belong here. The cache holds
# max(_WRAP_CACHE_MAX, what ``pdlab.kernels.reserve_wrappers`` asked for) entries.
_WRAP_CACHE_MAX = 8


def wrap_capacity() -> int:
    """Entries the wrapper cache holds before the oldest leaves."""
    return max(_WRAP_CACHE_MAX, _kernels._reserved_wrappers)


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
        if len(_WRAP_CACHE) >= wrap_capacity():
            _WRAP_CACHE.pop(next(iter(_WRAP_CACHE)))  # oldest first
        arr = _WRAP_CACHE[key] = cuda.as_cuda_array(t.detach(), sync=False)
    return arr


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
