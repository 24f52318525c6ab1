"""Paged decode attention, host side: validation, the FlashDecoding split plan and the launch
of the kernel in ``decode_kernel.py`` (what the kernel does, and why, is told there).

    out = decode_attention(q, k_cache, v_cache, block_tables, seq_lens, scale)

The split count is chosen so that every block runs in one wave (``blocks_per_sm`` from the
compiled kernel's registers): a second, partial wave would leave most SMs idle while it runs.
Measurements and what was tried: bench/KERNEL-NOTES.md.
"""

from __future__ import annotations

import torch

from . import _numba as nb
from . import validate
from ._numba import SIM, float32
from .decode_kernel import (MAX_REGISTERS, THREADS, UNROLL, VEC, decode_kernel, dims_per_lane,  # noqa: F401
                            ring_slots)   # (re-exported: tests and benchmarks reach them here)

HEAD_DIMS = validate.NUMBA_HEAD_DIMS
MIN_TOKENS_PER_SPLIT = 256
MAX_SPLITS = 128    # beyond this, more splits only add partials to merge
# resident blocks per SM when the kernel's own usage is unknown; the simulator has no SMs, and
# 16 keeps its automatic split counts above one so the tests exercise the merge
BLOCKS_PER_SM = 16 if SIM else 2
# rescale the output only when the running max grows (True), or every step (False). Every step
# measured 3-5% faster on the H200: the branch-free loop schedules its loads better than the
# saved multiplies are worth (bench/KERNEL-NOTES.md)
LAZY_RESCALE = False


#: "wide" (16-byte loads) unless building them failed on this machine, then "scalar"
LOAD_PATH = "wide"


VARIANT_OPTIONS = ("unroll", "max_registers", "lane_dims", "ring", "merge_round", "evict_first")


def _get_kernel(kind, d, group, bs, qkind="f32", unroll=None, max_registers=MAX_REGISTERS, lane_dims=None,
                ring=None, merge_round=None, evict_first=True):
    global LOAD_PATH
    unroll = unroll or UNROLL
    if ring is None and not nb.has_cp_async():
        ring = 0                 # before sm_80 (a T4, say): stage K/V through registers instead
    if LOAD_PATH == "wide":
        try:
            k = decode_kernel(kind, d, group, bs, True, unroll, qkind, LAZY_RESCALE, max_registers, lane_dims, ring,
                              merge_round, evict_first)
            if not SIM:
                for compiled in k.overloads.values():
                    compiled.bind()   # assemble and load now, so a PTX error surfaces here
            return k
        except Exception as e:  # an NVVM/driver that rejects the inline PTX: keep working, slower
            import warnings

            warnings.warn(f"16-byte loads and cp.async unavailable ({type(e).__name__}: {e}); "
                          "using 2-byte loads into registers")
            LOAD_PATH = "scalar"
    return decode_kernel(kind, d, group, bs, False, unroll, qkind, LAZY_RESCALE, max_registers, lane_dims, 0,
                         merge_round)


def choose_splits(num_seqs: int, num_kv_heads: int, max_context: int, blocks_per_sm: int = None) -> int:
    """FlashDecoding split count: as many splits as fit in *one wave* of blocks (``blocks_per_sm``
    resident blocks on each SM, set by the kernel's registers), but no split shorter than
    MIN_TOKENS_PER_SPLIT tokens (each split costs a partial write and a share of the merge).
    Rounding up instead (say 3 splits of 16 x 8 blocks = 384 > 264 slots) starts a second wave
    that runs on a few SMs while the rest idle. No split once the batch alone fills the slots."""
    blocks = max(1, num_seqs * num_kv_heads)
    slots = (blocks_per_sm or BLOCKS_PER_SM) * nb.num_sms()
    return max(1, min(slots // blocks, -(-max_context // MIN_TOKENS_PER_SPLIT), MAX_SPLITS))


def tokens_per_step(head_dim: int, group: int, unroll=None, lane_dims=None, **_) -> int:
    """Tokens a block consumes per loop iteration: its token rows times the unroll."""
    return THREADS // (head_dim // (lane_dims or dims_per_lane(group))) * (unroll or UNROLL)


def split_plan(max_context: int, num_splits: int, head_dim: int, group: int = 4, **variant):
    """(splits, steps) for ``num_splits`` requested: the context's ``steps`` block steps are dealt
    out as evenly as whole steps allow (split i starts at step i * steps // splits), so that every
    split starts on a row group and the split count is exactly the one asked for (up to
    MAX_SPLITS, and one step per split at least): a wave of blocks fills every slot."""
    steps = -(-max_context // tokens_per_step(head_dim, group, **variant))
    return max(1, min(num_splits, MAX_SPLITS, steps)), steps


def _check_variant(variant):
    bad = set(variant) - set(VARIANT_OPTIONS)
    if bad:
        raise ValueError(f"decode kernel variant: unknown option(s) {sorted(bad)} "
                         f"(known: {', '.join(VARIANT_OPTIONS)})")


def _plan(q, k_cache, block_tables, num_splits=None, **variant):
    """(kernel, q's kind, split count) for these shapes, from the shapes alone (no host sync):
    ``num_splits``, or one wave of the kernel's resident blocks."""
    nblk, bs, hkv, d = k_cache.shape
    qkind = "f32" if q.dtype == torch.float32 else validate.kind(q)
    k = _get_kernel(validate.kind(k_cache), d, q.shape[1] // hkv, bs, qkind, **variant)
    splits = num_splits or choose_splits(q.shape[0], hkv, block_tables.shape[1] * bs, nb.blocks_per_sm(k, THREADS))
    return k, qkind, splits


def auto_splits(q, k_cache, block_tables, **variant) -> int:
    """The split count ``decode_attention`` picks for these shapes (no host sync): one wave of
    the kernel's resident blocks."""
    _check_variant(variant)
    return _plan(q, k_cache, block_tables, **variant)[2]


def decode_attention(q, k_cache, v_cache, block_tables, seq_lens, scale, num_splits=None, check=True,
                     **variant):
    """q [S, H, D] -> out [S, H, D] (q's dtype). ``num_splits`` fixes the FlashDecoding split
    count (default: ``auto_splits``, from the shapes alone, no host sync). ``check=False`` skips
    argument validation (the CUDA-graph path validates once before capture). ``variant``
    options (``VARIANT_OPTIONS``: ``unroll``, ``max_registers``, ``lane_dims``, ``ring``,
    ``merge_round``, ``evict_first``) pick a kernel variant (benchmarks)."""
    _check_variant(variant)
    if check:
        validate.check_decode(q, k_cache, v_cache, block_tables, seq_lens, scale)
    nblk, bs, hkv, d = k_cache.shape
    S, H, _ = q.shape
    G = H // hkv
    validate.check_supported(d, G, "decode")
    out = torch.empty(S, H, d, dtype=q.dtype, device=q.device)   # [S, H, D], written by a kernel
    if S == 0:
        return out
    k, qkind, splits = _plan(q, k_cache, block_tables, num_splits, **variant)
    max_ctx = block_tables.shape[1] * bs          # upper bound on any seq_len, known without a sync
    splits, steps = split_plan(max_ctx, splits, d, G, **variant)
    if splits == 1:                                # the kernel writes `out` itself: no partials
        o_part = torch.empty(4, dtype=torch.float32, device=q.device)
        lse = torch.empty(4, dtype=torch.float32, device=q.device)
    else:
        o_part = torch.empty(S * H * splits * d, dtype=torch.float32, device=q.device)   # [S, H, P, D]
        lse = torch.empty(S * H * splits, dtype=torch.float32, device=q.device)       # [S, H, P]
    # q goes in as it is (no conversion kernel) and out comes back in q's dtype: fp32, or
    # fp16/bf16 as int16 bits (q read 16 bytes at a time)
    qf, of = q.contiguous().view(-1), out.view(-1)
    if qkind != "f32":
        qf, of = qf.view(torch.int16), of.view(torch.int16)
        if qf.data_ptr() % 16:                    # an odd view: 16-byte loads need alignment
            qf = qf.clone()
    st = nb.stream()
    k[(hkv, S, splits), THREADS, st](
        nb.as_numba(qf), nb.as_numba(k_cache.view(torch.int16).view(-1), persistent=True),
        nb.as_numba(v_cache.view(torch.int16).view(-1), persistent=True), nb.as_numba(block_tables),
        nb.as_numba(seq_lens), float32(scale), steps, nb.as_numba(o_part), nb.as_numba(lse),
        nb.as_numba(done_counters(S * hkv, q.device), persistent=True), nb.as_numba(of))
    return out


_done: dict = {}


def done_counters(n: int, device) -> torch.Tensor:
    """The merge step's per-(sequence, KV head) arrival counters: one zeroed int32 buffer per
    device, kept for the process (the kernel leaves it zeroed again), grown when a larger batch
    comes. Allocated on the first, eager call, so CUDA-graph capture finds it ready."""
    buf = _done.get(str(device))
    if buf is None or buf.numel() < n:
        buf = torch.zeros(max(n, 4096), dtype=torch.int32, device=device)
        _done[str(device)] = buf
    return buf
