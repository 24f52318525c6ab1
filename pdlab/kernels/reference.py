"""Plain, non-paged attention in torch: the ground truth the kernels are tested against.

Everything here is written for clarity, in fp32, one sequence at a time. Shapes:
  q     [q_len, num_heads, head_dim]
  k, v  [kv_len, num_kv_heads, head_dim]   (num_heads = group * num_kv_heads, GQA)
Query i of a chunk sits at position kv_len - q_len + i and sees keys 0..that position (causal).
"""

from __future__ import annotations

import torch


def attention(q, k, v, scale: float, causal: bool = True):
    """Softmax(q k^T * scale) v over dense K/V with a causal offset; returns fp32 [q_len, H, D]."""
    q_len, h, d = q.shape
    kv_len, hkv, _ = k.shape
    group = h // hkv
    qf = q.float().transpose(0, 1)                              # [H, q_len, D]
    kf = k.float().repeat_interleave(group, dim=1).transpose(0, 1)  # [H, kv_len, D]
    vf = v.float().repeat_interleave(group, dim=1).transpose(0, 1)  # [H, kv_len, D]
    scores = qf @ kf.transpose(1, 2) * scale                    # [H, q_len, kv_len]
    if causal:
        pos_q = torch.arange(q_len) + (kv_len - q_len)          # absolute position of each query
        mask = torch.arange(kv_len)[None, :] > pos_q[:, None]   # [q_len, kv_len] True = hidden
        scores = scores.masked_fill(mask.to(scores.device), float("-inf"))
    return (scores.softmax(-1) @ vf).transpose(0, 1)            # [q_len, H, D]


def write_kv(k, v, k_cache, v_cache, slot_mapping):
    """Return copies of the caches with token t's K/V stored at slot slot_mapping[t] (-1 skips)."""
    kc, vc = k_cache.clone(), v_cache.clone()
    nb, bs, hkv, d = kc.shape
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    kc.view(nb * bs, hkv, d)[slots] = k[keep]
    vc.view(nb * bs, hkv, d)[slots] = v[keep]
    return kc, vc


def prefill(q, ks, vs, cu_seqlens_q, scale: float):
    """Ragged batch: q [total_q, H, D]; ks[s], vs[s] dense [seq_len_s, Hkv, D] (whole context)."""
    out = torch.empty(q.shape, dtype=torch.float32)
    cu = cu_seqlens_q.tolist()
    for s in range(len(cu) - 1):
        out[cu[s]:cu[s + 1]] = attention(q[cu[s]:cu[s + 1]].cpu(), ks[s].cpu(), vs[s].cpu(), scale)
    return out


def decode(q, ks, vs, scale: float):
    """One query per sequence: q [num_seqs, H, D]; ks[s], vs[s] dense [seq_len_s, Hkv, D]."""
    return torch.stack([attention(q[s:s + 1].cpu(), ks[s].cpu(), vs[s].cpu(), scale)[0] for s in range(q.shape[0])])


def gather(cache, block_table, length: int):
    """Dense [length, Hkv, D] copy of one sequence's paged K (or V): the inverse of paging."""
    nb, bs, hkv, d = cache.shape
    pos = torch.arange(length, device=cache.device)
    slots = block_table.to(cache.device).long()[pos // bs] * bs + pos % bs
    return cache.view(nb * bs, hkv, d)[slots]


def online_softmax_attention(q, k, v, scale: float, tile: int = 16):
    """Attention for one query row q [D] over k, v [L, D], reading K/V a tile at a time and
    keeping only a running max m, a running sum l and an unnormalised output acc: the
    FlashAttention/FlashDecoding recurrence. Equal to softmax(q k^T * scale) v."""
    m = torch.tensor(float("-inf"))
    l = torch.tensor(0.0)
    acc = torch.zeros(q.shape[-1])
    for t0 in range(0, k.shape[0], tile):
        s = (k[t0:t0 + tile].float() @ q.float()) * scale   # [tile] scores of this tile
        m_new = torch.maximum(m, s.max())
        alpha = torch.exp(m - m_new)                        # rescales everything seen so far
        p = torch.exp(s - m_new)                            # [tile]
        l = l * alpha + p.sum()
        acc = acc * alpha + p @ v[t0:t0 + tile].float()
        m = m_new
    return acc / l
