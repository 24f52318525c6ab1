"""rope_write_kv: one kernel from the fused QKV projection's output to the attention kernels'
inputs: q and k rotated (RoPE), q written out for the attention kernel, k and v stored at their
slots of the paged cache.

In torch the same work is the rotation (four kernels), a copy of q into a contiguous tensor and
the cache write: six launches per layer, ~100 per decode step of a 16-layer model, each a few
microseconds of a step that is short of bandwidth, not of arithmetic.

Layout: each thread owns two neighbouring dims of each half of one head's row (dims 2j, 2j+1
and 2j + D/2, 2j + D/2 + 1: the pairs RoPE rotates together), read and written as 32-bit words;
one block row of threads per token. The rotation is in fp32, rounded to the 16-bit dtype once
(as ``pdlab.engine.model.rope`` does).
"""

from __future__ import annotations

import functools

from . import _memory as mem
from .validate import kind as _kind
from ._numba import SIM, as_numba, cuda, kernel, stream

THREADS = 128


@functools.lru_cache(maxsize=None)
def _rope_write_kernel(kind: str, num_heads: int, num_kv_heads: int, head_dim: int):
    H, HKV, D = num_heads, num_kv_heads, head_dim
    Q4 = D // 4                       # threads per head: two words of each half
    unpack2, pack1 = mem.unpack2(kind), mem.pack1(kind)
    sig = None if SIM else ("void(int32[:, :], float32[:, ::1], float32[:, ::1], int64[::1], "
                            "int32[:, ::1], int32[:, ::1], int32[:, ::1])")

    @kernel(sig=sig)
    def rope_write_kernel(qkv, cos, sin, slots, q_out, k_cache, v_cache):
        # qkv [T, (H + 2 Hkv) D / 2] int32 words of (q | k | v) rows; cos, sin [T, D] (sin
        # negated on the first half); slots [T] (-1: padding, nothing stored); q_out [T, H*D/2] words;
        # k_cache, v_cache [num_slots, Hkv*D/2] words
        t = cuda.blockIdx.x
        g = cuda.blockIdx.y * cuda.blockDim.x + cuda.threadIdx.x
        head, j = g // Q4, g % Q4
        if head >= H + 2 * HKV:
            return
        w1 = head * (D // 2) + j              # word of dims 2j, 2j+1
        w2 = w1 + D // 4                      # word of dims 2j + D/2, 2j + D/2 + 1
        slot = slots[t]
        if head >= H + HKV:                   # v: stored as it is
            if slot >= 0:
                o = (head - H - HKV) * (D // 2) + j
                v_cache[slot, o] = qkv[t, w1]
                v_cache[slot, o + D // 4] = qkv[t, w2]
            return
        a0, a1 = unpack2(qkv[t, w1])          # x1 at dims 2j, 2j+1
        b0, b1 = unpack2(qkv[t, w2])          # x2 at dims 2j + D/2, +1
        d = 2 * j
        c0, c1 = cos[t, d], cos[t, d + 1]
        s0, s1 = sin[t, d + D // 2], sin[t, d + 1 + D // 2]
        lo = (int(pack1(a0 * c0 - b0 * s0)) & 0xFFFF) | (int(pack1(a1 * c1 - b1 * s1)) << 16)
        hi = (int(pack1(b0 * c0 + a0 * s0)) & 0xFFFF) | (int(pack1(b1 * c1 + a1 * s1)) << 16)
        if head < H:
            q_out[t, w1] = lo
            q_out[t, w2] = hi
        elif slot >= 0:
            o = (head - H) * (D // 2) + j
            k_cache[slot, o] = lo
            k_cache[slot, o + D // 4] = hi

    return rope_write_kernel


def rope_write_kv(qkv, cos, sin, k_cache, v_cache, slot_mapping, num_heads: int):
    """qkv [T, (H + 2 Hkv) D] (rows may be strided), cos/sin [T, 1, D] fp32 (``rope_cos_sin``'s)
    -> q [T, H, D] rotated; k rotated and v stored at ``slot_mapping`` (-1 skips) of k_cache,
    v_cache [num_blocks, block_size, Hkv, D]. qkv and the caches share one 16-bit dtype."""
    import torch

    nb, bs, hkv, d = k_cache.shape
    T = qkv.shape[0]
    if qkv.dtype != k_cache.dtype or qkv.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"rope_write_kv: qkv dtype {qkv.dtype} must be the cache's 16-bit dtype {k_cache.dtype}")
    if qkv.shape[1] != (num_heads + 2 * hkv) * d or qkv.stride(1) != 1:
        raise ValueError(f"rope_write_kv: qkv shape {tuple(qkv.shape)} is not [T, ({num_heads} + 2 x {hkv}) x {d}]")
    q = torch.empty(T, num_heads, d, dtype=qkv.dtype, device=qkv.device)      # [T, H, D]
    if T == 0:
        return q
    if SIM or qkv.stride(0) % 2 or qkv.storage_offset() % 2:   # the simulator takes dense arrays only
        qkv = qkv.contiguous()
    words = qkv.view(torch.int16).view(torch.int32)                            # [T, (H + 2 Hkv) D / 2]
    kc = k_cache.view(torch.int16).view(nb * bs, hkv * d).view(torch.int32)    # [num_slots, Hkv D / 2]
    vc = v_cache.view(torch.int16).view(nb * bs, hkv * d).view(torch.int32)
    c2, s2 = cos.reshape(T, d), sin.reshape(T, d)
    heads = num_heads + 2 * hkv
    grid = (T, -(-heads * (d // 4) // THREADS))
    _rope_write_kernel(_kind(qkv), num_heads, hkv, d)[grid, THREADS, stream()](
        as_numba(words), as_numba(c2.contiguous()), as_numba(s2.contiguous()),
        as_numba(slot_mapping.to(torch.int64).contiguous()), as_numba(q.view(T, -1).view(torch.int16).view(torch.int32)),
        as_numba(kc, persistent=True), as_numba(vc, persistent=True))
    return q

