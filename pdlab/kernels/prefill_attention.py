"""Paged, chunk-aware prefill attention, host side: validation and the launch of the kernel in
``prefill_fp32.py`` (what the kernel does, and why, is told there).

One launch serves a ragged batch: sequence s contributes q_len_s query rows (a whole prompt or a
chunk of one) whose K/V, and the K/V of everything before them, are already in the paged cache.
Query i of sequence s sits at position seq_len_s - q_len_s + i and attends to keys 0..position.
Measurements: bench/KERNEL-NOTES.md.
"""

from __future__ import annotations

import torch

from . import _numba as nb
from . import validate
from ._numba import float32
from .prefill_fp32 import BM, BN, MAX_REGISTERS, THREADS, TILE, prefill_kernel  # noqa: F401  (re-exported)

HEAD_DIMS = validate.NUMBA_HEAD_DIMS


def prefill_attention(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale,
                      max_q_len=None, check=True, tile=None, max_registers=MAX_REGISTERS):
    """q [total_q, H, D] -> out [total_q, H, D] (q's dtype). ``max_q_len`` (the longest chunk)
    sizes the grid; it is read from cu_seqlens_q when not given (a host sync). ``tile`` and
    ``max_registers`` override the kernel's tile shape and register cap (benchmarks)."""
    if check:
        _, mq = validate.check_prefill(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale)
        max_q_len = max_q_len if max_q_len is not None else mq
    nblk, bs, hkv, d = k_cache.shape
    total_q, H, _ = q.shape
    validate.check_supported(d, H // hkv, "prefill")
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
    q32 = q.float().contiguous().view(-1)
    if q32.data_ptr() % 16:                   # an odd view: the kernel reads q 16 bytes at a time
        q32 = q32.clone()
    k = prefill_kernel(validate.kind(k_cache), d, H // hkv, bs, tile, max_registers)
    k[(H, tiles, num_seqs), threads, nb.stream()](
        nb.as_numba(q32),
        nb.as_numba(k_cache.view(torch.int16).view(-1), persistent=True),
        nb.as_numba(v_cache.view(torch.int16).view(-1), persistent=True), nb.as_numba(block_tables),
        nb.as_numba(cu_seqlens_q), nb.as_numba(seq_lens), float32(scale), nb.as_numba(out32))
    return out32.to(q.dtype)
