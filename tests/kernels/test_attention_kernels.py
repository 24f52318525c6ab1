"""The Numba kernels against the plain torch reference, on small shapes (CUDA simulator on a CPU).

Each case mixes several features so the suite stays fast on the simulator (one OS thread per
CUDA thread): GQA 1/4/8, head dim 64/128, block size 16/32, fp16/bf16, sequences of length 1 and
of lengths that are not a multiple of the block size, chunks with prior context, ragged batches.
"""

import pytest
import torch

from pdlab.kernels import get_backend, reference as ref
from pdlab.kernels.paged import make_case, slots_for

nbk = get_backend("numba")
DEV = "cuda" if torch.cuda.is_available() else "cpu"

# (seq_lens, q_lens, num_kv_heads, group, head_dim, block_size, dtype)
CASES = {
    "g1-d64-b16-f16-len1-ragged": ([1, 37], [1, 20], 2, 1, 64, 16, torch.float16),
    "g4-d128-b32-bf16-chunk": ([40, 17], [9, 17], 1, 4, 128, 32, torch.bfloat16),
    "g8-d64-b32-f16-chunk-len1": ([33, 1], [5, 1], 1, 8, 64, 32, torch.float16),
    "g4-d64-b16-bf16-prior": ([50, 16], [3, 2], 2, 4, 64, 16, torch.bfloat16),
}


def tol(dtype):
    # inputs are rounded to 16 bits and the output is rounded back: compare at that precision
    return dict(atol=2e-2, rtol=2e-2) if dtype == torch.bfloat16 else dict(atol=3e-3, rtol=3e-3)


@pytest.mark.parametrize("name", list(CASES))
def test_decode_matches_reference(name):
    seq_lens, _, hkv, group, d, bs, dtype = CASES[name]
    c = make_case(seq_lens, None, hkv, group, d, bs, dtype, device=DEV, seed=1)
    out = nbk.decode_attention(c.q_decode, c.k_cache, c.v_cache, c.block_tables, c.seq_lens, c.scale)
    assert out.dtype == dtype and out.shape == c.q_decode.shape
    expected = ref.decode(c.q_decode, c.ks, c.vs, c.scale)
    torch.testing.assert_close(out.float().cpu(), expected, **tol(dtype))


def test_decode_split_merge_matches_reference():
    """FlashDecoding: the context cut into 3 splits (one of them empty for the short sequence)."""
    c = make_case([45, 6], None, 1, 4, 64, 16, torch.bfloat16, device=DEV, seed=2)
    out = nbk.decode_attention(c.q_decode, c.k_cache, c.v_cache, c.block_tables, c.seq_lens, c.scale,
                               num_splits=3)
    torch.testing.assert_close(out.float().cpu(), ref.decode(c.q_decode, c.ks, c.vs, c.scale),
                               **tol(torch.bfloat16))


@pytest.mark.parametrize("name", list(CASES))
def test_prefill_matches_reference(name):
    seq_lens, q_lens, hkv, group, d, bs, dtype = CASES[name]
    c = make_case(seq_lens, q_lens, hkv, group, d, bs, dtype, device=DEV, seed=3)
    out = nbk.prefill_attention(c.q_prefill, c.k_cache, c.v_cache, c.block_tables, c.cu_seqlens_q,
                                c.seq_lens, c.scale)
    assert out.dtype == dtype and out.shape == c.q_prefill.shape
    expected = ref.prefill(c.q_prefill, c.ks, c.vs, c.cu_seqlens_q.cpu(), c.scale)
    torch.testing.assert_close(out.float().cpu(), expected, **tol(dtype))


def test_prefill_several_key_tiles():
    """A chunk whose keys span several BN-key tiles: the online softmax rescales across tiles, and
    the first query rows see a fully masked last tile."""
    c = make_case([150], [20], 1, 2, 64, 16, torch.bfloat16, device=DEV, seed=5)
    out = nbk.prefill_attention(c.q_prefill, c.k_cache, c.v_cache, c.block_tables, c.cu_seqlens_q,
                                c.seq_lens, c.scale)
    expected = ref.prefill(c.q_prefill, c.ks, c.vs, c.cu_seqlens_q.cpu(), c.scale)
    torch.testing.assert_close(out.float().cpu(), expected, **tol(torch.bfloat16))


@pytest.mark.parametrize("block_size", [3, 6])
def test_decode_small_odd_pages(block_size):
    """Pages smaller than the kernel's row group and not a power of two: the per-token page
    lookup (not the one-lookup-per-row-group fast path) and clamped loads past the end."""
    c = make_case([29, 7], None, 1, 4, 64, block_size, torch.bfloat16, device=DEV, seed=7)
    out = nbk.decode_attention(c.q_decode, c.k_cache, c.v_cache, c.block_tables, c.seq_lens, c.scale,
                               num_splits=2)
    torch.testing.assert_close(out.float().cpu(), ref.decode(c.q_decode, c.ks, c.vs, c.scale),
                               **tol(torch.bfloat16))


@pytest.mark.parametrize("variant", [dict(ring=0), dict(ring=3), dict(unroll=1, ring=2), dict(lane_dims=8, unroll=3),
                                     dict(merge_round=2), dict(evict_first=False)])
def test_decode_staging_variants(variant):
    """K/V staged through shared-memory rings of several depths (the prologue covering more or
    fewer row groups than a split has, partly filled last steps), the register pipeline, and a
    split merge in rounds of 2 (3 splits: a full round, then one past the last split)."""
    c = make_case([70, 5, 33], None, 1, 4, 64, 16, torch.bfloat16, device=DEV, seed=8)
    for splits in (1, 3):
        out = nbk.decode_attention(c.q_decode, c.k_cache, c.v_cache, c.block_tables, c.seq_lens, c.scale,
                                   num_splits=splits, **variant)
        torch.testing.assert_close(out.float().cpu(), ref.decode(c.q_decode, c.ks, c.vs, c.scale),
                                   **tol(torch.bfloat16), msg=f"{variant} splits={splits}")


def test_decode_uneven_splits_leave_counters_zeroed():
    """Splits of unequal whole-step counts (19 steps of 16 tokens dealt to 2 or 3 splits, one of
    them past the short sequence's end); the arrival counters are left zeroed for the next launch
    (a CUDA graph replays the kernel with the same buffer)."""
    from pdlab.kernels import decode_attention as da

    c = make_case([300, 37], None, 1, 4, 64, 16, torch.bfloat16, device=DEV, seed=11)
    expected = ref.decode(c.q_decode, c.ks, c.vs, c.scale)
    for splits in (2, 3, 2):
        out = nbk.decode_attention(c.q_decode, c.k_cache, c.v_cache, c.block_tables, c.seq_lens, c.scale,
                                   num_splits=splits)
        torch.testing.assert_close(out.float().cpu(), expected, **tol(torch.bfloat16), msg=f"splits={splits}")
        assert not da.done_counters(2, c.q_decode.device).any(), f"counters left set (splits={splits})"


def test_decode_before_sm80_stages_through_registers(monkeypatch):
    """No cp.async before sm_80 (a T4): the default kernel then uses the register pipeline."""
    import inspect

    from pdlab.kernels import _numba as nb, decode_attention as da

    rings, real = [], da.decode_kernel
    params = inspect.signature(real.__wrapped__).bind
    monkeypatch.setattr(nb, "has_cp_async", lambda: False)
    monkeypatch.setattr(da, "decode_kernel", lambda *a: rings.append(params(*a).arguments["ring"]) or real(*a))
    c = make_case([40, 3], None, 1, 4, 64, 16, torch.bfloat16, device=DEV, seed=9)
    out = nbk.decode_attention(c.q_decode, c.k_cache, c.v_cache, c.block_tables, c.seq_lens, c.scale)
    assert rings == [0]
    torch.testing.assert_close(out.float().cpu(), ref.decode(c.q_decode, c.ks, c.vs, c.scale), **tol(torch.bfloat16))


def test_decode_unknown_variant_option():
    c = make_case([5], None, 1, 4, 64, 16, torch.bfloat16, device=DEV, seed=8)
    with pytest.raises(ValueError, match="unknown option"):
        nbk.decode_attention(c.q_decode, c.k_cache, c.v_cache, c.block_tables, c.seq_lens, c.scale, rings=3)


def test_decode_fp32_query():
    """q in fp32 with an fp16 cache: the kernel reads q in its own dtype."""
    c = make_case([30, 9], None, 1, 4, 64, 16, torch.float16, device=DEV, seed=6)
    q = c.q_decode.float()
    out = nbk.decode_attention(q, c.k_cache, c.v_cache, c.block_tables, c.seq_lens, c.scale)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.cpu(), ref.decode(q, c.ks, c.vs, c.scale), **tol(torch.float16))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_write_kv_matches_reference(dtype):
    nblocks, bs, hkv, d = 5, 16, 2, 64
    k_cache = torch.randn(nblocks, bs, hkv, d).to(dtype).to(DEV)
    v_cache = torch.randn(nblocks, bs, hkv, d).to(dtype).to(DEV)
    k = torch.randn(7, hkv, d).to(dtype).to(DEV)
    v = torch.randn(7, hkv, d).to(dtype).to(DEV)
    slots = torch.tensor([3, 17, 79, -1, 0, 40, 41], dtype=torch.int64, device=DEV)  # -1: padding
    exp_k, exp_v = ref.write_kv(k, v, k_cache, v_cache, slots)
    nbk.write_kv(k, v, k_cache, v_cache, slots)
    assert torch.equal(k_cache, exp_k) and torch.equal(v_cache, exp_v)  # bit-exact copy


def test_write_then_attend_roundtrip():
    """The engine's order: write a chunk's K/V with write_kv, then prefill attends to it."""
    c = make_case([21], [21], 1, 4, 64, 16, torch.float16, device=DEV, seed=4)
    k_cache, v_cache = torch.zeros_like(c.k_cache), torch.zeros_like(c.v_cache)
    slots = slots_for(c.block_tables[0].cpu(), torch.arange(21), 16).to(torch.int32).to(DEV)
    nbk.write_kv(c.ks[0].to(DEV), c.vs[0].to(DEV), k_cache, v_cache, slots)
    out = nbk.prefill_attention(c.q_prefill, k_cache, v_cache, c.block_tables, c.cu_seqlens_q,
                                c.seq_lens, c.scale)
    expected = ref.attention(c.q_prefill.cpu(), c.ks[0], c.vs[0], c.scale)
    torch.testing.assert_close(out.float().cpu(), expected, **tol(torch.float16))
