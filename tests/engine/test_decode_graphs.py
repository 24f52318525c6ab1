"""The CUDA-graph decode path's host side, on the CPU: vectorised step inputs equal the per-token
construction, buckets pad correctly, padded rows write nothing, and serving through the graphs'
static buffers (run eagerly: ``graphs="eager"``) gives the dense reference's tokens."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from pdlab.engine import graphs as G
from pdlab.engine import model as M
from pdlab.engine.executor import ModelExecutor
from pdlab.engine.inputs import decode_inputs
from pdlab.errors import PdlabError
from pdlab.request import Batch, Request, Sequence

from engine_support import reference_tokens, small_config, story_requests
from test_serving_modes import serve


def _decoding(i, prompt_len, generated, table):
    s = Sequence(Request(i, 0.0, prompt_len, 99, tuple(range(3, 3 + prompt_len))))
    s.output_ids = list(range(100, 100 + generated))
    s.num_tokens = prompt_len + generated
    s.num_computed = s.num_tokens - 1                  # the newest token is the one to decode
    s.block_table = list(table)
    return s


def test_decode_inputs_match_the_per_token_construction():
    rng = random.Random(3)
    for trial in range(20):
        bs = rng.choice([8, 16])
        seqs = []
        for i in range(rng.randint(1, 9)):
            p, g = rng.randint(1, 70), rng.randint(0, 40)
            n = p + g
            need = -(-n // bs) + rng.randint(0, 2)          # sometimes more blocks than needed
            seqs.append(_decoding(i, p, g, rng.sample(range(500), need)))
        d = decode_inputs(seqs, bs)
        for row, s in enumerate(seqs):
            pos = s.num_computed
            tokens = list(s.request.prompt_ids) + s.output_ids
            assert d.ids[row] == tokens[pos] and d.positions[row] == pos and d.seq_lens[row] == pos + 1
            assert d.slots[row] == s.block_table[pos // bs] * bs + pos % bs
            need = pos // bs + 1
            assert list(d.block_tables[row, :need]) == s.block_table[:need]
            assert not d.block_tables[row, need:].any()
        assert d.block_tables.shape[1] == max(s.num_computed // bs + 1 for s in seqs)


def test_decode_inputs_name_the_bad_sequence():
    s = _decoding(7, 10, 11, [1])                    # position 20 is past block 0 of 16 tokens
    with pytest.raises(ValueError, match="sequence 7: position 20 needs block 1 but its block table has 1"):
        decode_inputs([s], 16)
    s2 = _decoding(8, 10, 3, [1])
    s2.num_computed -= 1
    with pytest.raises(ValueError, match="sequence 8: a decode needs exactly one uncomputed token, has 2"):
        decode_inputs([s2], 16)


def test_buckets_cover_and_pad():
    for n in range(1, G.BATCH_BUCKETS[-1] + 1):
        rows, width = G.bucket(n, 1)
        assert rows >= n and rows in G.BATCH_BUCKETS and width == G.MIN_WIDTH
        assert rows == min(b for b in G.BATCH_BUCKETS if b >= n)
    assert G.bucket(G.BATCH_BUCKETS[-1] + 1, 1) is None
    for blocks in (1, 16, 17, 100, 513):
        w = G.bucket(1, blocks)[1]
        assert w >= blocks and w // 2 < max(blocks, G.MIN_WIDTH + 1) and w & (w - 1) == 0


def test_padded_rows_write_nothing(tiny):
    """Three decodes pad to a bucket of 4: exactly their three slots change in every layer's
    cache, and the tokens equal the eager path's."""
    ex_g = ModelExecutor(tiny, num_blocks=8, block_size=16, device="cpu", graphs="eager")
    ex_e = ModelExecutor(tiny, num_blocks=8, block_size=16, device="cpu", graphs=False)
    for ex in (ex_g, ex_e):
        for k, v in ex.kv_caches:
            k.normal_(generator=torch.Generator().manual_seed(1))
            v.copy_(k)
    before = [k.clone() for k, _ in ex_g.kv_caches]

    def batch():
        b = Batch()
        for i, (p, g, table) in enumerate([(5, 1, [3]), (20, 4, [0, 6]), (9, 2, [5])]):
            b.add_decode(_decoding(i, p, g, table))
        return b

    got, exp = ex_g.run(batch()).tokens, ex_e.run(batch()).tokens
    assert ex_g.graphs.steps == 1 and got == exp
    slots = {3 * 16 + 5, 6 * 16 + 7, 5 * 16 + 10}
    for (k, _), k0, (ke, _) in zip(ex_g.kv_caches, before, ex_e.kv_caches):
        changed = set((k != k0).any(-1).any(-1).flatten().nonzero().flatten().tolist())
        assert changed == slots
        torch.testing.assert_close(k, ke, atol=2e-3, rtol=2e-3)   # padding changes GEMM rounding only


def test_serving_through_the_static_buffers_matches(tiny):
    reqs = story_requests(gap=0.002)
    expected = reference_tokens(tiny, reqs)
    for mode, chunk in [("aggregated", None), ("chunked", 16), ("disaggregated", None)]:
        _, got = serve(tiny, reqs, mode, chunk, graphs="eager")
        assert got == expected, mode


def test_numba_on_the_simulator_through_the_static_buffers():
    model = M.build(small_config(num_layers=1), seed=7)
    reqs = story_requests(max_new=(4, 3, 3), prompts=["Once upon", "Tom and Lily went", "Sam"])
    _, got = serve(model, reqs, "chunked", 8, num_blocks=16, block_size=16, backend="numba", graphs="eager")
    assert got == reference_tokens(model, reqs)


def test_graphs_need_the_numba_backend_on_a_gpu(tiny):
    with pytest.raises(PdlabError, match="graphs: CUDA-graph decode needs the numba backend on a CUDA device"):
        ModelExecutor(tiny, num_blocks=8, block_size=16, device="cpu", graphs=True)
    with pytest.raises(PdlabError, match="graphs: 'yes' is not one of"):
        ModelExecutor(tiny, num_blocks=8, block_size=16, device="cpu", graphs="yes")
    assert ModelExecutor(tiny, num_blocks=8, block_size=16, device="cpu").graphs is None


def test_fused_rotation_and_kv_write_in_the_engine(monkeypatch):
    """A 16-bit model whose cache has its dtype takes the fused rope_write_kv kernel (simulator)
    and serves the same greedy tokens as the torch backend's rotation + scatter."""
    from pdlab.kernels import rope_write

    calls = []
    real = rope_write.rope_write_kv
    monkeypatch.setattr(rope_write, "rope_write_kv", lambda *a: calls.append(1) or real(*a))
    from pdlab.kernels import _cache
    _cache.pop("numba", None)                      # rebuild the backend with the counting kernel
    model = M.build(small_config(num_layers=1, dtype="float16", kv_dtype="float16"), seed=7)
    reqs = story_requests(max_new=(4, 3), prompts=["Once upon", "Sam"])
    _, got = serve(model, reqs, "chunked", 8, num_blocks=16, block_size=16, backend="numba", graphs="eager")
    _, exp = serve(model, reqs, "chunked", 8, num_blocks=16, block_size=16, backend="torch")
    _cache.pop("numba", None)
    assert calls and got == exp
