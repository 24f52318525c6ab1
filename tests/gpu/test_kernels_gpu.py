"""The Numba kernels on a real GPU: reference sizes, random shapes, and the CUDA-graph decode
path. Skipped without CUDA (the root conftest and the ``gpu`` marker registered in pyproject)."""

import random

import pytest
import torch

from pdlab.kernels import get_backend, reference as ref
from pdlab.kernels.paged import make_case, slots_for

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TOL = {torch.float16: dict(atol=3e-3, rtol=3e-3), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}


@pytest.fixture(scope="module")
def nbk():
    return get_backend("numba")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_decode_llama_shapes(nbk, dtype):
    lens = [1, 17, 1000, 4096, 2049, 33, 3000, 513]
    c = make_case(lens, None, 8, 4, 128, 16, dtype, device="cuda", seed=10)
    out = nbk.decode_attention(c.q_decode, c.k_cache, c.v_cache, c.block_tables, c.seq_lens, c.scale)
    torch.testing.assert_close(out.float().cpu(), ref.decode(c.q_decode, c.ks, c.vs, c.scale), **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_prefill_llama_shapes(nbk, dtype):
    # a whole 700-token prompt, a 300-token chunk of a 1300-token context, a 1-token prompt
    c = make_case([700, 1300, 1], [700, 300, 1], 8, 4, 128, 16, dtype, device="cuda", seed=11)
    out = nbk.prefill_attention(c.q_prefill, c.k_cache, c.v_cache, c.block_tables, c.cu_seqlens_q,
                                c.seq_lens, c.scale)
    exp = ref.prefill(c.q_prefill, c.ks, c.vs, c.cu_seqlens_q.cpu(), c.scale)
    torch.testing.assert_close(out.float().cpu(), exp, **TOL[dtype])


def test_random_shapes(nbk):
    rng = random.Random(0)
    for trial in range(6):
        n = rng.randint(1, 6)
        seq_lens = [rng.choice([1, rng.randint(1, 64), rng.randint(1, 900)]) for _ in range(n)]
        q_lens = [rng.randint(1, L) for L in seq_lens]
        kw = dict(num_kv_heads=rng.choice([1, 2, 8]), group=rng.choice([1, 4, 8]),
                  head_dim=rng.choice([64, 128]), block_size=rng.choice([16, 32]),
                  dtype=rng.choice([torch.float16, torch.bfloat16]))
        c = make_case(seq_lens, q_lens, device="cuda", seed=trial, **kw)
        msg = f"trial {trial}: {seq_lens} {q_lens} {kw}"
        out = nbk.decode_attention(c.q_decode, c.k_cache, c.v_cache, c.block_tables, c.seq_lens, c.scale,
                                   num_splits=rng.choice([None, 1, 3]))
        torch.testing.assert_close(out.float().cpu(), ref.decode(c.q_decode, c.ks, c.vs, c.scale),
                                   **TOL[kw["dtype"]], msg=msg)
        out = nbk.prefill_attention(c.q_prefill, c.k_cache, c.v_cache, c.block_tables, c.cu_seqlens_q,
                                    c.seq_lens, c.scale)
        torch.testing.assert_close(out.float().cpu(),
                                   ref.prefill(c.q_prefill, c.ks, c.vs, c.cu_seqlens_q.cpu(), c.scale),
                                   **TOL[kw["dtype"]], msg=msg)


@pytest.mark.parametrize("q_dtype", [torch.float32, torch.float16])
def test_decode_q_dtype_differs_from_cache(nbk, q_dtype):
    """q is read in its own dtype by the kernel (fp32, or 16-bit bits), whatever the cache holds."""
    c = make_case([1, 300, 2049], None, 8, 4, 128, 16, torch.bfloat16, device="cuda", seed=15)
    q = c.q_decode.to(q_dtype)
    out = nbk.decode_attention(q, c.k_cache, c.v_cache, c.block_tables, c.seq_lens, c.scale)
    assert out.dtype == q_dtype
    torch.testing.assert_close(out.float().cpu(), ref.decode(q, c.ks, c.vs, c.scale), **TOL[torch.bfloat16])


def test_decode_variants_agree(nbk):
    """The benchmark's variants (rescale every step, unroll, ring depth, register pipeline, 8 dims
    per lane, register caps, more splits, no L2 hint) give the same answer."""
    from pdlab.kernels import decode_attention as da

    c = make_case([5000, 17, 1024], None, 8, 4, 128, 16, torch.bfloat16, device="cuda", seed=16)
    exp = ref.decode(c.q_decode, c.ks, c.vs, c.scale)
    package_lazy = da.LAZY_RESCALE
    try:
        for lazy, opts, splits in [(False, {}, None), (True, dict(unroll=3), 7), (True, {}, 1),
                                   (False, dict(unroll=4), 2), (False, dict(ring=0), None),
                                   (False, dict(ring=0, lane_dims=8, unroll=4), 3), (False, dict(lane_dims=8), None),
                                   (False, dict(unroll=1, max_registers=168), 5), (False, dict(ring=3), 2),
                                   (False, dict(max_registers=168), None), (False, dict(evict_first=False), None)]:
            da.LAZY_RESCALE = lazy
            out = nbk.decode_attention(c.q_decode, c.k_cache, c.v_cache, c.block_tables, c.seq_lens, c.scale,
                                       num_splits=splits, **opts)
            torch.testing.assert_close(out.float().cpu(), exp, **TOL[torch.bfloat16], msg=f"{lazy} {opts}")
    finally:
        da.LAZY_RESCALE = package_lazy


@pytest.mark.parametrize("block_size", [8, 12])
def test_decode_pages_smaller_than_a_row_group(nbk, block_size):
    """head dim 64: 16 token rows per step, more than a page: the per-token page lookup."""
    c = make_case([1, 333, 1200], None, 2, 8, 64, block_size, torch.float16, device="cuda", seed=18)
    for splits in (None, 1, 5):
        out = nbk.decode_attention(c.q_decode, c.k_cache, c.v_cache, c.block_tables, c.seq_lens, c.scale,
                                   num_splits=splits)
        torch.testing.assert_close(out.float().cpu(), ref.decode(c.q_decode, c.ks, c.vs, c.scale),
                                   **TOL[torch.float16])


def test_prefill_tile_variants(nbk):
    """Every tile shape / register cap the benchmark tries is correct (ragged, chunked, GQA 4)."""
    c = make_case([1000, 130], [1000, 70], 8, 4, 128, 16, torch.bfloat16, device="cuda", seed=17)
    exp = ref.prefill(c.q_prefill, c.ks, c.vs, c.cu_seqlens_q.cpu(), c.scale)
    variants = [((128, 64, 64, 32, 32), None), ((128, 64, 64, 32, 32), 168),   # bench/kernels.py's
                ((256, 64, 64, 32, 32), None), ((256, 64, 64, 32, 32), 128), ((128, 32, 64, 32, 32), 128)]
    for tile, regs in variants:
        out = nbk.prefill_attention(c.q_prefill, c.k_cache, c.v_cache, c.block_tables, c.cu_seqlens_q,
                                    c.seq_lens, c.scale, tile=tile, max_registers=regs)
        torch.testing.assert_close(out.float().cpu(), exp, **TOL[torch.bfloat16], msg=f"{tile} {regs}")


def test_write_kv_gpu(nbk):
    c = make_case([100, 7], None, 8, 4, 128, 16, torch.bfloat16, device="cuda", seed=12)
    kc, vc = torch.zeros_like(c.k_cache), torch.zeros_like(c.v_cache)
    for s, L in enumerate([100, 7]):
        slots = slots_for(c.block_tables[s].cpu(), torch.arange(L), 16).cuda()
        nbk.write_kv(c.ks[s].cuda(), c.vs[s].cuda(), kc, vc, slots)
    assert torch.equal(kc, c.k_cache) and torch.equal(vc, c.v_cache)


def test_decode_cuda_graph_replay(nbk):
    from pdlab.kernels.graphs import DecodeGraph

    c = make_case([300, 5, 2000, 64], None, 8, 4, 128, 16, torch.bfloat16, device="cuda", seed=13)
    g = DecodeGraph(c.q_decode.clone(), c.k_cache, c.v_cache, c.block_tables.clone(), c.seq_lens.clone(), c.scale)
    torch.testing.assert_close(g.replay().clone(),
                               nbk.decode_attention(c.q_decode, c.k_cache, c.v_cache, c.block_tables,
                                                    c.seq_lens, c.scale, num_splits=g.num_splits))
    # next step: new queries and shorter contexts, written in place, same graph
    new_q = torch.randn_like(c.q_decode)
    new_lens = torch.tensor([299, 1, 1500, 64], dtype=torch.int32, device="cuda")
    g.q.copy_(new_q)
    g.seq_lens.copy_(new_lens)
    out = g.replay()
    exp = ref.decode(new_q, [k[:L] for k, L in zip(c.ks, new_lens.tolist())],
                     [v[:L] for v, L in zip(c.vs, new_lens.tolist())], c.scale)
    torch.testing.assert_close(out.float().cpu(), exp, **TOL[torch.bfloat16])


def test_torch_backend_on_gpu():
    c = make_case([33, 257], [5, 257], 2, 4, 128, 32, torch.float16, device="cuda", seed=14)
    tb = get_backend("torch")
    out = tb.prefill_attention(c.q_prefill, c.k_cache, c.v_cache, c.block_tables, c.cu_seqlens_q, c.seq_lens, c.scale)
    torch.testing.assert_close(out.float().cpu(), ref.prefill(c.q_prefill, c.ks, c.vs, c.cu_seqlens_q.cpu(), c.scale),
                               **TOL[torch.float16])
