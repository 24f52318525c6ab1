"""Paged, chunk-aware prefill attention, host side: validation, the choice of kernel and the
launch. Two kernels share one contract:

- ``prefill_mma.py``: FlashAttention-2-style on the tensor cores (``mma.sync`` m16n8k16 from
  inline PTX), fp16/bf16 operands, fp32 accumulation. Needs sm_80 or later.
- ``prefill_fp32.py``: the same algorithm on the fp32 CUDA cores: any CUDA GPU, and the
  readable version.

``kernel="auto"`` (the default) takes the tensor-core kernel where the device has bf16 ``mma``
(compute capability 8.0 or later; on the simulator, see ``SIM_DEFAULT``), else the fp32 one;
``kernel="mma"`` or ``"fp32"`` forces one (benchmarks, tests).

One launch serves a ragged batch: sequence s contributes q_len_s query rows (a whole prompt or a
chunk of one) whose K/V, and the K/V of everything before them, are already in the paged cache.
Query i of sequence s sits at position seq_len_s - q_len_s + i and attends to keys 0..position.
Measurements: bench/KERNEL-NOTES.md.
"""

from __future__ import annotations

import functools

import torch

from . import _numba as nb
from . import validate
from ._numba import SIM, cuda, float32
from .prefill_fp32 import BM, BN, MAX_REGISTERS, THREADS, TILE, prefill_kernel  # noqa: F401  (re-exported)
from .prefill_mma import TILE as MMA_TILE
from .prefill_mma import prefill_mma_kernel

HEAD_DIMS = validate.NUMBA_HEAD_DIMS
KERNELS = ("auto", "mma", "fp32")
#: what "auto" picks on the simulator, where both kernels run (the emulated tensor-core kernel is
#: the slower one to simulate: one barrier per warp instruction)
SIM_DEFAULT = "fp32"


@functools.lru_cache(maxsize=None)
def has_mma() -> bool:
    """bf16/fp16 ``mma.sync.m16n8k16`` with fp32 accumulation: sm_80 (Ampere) and later."""
    return SIM or cuda.get_current_device().compute_capability >= (8, 0)


def choose_kernel(kernel: str = "auto") -> str:
    """"mma" or "fp32" for ``kernel`` in KERNELS (both cover every supported head dim and dtype)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel: {kernel!r} not in {KERNELS}")
    if kernel != "auto":
        return kernel
    if SIM:
        return SIM_DEFAULT
    return "mma" if has_mma() else "fp32"


def prefill_attention(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale,
                      max_q_len=None, check=True, kernel="auto", tile=None, max_registers=None):
    """q [total_q, H, D] -> out [total_q, H, D] (q's dtype). ``max_q_len`` (the longest chunk)
    sizes the grid; it is read from cu_seqlens_q when not given (a host sync). ``kernel``: "auto",
    "mma" or "fp32". ``tile`` and ``max_registers`` override the chosen kernel's tile shape and
    register cap (benchmarks): (warps, m-tiles per warp, BN) for "mma", (threads, BM, BN, DC, VH)
    for "fp32"."""
    which = choose_kernel(kernel)
    if which == "mma" and not has_mma():
        raise ValueError("kernel: 'mma' needs compute capability 8.0 or later; use kernel='fp32'")
    if check:
        _, mq = validate.check_prefill(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale)
        max_q_len = max_q_len if max_q_len is not None else mq
    nblk, bs, hkv, d = k_cache.shape
    total_q, H, _ = q.shape
    validate.check_supported(d, H // hkv, "prefill")
    num_seqs = cu_seqlens_q.shape[0] - 1
    if max_q_len is None:
        cu = cu_seqlens_q.cpu()
        max_q_len = int((cu[1:] - cu[:-1]).max()) if num_seqs else 0
    if which == "mma":
        return _launch_mma(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale, max_q_len,
                           tuple(tile or MMA_TILE), max_registers)
    return _launch_fp32(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale, max_q_len,
                        tuple(tile or TILE), MAX_REGISTERS if max_registers is None else max_registers)


def _cache_args(k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens):
    return (nb.as_numba(k_cache.view(torch.int16).view(-1), persistent=True),
            nb.as_numba(v_cache.view(torch.int16).view(-1), persistent=True), nb.as_numba(block_tables),
            nb.as_numba(cu_seqlens_q), nb.as_numba(seq_lens))


def _aligned(t):
    """``t`` flat and 16-byte aligned (the kernels read q 16 bytes at a time)."""
    t = t.contiguous().view(-1)
    return t.clone() if t.data_ptr() % 16 else t


def _launch_mma(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale, max_q_len, tile, regs):
    nblk, bs, hkv, d = k_cache.shape
    total_q, H, _ = q.shape
    out = torch.empty(total_q, H, d, dtype=k_cache.dtype, device=q.device)   # [total_q, H, D], cache dtype
    if total_q == 0 or max_q_len == 0:
        return out.to(q.dtype)
    warps, mt, _ = tile
    bm = 16 * mt * warps
    q16 = _aligned(q.to(k_cache.dtype)).view(torch.int16)   # q in the operands' dtype (as SDPA has it)
    k = prefill_mma_kernel(validate.kind(k_cache), d, H // hkv, bs, tile, regs)
    k[(H, -(-max_q_len // bm), cu_seqlens_q.shape[0] - 1), 32 * warps, nb.stream()](
        nb.as_numba(q16), *_cache_args(k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens), float32(scale),
        nb.as_numba(out.view(-1).view(torch.int32)))
    return out.to(q.dtype)


def _launch_fp32(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale, max_q_len, tile, regs):
    nblk, bs, hkv, d = k_cache.shape
    total_q, H, _ = q.shape
    out32 = torch.empty(total_q, H, d, dtype=torch.float32, device=q.device)   # [total_q, H, D]
    if total_q == 0 or max_q_len == 0:
        return out32.to(q.dtype)
    threads, bm = tile[0], tile[1]
    k = prefill_kernel(validate.kind(k_cache), d, H // hkv, bs, tile, regs)
    k[(H, -(-max_q_len // bm), cu_seqlens_q.shape[0] - 1), threads, nb.stream()](
        nb.as_numba(_aligned(q.float())), *_cache_args(k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens),
        float32(scale), nb.as_numba(out32))
    return out32.to(q.dtype)
