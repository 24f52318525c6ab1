"""Build small paged KV caches with known contents: for tests, benchmarks and lab 02.

A ``PagedCase`` holds dense per-sequence K/V (the truth) and the same K/V scattered over the
blocks of a paged cache in a random order (so a kernel that ignores the block table fails)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class PagedCase:
    k_cache: torch.Tensor       # [num_blocks, block_size, Hkv, D]
    v_cache: torch.Tensor       # [num_blocks, block_size, Hkv, D]
    block_tables: torch.Tensor  # [S, max_blocks] int32 (padded with 0)
    seq_lens: torch.Tensor      # [S] int32, whole context including the newest chunk
    cu_seqlens_q: torch.Tensor  # [S+1] int32, offsets of the prefill chunks in q_prefill
    q_prefill: torch.Tensor     # [total_q, H, D]: the last q_lens[s] tokens of each sequence
    q_decode: torch.Tensor      # [S, H, D]: one query per sequence
    ks: list                    # ks[s]: dense [seq_len_s, Hkv, D]
    vs: list
    scale: float


def slots_for(block_table: torch.Tensor, positions: torch.Tensor, block_size: int) -> torch.Tensor:
    """Slot of each token position: block_table[p // block_size] * block_size + p % block_size."""
    return block_table.long()[positions // block_size] * block_size + positions % block_size


def make_case(seq_lens, q_lens=None, num_kv_heads=2, group=1, head_dim=64, block_size=16,
              dtype=torch.float16, device="cpu", seed=0, spare_blocks=2, extra_columns=1) -> PagedCase:
    g = torch.Generator().manual_seed(seed)
    q_lens = list(seq_lens) if q_lens is None else list(q_lens)
    need = [-(-L // block_size) for L in seq_lens]
    num_blocks = sum(need) + spare_blocks
    hkv, d, h = num_kv_heads, head_dim, num_kv_heads * group
    k_cache = torch.zeros(num_blocks, block_size, hkv, d, dtype=dtype)
    v_cache = torch.zeros_like(k_cache)
    perm = torch.randperm(num_blocks, generator=g)           # pages in a scrambled order
    block_tables = torch.zeros(len(seq_lens), max(need) + extra_columns, dtype=torch.int32)
    ks, vs, used = [], [], 0
    for s, L in enumerate(seq_lens):
        block_tables[s, :need[s]] = perm[used:used + need[s]].int()
        used += need[s]
        k = torch.randn(L, hkv, d, generator=g).to(dtype)
        v = torch.randn(L, hkv, d, generator=g).to(dtype)
        slots = slots_for(block_tables[s], torch.arange(L), block_size)
        k_cache.view(-1, hkv, d)[slots] = k
        v_cache.view(-1, hkv, d)[slots] = v
        ks.append(k)
        vs.append(v)
    cu = torch.tensor([0] + list(torch.tensor(q_lens).cumsum(0).tolist()), dtype=torch.int32)
    q_prefill = torch.randn(int(cu[-1]), h, d, generator=g).to(dtype)
    q_decode = torch.randn(len(seq_lens), h, d, generator=g).to(dtype)
    to = lambda t: t.to(device)  # noqa: E731
    return PagedCase(to(k_cache), to(v_cache), to(block_tables),
                     to(torch.tensor(seq_lens, dtype=torch.int32)), to(cu), to(q_prefill), to(q_decode),
                     ks, vs, 1.0 / math.sqrt(d))
