"""The torch backend: gather the paged KV into dense tensors, then one
``torch.nn.functional.scaled_dot_product_attention`` call. Fast on a GPU (SDPA picks a fused
kernel), correct everywhere, and the CPU fallback of the engine. Same signatures as the Numba
backend; output dtype = q's dtype."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import validate

name = "torch"


def write_kv(k, v, k_cache, v_cache, slot_mapping, check=True, padding=True):
    """Store k, v [num_tokens, Hkv, D] at their slots of the paged caches (slot -1 skips).
    ``check=False`` skips argument validation (checked once per step by the caller);
    ``padding=False`` promises there is no -1 slot, so no mask is built (a boolean mask is a
    host sync: it must count the kept rows)."""
    if check:
        validate.check_write_kv(k, v, k_cache, v_cache, slot_mapping)
    nb, bs, hkv, d = k_cache.shape
    if not padding:
        slots = slot_mapping.long()
        k_cache.view(nb * bs, hkv, d)[slots] = k
        v_cache.view(nb * bs, hkv, d)[slots] = v
        return
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    k_cache.view(nb * bs, hkv, d)[slots] = k[keep]
    v_cache.view(nb * bs, hkv, d)[slots] = v[keep]


def _sdpa(q, k, v, mask, scale):
    """q [B, H, Lq, D], k/v [B, Hkv, Lk, D], mask [B, 1, Lq, Lk] (True = attend)."""
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    if q.device.type == "cpu":  # CPU half-precision SDPA is slow or missing: compute in fp32
        q, k, v = q.float(), k.float(), v.float()
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def _gather(cache, block_tables, max_len):
    """[num_seqs, max_len, Hkv, D]: positions 0..max_len-1 of every sequence (padding reads block
    ids that are masked out later; clamped so padded table entries stay in range)."""
    nb, bs, hkv, d = cache.shape
    pos = torch.arange(max_len, device=cache.device)
    blocks = block_tables[:, (pos // bs).clamp(max=block_tables.shape[1] - 1)].long()  # [S, max_len]
    slots = (blocks.clamp(0, nb - 1) * bs + pos % bs)
    return cache.view(nb * bs, hkv, d)[slots]


def prefill_attention(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale,
                      max_q_len=None, check=True, cu_seqlens_host=None, seq_lens_host=None):
    """Ragged query chunks q [total_q, H, D] against their paged context (causal, chunk-aware).
    ``check=False`` skips argument validation; ``cu_seqlens_host``/``seq_lens_host`` (Python
    lists of the same values) spare reading them back from the device (a host sync per call).
    ``max_q_len`` is accepted for the Numba backend's signature."""
    if check:
        validate.check_prefill(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale)
    out = torch.empty_like(q)
    cu = list(cu_seqlens_host) if cu_seqlens_host is not None else cu_seqlens_q.tolist()
    lens = list(seq_lens_host) if seq_lens_host is not None else seq_lens.tolist()
    for s in range(len(lens)):
        q_len, kv_len = cu[s + 1] - cu[s], lens[s]
        if q_len == 0:
            continue
        k = _gather(k_cache, block_tables[s:s + 1], kv_len).transpose(1, 2)  # [1, Hkv, kv_len, D]
        v = _gather(v_cache, block_tables[s:s + 1], kv_len).transpose(1, 2)
        pos_q = torch.arange(q_len, device=q.device) + (kv_len - q_len)
        mask = torch.arange(kv_len, device=q.device)[None, :] <= pos_q[:, None]  # [q_len, kv_len]
        qs = q[cu[s]:cu[s + 1]].transpose(0, 1)[None]                          # [1, H, q_len, D]
        o = _sdpa(qs.to(k.dtype), k, v, mask[None, None], scale)
        out[cu[s]:cu[s + 1]] = o[0].transpose(0, 1).to(q.dtype)
    return out


def decode_attention(q, k_cache, v_cache, block_tables, seq_lens, scale, max_seq_len=None, check=True):
    """One query per sequence q [num_seqs, H, D] over its paged KV. Pass ``max_seq_len`` to
    avoid reading seq_lens back to the host; ``check=False`` skips argument validation."""
    if check:
        validate.check_decode(q, k_cache, v_cache, block_tables, seq_lens, scale)
    if q.shape[0] == 0:
        return torch.empty_like(q)
    max_len = int(seq_lens.max()) if max_seq_len is None else max_seq_len
    k = _gather(k_cache, block_tables, max_len).transpose(1, 2)  # [S, Hkv, max_len, D]
    v = _gather(v_cache, block_tables, max_len).transpose(1, 2)
    mask = torch.arange(max_len, device=q.device)[None, :] < seq_lens[:, None]  # [S, max_len]
    o = _sdpa(q[:, :, None, :].to(k.dtype), k, v, mask[:, None, None, :], scale)  # [S, H, 1, D]
    return o[:, :, 0, :].to(q.dtype)
