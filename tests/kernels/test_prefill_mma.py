"""The tensor-core prefill kernel against the torch reference, on the CUDA simulator (its
ldmatrix / mma / shuffle instructions emulated per warp, ``_mma.py``) or on a GPU. Shapes are
small (the simulator runs one OS thread per CUDA thread, one barrier per warp instruction), and
each case mixes features: GQA, head dims 64/128, fp16/bf16, pages of 16/32 and of an odd size
(one block-table lookup per row instead of per row group), chunks after cached context, ragged
batches, several key tiles, several warps and two m-tiles per warp."""

import pytest
import torch

from pdlab.kernels import get_backend, reference as ref
from pdlab.kernels import prefill_attention as pa
from pdlab.kernels.paged import make_case

nbk = get_backend("numba")
DEV = "cuda" if torch.cuda.is_available() else "cpu"

# (seq_lens, q_lens, num_kv_heads, group, head_dim, block_size, dtype, tile)
CASES = {
    "d64-f16-g2-b16-ragged-chunk": ([50, 16], [33, 2], 2, 2, 64, 16, torch.float16, None),
    "d128-bf16-g4-b32-chunk": ([40, 17], [9, 17], 1, 4, 128, 32, torch.bfloat16, None),
    "d64-bf16-4warps-3tiles": ([70], [70], 1, 1, 64, 16, torch.bfloat16, (4, 1, 16)),
    "d64-f16-2mtiles-odd-pages": ([45, 7], [20, 7], 1, 2, 64, 6, torch.float16, (1, 2, 16)),
}


def tol(dtype):
    # inputs, P and the output are rounded to 16 bits: compare at that precision
    return dict(atol=2e-2, rtol=2e-2) if dtype == torch.bfloat16 else dict(atol=3e-3, rtol=3e-3)


@pytest.mark.parametrize("name", list(CASES))
def test_mma_prefill_matches_reference(name):
    seq_lens, q_lens, hkv, group, d, bs, dtype, tile = CASES[name]
    c = make_case(seq_lens, q_lens, hkv, group, d, bs, dtype, device=DEV, seed=21)
    out = nbk.prefill_attention(c.q_prefill, c.k_cache, c.v_cache, c.block_tables, c.cu_seqlens_q,
                                c.seq_lens, c.scale, kernel="mma", tile=tile)
    assert out.dtype == dtype and out.shape == c.q_prefill.shape
    expected = ref.prefill(c.q_prefill, c.ks, c.vs, c.cu_seqlens_q.cpu(), c.scale)
    torch.testing.assert_close(out.float().cpu(), expected, **tol(dtype))


def test_mma_prefill_fp32_query_and_unwritten_slots():
    """q in fp32 (rounded to the cache dtype, as the torch backend does) and a cache whose unused
    slots hold NaN: rows past the context are zero-filled, never read."""
    c = make_case([23], [23], 1, 1, 64, 16, torch.float16, device=DEV, seed=22)
    used = torch.zeros(c.k_cache.shape[0] * 16, dtype=torch.bool)
    for p in range(23):
        used[int(c.block_tables[0, p // 16]) * 16 + p % 16] = True
    kc, vc = c.k_cache.clone(), c.v_cache.clone()
    kc.view(-1, 1, 64)[~used.to(kc.device)] = float("nan")
    vc.view(-1, 1, 64)[~used.to(vc.device)] = float("nan")
    q = c.q_prefill.float()
    out = nbk.prefill_attention(q, kc, vc, c.block_tables, c.cu_seqlens_q, c.seq_lens, c.scale, kernel="mma")
    assert out.dtype == torch.float32
    expected = ref.prefill(q.half(), c.ks, c.vs, c.cu_seqlens_q.cpu(), c.scale)
    torch.testing.assert_close(out.cpu(), expected, **tol(torch.float16))


def test_kernel_choice_and_bad_input():
    c = make_case([5], [5], 1, 1, 64, 16, torch.bfloat16, device=DEV, seed=23)
    args = (c.q_prefill, c.k_cache, c.v_cache, c.block_tables, c.cu_seqlens_q, c.seq_lens, c.scale)
    with pytest.raises(ValueError, match="kernel"):
        nbk.prefill_attention(*args, kernel="wgmma")
    with pytest.raises(ValueError, match="tile"):
        nbk.prefill_attention(*args, kernel="mma", tile=(4, 3, 64))          # 3 m-tiles per warp
    with pytest.raises(ValueError, match="shared memory"):
        nbk.prefill_attention(*args, kernel="mma", tile=(8, 2, 128))         # 64 KB for head dim 64
    bad = make_case([5], [5], 1, 1, 80, 16, torch.bfloat16, device=DEV, seed=23)
    with pytest.raises(ValueError, match="head_dim"):
        nbk.prefill_attention(bad.q_prefill, bad.k_cache, bad.v_cache, bad.block_tables, bad.cu_seqlens_q,
                              bad.seq_lens, bad.scale, kernel="mma")
    assert pa.choose_kernel("fp32") == "fp32" and pa.choose_kernel("mma") == "mma"


def test_auto_takes_tensor_cores_from_sm80(monkeypatch):
    """On a GPU "auto" means the tensor-core kernel from compute capability 8.0, else fp32."""
    monkeypatch.setattr(pa, "SIM", False)
    monkeypatch.setattr(pa, "has_mma", lambda: True)
    assert pa.choose_kernel("auto") == "mma"
    monkeypatch.setattr(pa, "has_mma", lambda: False)
    assert pa.choose_kernel("auto") == "fp32"
