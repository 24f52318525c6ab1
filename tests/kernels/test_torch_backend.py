"""The torch backend (paged gather + SDPA) against the reference: same cases, plus random
shapes from hypothesis (cheap: no simulator involved)."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

from pdlab.kernels import get_backend, reference as ref
from pdlab.kernels.paged import make_case

tb = get_backend("torch")
TOL = {torch.float16: dict(atol=3e-3, rtol=3e-3), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}


@st.composite
def shapes(draw):
    n = draw(st.integers(1, 4))
    seq_lens = draw(st.lists(st.integers(1, 70), min_size=n, max_size=n))
    q_lens = [draw(st.integers(1, L)) for L in seq_lens]
    return dict(seq_lens=seq_lens, q_lens=q_lens, num_kv_heads=draw(st.sampled_from([1, 2])),
                group=draw(st.sampled_from([1, 4, 8])), head_dim=draw(st.sampled_from([64, 80, 128])),
                block_size=draw(st.sampled_from([16, 32])),
                dtype=draw(st.sampled_from([torch.float16, torch.bfloat16])), seed=draw(st.integers(0, 99)))


@settings(max_examples=25, deadline=None)
@given(shapes())
def test_torch_backend_matches_reference(kw):
    c = make_case(**kw)
    out = tb.prefill_attention(c.q_prefill, c.k_cache, c.v_cache, c.block_tables, c.cu_seqlens_q,
                               c.seq_lens, c.scale)
    torch.testing.assert_close(out.float(), ref.prefill(c.q_prefill, c.ks, c.vs, c.cu_seqlens_q, c.scale),
                               **TOL[kw["dtype"]])
    out = tb.decode_attention(c.q_decode, c.k_cache, c.v_cache, c.block_tables, c.seq_lens, c.scale)
    assert out.dtype == kw["dtype"]
    torch.testing.assert_close(out.float(), ref.decode(c.q_decode, c.ks, c.vs, c.scale), **TOL[kw["dtype"]])


def test_torch_write_kv():
    k_cache = torch.zeros(3, 16, 2, 64, dtype=torch.bfloat16)
    v_cache = torch.zeros_like(k_cache)
    k, v = torch.randn(4, 2, 64).bfloat16(), torch.randn(4, 2, 64).bfloat16()
    slots = torch.tensor([0, 47, -1, 20])
    exp_k, exp_v = ref.write_kv(k, v, k_cache, v_cache, slots)
    tb.write_kv(k, v, k_cache, v_cache, slots)
    assert torch.equal(k_cache, exp_k) and torch.equal(v_cache, exp_v)


def test_chunked_equals_whole_prompt():
    """Prefilling a prompt in two chunks gives the rows a one-shot prefill gives."""
    c = make_case([30], [30], 2, 4, 64, 16, torch.float16, seed=5)
    whole = tb.prefill_attention(c.q_prefill, c.k_cache, c.v_cache, c.block_tables, c.cu_seqlens_q,
                                 c.seq_lens, c.scale)
    first = tb.prefill_attention(c.q_prefill[:12], c.k_cache, c.v_cache, c.block_tables,
                                 torch.tensor([0, 12], dtype=torch.int32), torch.tensor([12], dtype=torch.int32), c.scale)
    second = tb.prefill_attention(c.q_prefill[12:], c.k_cache, c.v_cache, c.block_tables,
                                  torch.tensor([0, 18], dtype=torch.int32), c.seq_lens, c.scale)
    torch.testing.assert_close(torch.cat([first, second]), whole)


def test_online_softmax_reference_is_exact():
    q, k, v = torch.randn(64), torch.randn(50, 64), torch.randn(50, 64)
    dense = ref.attention(q[None, None], k[:, None], v[:, None], 0.125)[0, 0]
    for tile in (1, 7, 16, 64):
        torch.testing.assert_close(ref.online_softmax_attention(q, k, v, 0.125, tile), dense)


@pytest.mark.parametrize("name", ["torch", "numba"])
def test_get_backend_interface(name):
    kb = get_backend(name)
    for fn in ("write_kv", "prefill_attention", "decode_attention"):
        assert callable(getattr(kb, fn))
    assert kb.name == name


def test_unknown_backend():
    with pytest.raises(ValueError, match="name"):
        get_backend("triton")
