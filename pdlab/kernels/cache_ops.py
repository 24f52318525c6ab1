"""write_kv: scatter the new tokens' K and V into their slots of the paged cache.

One thread per (token, element of its [Hkv * D] row): consecutive threads write consecutive
bytes, so the stores coalesce. The kernel copies raw 16-bit values (fp16 and bf16 alike travel
as int16), so one compiled kernel serves both dtypes.
"""

from __future__ import annotations

import functools

from . import validate
from ._numba import SIM, as_numba, cuda, kernel, stream

THREADS = 128


@functools.lru_cache(maxsize=None)
def _write_kv_kernel():
    # k and v may be row-strided views (slices of the fused QKV projection's output): any layout
    sig = None if SIM else "void(int16[:, :], int16[:, :], int16[:, ::1], int16[:, ::1], int64[::1])"

    @kernel(sig=sig)
    def write_kv_kernel(k, v, k_cache, v_cache, slot_mapping):
        # k, v:             [num_tokens, Hkv * D]   16-bit bits of fp16/bf16 (rows may be strided)
        # k_cache, v_cache: [num_slots, Hkv * D]    num_slots = num_blocks * block_size
        # slot_mapping:     [num_tokens]            -1 = padding token, nothing to write
        tok = cuda.blockIdx.x                     # one block row per token (x allows 2**31 tokens)
        slot = slot_mapping[tok]
        if slot < 0:
            return
        row = k.shape[1]
        i = cuda.blockIdx.y * cuda.blockDim.x + cuda.threadIdx.x
        if i < row:
            k_cache[slot, i] = k[tok, i]
            v_cache[slot, i] = v[tok, i]

    return write_kv_kernel


def _rows(x, n, row):
    """x [n, Hkv, D] as [n, Hkv * D] int16 bits without a copy where its rows are dense (a
    slice of a wider projection output is), else a contiguous copy."""
    import torch

    x = x.reshape(n, row)
    if SIM or x.stride(1) != 1:             # the simulator takes dense arrays only
        x = x.contiguous()
    return x.view(torch.int16)


def write_kv(k, v, k_cache, v_cache, slot_mapping, check=True, padding=True):
    """k, v [num_tokens, Hkv, D] -> k_cache, v_cache [num_blocks, block_size, Hkv, D] at slots.
    ``check=False`` skips argument validation (the caller checked the step once, e.g. with
    ``validate.check_step``: no host copy per call). ``padding`` is accepted for the torch
    backend's signature; the kernel skips -1 slots either way."""
    import torch

    if check:
        validate.check_write_kv(k, v, k_cache, v_cache, slot_mapping)
    n = k.shape[0]
    if n == 0:
        return
    nb, bs, hkv, d = k_cache.shape
    row = hkv * d
    k2 = _rows(k, n, row)                                            # [n, Hkv*D] bits
    v2 = _rows(v, n, row)
    kc = k_cache.view(torch.int16).view(nb * bs, row)                # [num_slots, Hkv*D] bits
    vc = v_cache.view(torch.int16).view(nb * bs, row)
    slots = slot_mapping.to(torch.int64).contiguous()
    grid = (n, (row + THREADS - 1) // THREADS)
    _write_kv_kernel()[grid, THREADS, stream()](
        as_numba(k2), as_numba(v2), as_numba(kc, persistent=True), as_numba(vc, persistent=True),
        as_numba(slots))
