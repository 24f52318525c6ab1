"""Everything Numba-specific that the kernels share, in one place.

Importing this module imports numba; ``pdlab.kernels`` itself never does, so the torch backend
keeps working on machines where numba is missing or broken.

- the numpy-2.5 shim (applied before the first compile),
- simulator detection (``NUMBA_ENABLE_CUDASIM=1``: kernels run as Python threads on the CPU),
- ``kernel(...)``: ``cuda.jit`` with GPU-only options kept away from the simulator,
- device helpers with two bodies: a fast GPU one and a plain-Python simulator one
  (16-byte loads, bf16 unpacking, the lane reduction that needs warp shuffles),
- torch <-> Numba array wrapping (cached, so persistent tensors are wrapped once),
- the stream Numba launches on (torch's current stream, so CUDA-graph capture sees it).
"""

from __future__ import annotations

import os
import threading

import numpy as np

# numba-cuda 0.30.4 calls ``np.row_stack`` while compiling its first kernel; numpy 2.5 removed it
# (it was a deprecated alias of ``np.vstack``). Put the alias back before numba compiles anything.
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

from numba import cuda, float32, int32  # noqa: E402  (after the shim on purpose)

SIM: bool = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"

# Python floats are float64; every literal a kernel uses goes through float32() so the kernel
# stays in fp32 (an .f64 instruction runs 64x slower on an H200's CUDA cores).
NEG = float32(-1e30)  # "minus infinity" for masked scores; finite so fastmath stays valid


def kernel(fn=None, *, sig=None):
    """``cuda.jit`` for a kernel. On a GPU: fastmath (fast exp, fused multiply-add) and lineinfo
    (source lines in profilers), compiled eagerly when ``sig`` is given (cheaper launches).
    The simulator rejects those options, so it gets a bare ``cuda.jit``."""

    def wrap(f):
        if SIM:
            return cuda.jit(f)
        opts = dict(fastmath=True, lineinfo=True)
        return cuda.jit(sig, **opts)(f) if sig is not None else cuda.jit(**opts)(f)

    return wrap(fn) if fn is not None else wrap


def device(gpu_impl, sim_impl):
    """A device function with a GPU body and a simulator body (plain Python, runs per thread)."""
    if SIM:
        return sim_impl
    return cuda.jit(device=True, inline="always")(gpu_impl)


# ---------------------------------------------------------------------------------------------
# bf16 -> fp32. Numba has no bf16 type: the cache is viewed as int16 and each value unpacked by
# putting its 16 bits on top of an fp32 (bf16 is exactly the upper half of an fp32).
def _bf16_gpu(bits):
    from numba.cuda import libdevice

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
# 16-byte loads: 8 consecutive fp16/bf16 values -> 8 fp32. Numba issues one 2-byte load per
# element by itself; a wide load moves the same bytes in 8x fewer instructions, which is what a
# memory-bound kernel needs (see GPU-NOTES: 1.3 -> 2.2 TB/s).
def _make_load8_gpu(kind: str):
    from llvmlite import ir
    from numba import types
    from numba.cuda import cgutils
    from numba.cuda.extending import intrinsic

    @intrinsic
    def load8(typingctx, arr, idx):
        # arr: 1-D int16 (bf16 bits) or float16 array; idx: element index, a multiple of 8
        sig = types.UniTuple(types.float32, 8)(arr, idx)

        def codegen(context, builder, signature, args):
            arrty, idxty = signature.args
            aval, ival = args
            ival = context.cast(builder, ival, idxty, types.intp)
            ary = context.make_array(arrty)(context, builder, aval)
            ptr = cgutils.get_item_pointer(context, builder, arrty, ary, [ival], wraparound=False)
            i32, i16 = ir.IntType(32), ir.IntType(16)
            # view the address as <4 x i32> and load it with 16-byte alignment: ld.global.v4.u32
            vptr = builder.bitcast(ptr, ir.VectorType(i32, 4).as_pointer())
            vec = builder.load(vptr, align=16)
            out = []
            for w in range(4):
                word = builder.extract_element(vec, ir.Constant(i32, w))
                if kind == "bf16":  # low half first (little endian), each moved into fp32's top bits
                    lo = builder.shl(word, ir.Constant(i32, 16))
                    hi = builder.and_(word, ir.Constant(i32, -65536))  # 0xFFFF0000
                    out += [builder.bitcast(lo, ir.FloatType()), builder.bitcast(hi, ir.FloatType())]
                else:  # fp16: reinterpret each half as `half` and widen (one cvt.f32.f16 each)
                    lo = builder.trunc(word, i16)
                    hi = builder.trunc(builder.lshr(word, ir.Constant(i32, 16)), i16)
                    for h in (lo, hi):
                        out.append(builder.fpext(builder.bitcast(h, ir.HalfType()), ir.FloatType()))
            return context.make_tuple(builder, signature.return_type, out)

        return sig, codegen

    return load8


def _load8_sim_bf16(arr, idx):
    bits = np.asarray(arr[idx : idx + 8]).astype(np.uint16).astype(np.uint32) << 16
    return tuple(bits.view(np.float32))


def _load8_sim_f16(arr, idx):
    return tuple(np.asarray(arr[idx : idx + 8]).astype(np.float32))


def _make_load8_scalar(kind: str):
    cvt = load1(kind)

    def load8_scalar(arr, i):  # 8 separate 2-byte loads: the fallback if the wide one won't build
        return (cvt(arr[i]), cvt(arr[i + 1]), cvt(arr[i + 2]), cvt(arr[i + 3]),
                cvt(arr[i + 4]), cvt(arr[i + 5]), cvt(arr[i + 6]), cvt(arr[i + 7]))

    return cuda.jit(device=True, inline="always")(load8_scalar)


def load8(kind: str, wide: bool = True):
    """The 8-wide loader for ``kind`` in {"f16", "bf16"}: one 16-byte load (``wide``) or eight
    2-byte loads."""
    if SIM:
        return _load8_sim_bf16 if kind == "bf16" else _load8_sim_f16
    return _make_load8_gpu(kind) if wide else _make_load8_scalar(kind)


def load1(kind: str):
    """The scalar loader for ``kind``: one cache element -> fp32."""
    return bf16_to_f32 if kind == "bf16" else f16_to_f32


# ---------------------------------------------------------------------------------------------
# Sum a value over a group of `width` neighbouring lanes (a power of two <= 32); every lane of the
# group gets the total. On a GPU: a butterfly of warp shuffles, no shared memory. The simulator
# has no shuffles, so it exchanges through a per-block buffer between two barriers. Callers must
# reach this from every thread of the block the same number of times (block-uniform loops).
def lane_sum(width: int):
    steps = [1 << k for k in range(width.bit_length() - 1)]

    if SIM:

        def lane_sum_sim(x):
            t = threading.current_thread()
            buf = t._manager.__dict__.setdefault("_pdlab_lane_buf", {})
            buf[t.thread_id] = np.float32(x)
            t.syncthreads()
            first = t.thread_id - t.thread_id % width
            total = np.float32(0)
            for i in range(first, first + width):
                total += buf[i]
            t.syncthreads()
            return total

        return lane_sum_sim

    if width == 16:

        def gpu16(x):
            x += cuda.shfl_xor_sync(0xFFFFFFFF, x, 8)
            x += cuda.shfl_xor_sync(0xFFFFFFFF, x, 4)
            x += cuda.shfl_xor_sync(0xFFFFFFFF, x, 2)
            x += cuda.shfl_xor_sync(0xFFFFFFFF, x, 1)
            return x

        return cuda.jit(device=True, inline="always")(gpu16)
    if width == 8:

        def gpu8(x):
            x += cuda.shfl_xor_sync(0xFFFFFFFF, x, 4)
            x += cuda.shfl_xor_sync(0xFFFFFFFF, x, 2)
            x += cuda.shfl_xor_sync(0xFFFFFFFF, x, 1)
            return x

        return cuda.jit(device=True, inline="always")(gpu8)
    raise ValueError(f"lane_sum: unsupported width {width} (steps {steps})")


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
