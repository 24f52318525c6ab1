"""Bad input raises a ValueError naming the argument, before any launch (on a GPU a bad block id
would be an illegal memory access that kills the CUDA context)."""

import pytest
import torch

from pdlab.kernels import get_backend
from pdlab.kernels.paged import make_case


@pytest.fixture(params=["torch", "numba"])
def kb(request):
    return get_backend(request.param)


@pytest.fixture
def case():
    return make_case([20, 5], [4, 5], num_kv_heads=2, group=4, head_dim=64, block_size=16)


def decode(kb, c, **over):
    args = dict(q=c.q_decode, k_cache=c.k_cache, v_cache=c.v_cache, block_tables=c.block_tables,
                seq_lens=c.seq_lens, scale=c.scale)
    args.update(over)
    return kb.decode_attention(**args)


def prefill(kb, c, **over):
    args = dict(q=c.q_prefill, k_cache=c.k_cache, v_cache=c.v_cache, block_tables=c.block_tables,
                cu_seqlens_q=c.cu_seqlens_q, seq_lens=c.seq_lens, scale=c.scale)
    args.update(over)
    return kb.prefill_attention(**args)


def test_decode_bad_inputs(kb, case):
    c = case
    bad = {
        "q": dict(q=c.q_decode[:, :, :32]),                                  # head_dim mismatch
        "v_cache": dict(v_cache=c.v_cache.float()),                          # dtype mismatch
        "k_cache": dict(k_cache=c.k_cache[:, :, :1].contiguous()),           # Hkv mismatch with v
        "block_tables": dict(block_tables=c.block_tables[:, :1].contiguous()),  # too small for 20 tokens
        "seq_lens": dict(seq_lens=c.seq_lens.long()),                        # wrong index dtype
    }
    for arg, over in bad.items():
        with pytest.raises(ValueError, match=arg):
            decode(kb, c, **over)
    with pytest.raises(ValueError, match="block_tables"):
        bt = c.block_tables.clone()
        bt[0, 1] = 999                                                       # block id out of range
        decode(kb, c, block_tables=bt)
    with pytest.raises(ValueError, match="seq_lens"):
        decode(kb, c, seq_lens=torch.tensor([20, 0], dtype=torch.int32))   # empty sequence
    with pytest.raises(ValueError, match="q"):
        decode(kb, c, q=c.q_decode[:, :3].contiguous())                      # 3 heads over 2 KV heads


def test_prefill_bad_inputs(kb, case):
    c = case
    with pytest.raises(ValueError, match="cu_seqlens_q"):
        prefill(kb, c, cu_seqlens_q=torch.tensor([0, 4, 8], dtype=torch.int32))   # does not end at total_q
    with pytest.raises(ValueError, match="seq_lens"):
        prefill(kb, c, seq_lens=torch.tensor([3, 5], dtype=torch.int32))          # chunk longer than context
    with pytest.raises(ValueError, match="seq_lens"):
        prefill(kb, c, seq_lens=torch.tensor([20], dtype=torch.int32))            # one entry for 2 sequences
    with pytest.raises(ValueError, match="scale"):
        prefill(kb, c, scale=torch.tensor(0.1))


def test_write_kv_bad_inputs(kb, case):
    c = case
    k = torch.randn(3, 2, 64).half()
    ok = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="slot_mapping"):
        kb.write_kv(k, k, c.k_cache, c.v_cache, torch.tensor([0, 1, 10_000]))     # slot out of range
    with pytest.raises(ValueError, match="slot_mapping"):
        kb.write_kv(k, k, c.k_cache, c.v_cache, torch.tensor([0, 1]))             # one slot short
    with pytest.raises(ValueError, match="k"):
        kb.write_kv(k.bfloat16(), k.bfloat16(), c.k_cache, c.v_cache, ok)         # dtype differs from cache
    with pytest.raises(ValueError, match="k"):
        kb.write_kv(k[:, :1], k[:, :1], c.k_cache, c.v_cache, ok)                 # wrong Hkv


def test_numba_rejects_unsupported_head_dim():
    c = make_case([5], [5], num_kv_heads=1, group=1, head_dim=80, block_size=16)
    nbk = get_backend("numba")
    with pytest.raises(ValueError, match="head_dim"):
        nbk.decode_attention(c.q_decode, c.k_cache, c.v_cache, c.block_tables, c.seq_lens, c.scale)
    # the torch backend takes any head dim
    get_backend("torch").decode_attention(c.q_decode, c.k_cache, c.v_cache, c.block_tables, c.seq_lens, c.scale)
