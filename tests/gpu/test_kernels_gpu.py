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


@pytest.mark.parametrize("kernel", ["auto", "mma", "fp32"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_prefill_llama_shapes(nbk, dtype, kernel):
    # a whole 700-token prompt, a 300-token chunk of a 1300-token context, a 1-token prompt
    c = make_case([700, 1300, 1], [700, 300, 1], 8, 4, 128, 16, dtype, device="cuda", seed=11)
    out = nbk.prefill_attention(c.q_prefill, c.k_cache, c.v_cache, c.block_tables, c.cu_seqlens_q,
                                c.seq_lens, c.scale, kernel=kernel)
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
        exp = ref.prefill(c.q_prefill, c.ks, c.vs, c.cu_seqlens_q.cpu(), c.scale)
        for kernel in ("mma", "fp32"):
            out = nbk.prefill_attention(c.q_prefill, c.k_cache, c.v_cache, c.block_tables, c.cu_seqlens_q,
                                        c.seq_lens, c.scale, kernel=kernel)
            torch.testing.assert_close(out.float().cpu(), exp, **TOL[kw["dtype"]], msg=f"{kernel} {msg}")


def test_prefill_random_shapes_both_kernels(nbk):
    """Random ragged batches of prompts and chunks (1..2500 tokens, chunks after cached context)
    through the tensor-core and the fp32 kernel, three kernel configurations."""
    rng = random.Random(1)
    configs = [dict(num_kv_heads=8, group=4, head_dim=128, block_size=16, dtype=torch.bfloat16),
               dict(num_kv_heads=2, group=8, head_dim=64, block_size=32, dtype=torch.float16),
               dict(num_kv_heads=4, group=1, head_dim=128, block_size=32, dtype=torch.float16)]
    for trial in range(6):
        kw = configs[trial % 3]
        n = rng.randint(1, 5)
        seq_lens = [rng.choice([1, rng.randint(2, 130), rng.randint(100, 2500)]) for _ in range(n)]
        q_lens = [rng.choice([L, rng.randint(1, L)]) for L in seq_lens]
        c = make_case(seq_lens, q_lens, device="cuda", seed=100 + trial, **kw)
        exp = ref.prefill(c.q_prefill, c.ks, c.vs, c.cu_seqlens_q.cpu(), c.scale)
        for kernel in ("mma", "fp32"):
            out = nbk.prefill_attention(c.q_prefill, c.k_cache, c.v_cache, c.block_tables, c.cu_seqlens_q,
                                        c.seq_lens, c.scale, kernel=kernel)
            torch.testing.assert_close(out.float().cpu(), exp, **TOL[kw["dtype"]],
                                       msg=f"{kernel} trial {trial}: {seq_lens} {q_lens} {kw}")


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
                                    c.seq_lens, c.scale, kernel="fp32", tile=tile, max_registers=regs)
        torch.testing.assert_close(out.float().cpu(), exp, **TOL[torch.bfloat16], msg=f"{tile} {regs}")


def test_prefill_mma_tile_variants(nbk):
    """Every tensor-core tile the benchmark tries is correct (ragged, chunked, GQA 4)."""
    c = make_case([1000, 130], [1000, 70], 8, 4, 128, 16, torch.bfloat16, device="cuda", seed=17)
    exp = ref.prefill(c.q_prefill, c.ks, c.vs, c.cu_seqlens_q.cpu(), c.scale)
    mma_variants = [("4w1m64", (4, 1, 64), None), ("4w2m32", (4, 2, 32), None),   # bench/kernels.py's
                    ("8w1m32", (8, 1, 32), None), ("4w1m32", (4, 1, 32), None), ("2w1m64", (2, 1, 64), None),
                    ("4w1m64cap168", (4, 1, 64), 168)]
    for name, tile, regs in mma_variants:
        out = nbk.prefill_attention(c.q_prefill, c.k_cache, c.v_cache, c.block_tables, c.cu_seqlens_q,
                                    c.seq_lens, c.scale, kernel="mma", tile=tile, max_registers=regs)
        torch.testing.assert_close(out.float().cpu(), exp, **TOL[torch.bfloat16], msg=name)


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


def test_auto_prefill_is_the_tensor_core_kernel():
    from pdlab.kernels import prefill_attention as pa

    if torch.cuda.get_device_capability() >= (8, 0):
        assert pa.choose_kernel("auto") == "mma"
    else:
        assert pa.choose_kernel("auto") == "fp32"


def test_engine_on_tensor_cores_gives_the_dense_tokens(monkeypatch):
    """The engine's invariant with the tensor-core prefill: greedy tokens identical to the torch
    backend and to the dense forward, chunked (prefill chunks after cached context, mixed steps)
    and aggregated; and the tensor-core kernel really ran."""
    from pdlab import ServingConfig, run_serving
    from pdlab.engine import model as M
    from pdlab.engine import tokenizer
    from pdlab.engine.executor import factory
    from pdlab.kernels import prefill_attention as pa
    from pdlab.request import Request

    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("no bf16 mma before sm_80")
    launched = []
    real = pa._launch_mma
    monkeypatch.setattr(pa, "_launch_mma", lambda *a: launched.append(1) or real(*a))
    model = M.load_tiny(device="cuda")
    prompts = ["Once upon a time there was a little girl named Lily.", "Tom and Sam went to the park",
               "The sun", "A big red dog ran after the ball and"]
    reqs = [Request(i, 0.002 * i, len(tokenizer.encode(p)), n, tuple(tokenizer.encode(p)))
            for i, (p, n) in enumerate(zip(prompts, (12, 9, 15, 7)))]
    expected = {r.id: model.generate_dense(r.prompt_ids, r.max_new_tokens) for r in reqs}
    for mode, chunk in [("chunked", 7), ("chunked", 32), ("aggregated", None)]:
        for backend in ("numba", "torch"):
            cfg = ServingConfig(mode=mode, model="tiny", gpu="cpu", chunk_size=chunk, num_blocks=64, block_size=16)
            res = run_serving(reqs, cfg, executor_factory=factory(model, backend=backend, device="cuda"))
            got = {s.id: list(s.output_ids) for s in res.sequences}
            assert got == expected, (mode, chunk, backend)
    assert launched, "the numba backend did not run the tensor-core prefill"
