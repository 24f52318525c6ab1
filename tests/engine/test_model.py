"""The model itself: configs, presets, the paged forward against the dense reference, weights."""

from __future__ import annotations

import pytest
import torch

from pdlab.engine import model as M
from pdlab.engine import tokenizer
from pdlab.errors import PdlabError
from pdlab.engine.executor import ModelExecutor
from pdlab.request import Batch, Request, Sequence

from engine_support import small_config


def test_config_rejects_shapes_the_kernels_cannot_run():
    with pytest.raises(ValueError, match="head_dim"):
        M.ModelConfig(head_dim=32)
    with pytest.raises(ValueError, match="1, 4 or 8"):
        M.ModelConfig(num_heads=4, num_kv_heads=2)


def test_presets_match_published_shapes():
    b1 = M.preset("llama-3.2-1b")
    assert (b1.num_layers, b1.hidden_size, b1.num_heads, b1.num_kv_heads, b1.ffn_size) == (16, 2048, 32, 8, 8192)
    assert 1.1e9 < b1.num_params() < 1.3e9          # Llama-3.2-1B: 1.24B with tied embeddings
    b8 = M.preset("llama-3-8b")
    assert (b8.hidden_size, b8.head_dim, b8.ffn_size, b8.num_kv_heads) == (4096, 128, 14336, 8)
    assert M.preset("llama-3-8b", num_layers=1).num_layers == 1
    with pytest.raises(PdlabError, match="unknown model preset"):
        M.preset("gpt-5")


def test_tiny_weights_load_with_safetensors(tiny):
    assert tiny.cfg.name == "tiny" and tiny.cfg.trained
    assert sum(p.numel() for p in tiny.parameters()) == tiny.cfg.num_params()
    assert M.TINY_DIR.joinpath("model.safetensors").stat().st_size <= 20e6
    # it learnt its corpus: the greedy continuation is a sentence of the story grammar
    out = tokenizer.decode(tiny.generate_dense(tokenizer.encode("Once upon a time"), 30))
    assert out.startswith(", there was a")


def test_save_load_roundtrip(tmp_path):
    m = M.build(small_config(), seed=3)
    M.save(m, tmp_path, dtype=torch.float32)
    back = M.load(tmp_path)
    ids = torch.tensor(tokenizer.encode("hello"))
    torch.testing.assert_close(back.forward_dense(ids), m.forward_dense(ids))


def test_missing_weights_name_the_file(tmp_path):
    with pytest.raises(PdlabError, match="model file not found: .*config.json"):
        M.load(tmp_path)
    M.save(M.build(small_config()), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(PdlabError, match=r"model file not found: .*model\.safetensors"):
        M.load(tmp_path)


def test_corrupt_weights_name_the_file(tmp_path):
    M.save(M.build(small_config()), tmp_path)
    w = tmp_path / "model.safetensors"
    w.write_bytes(w.read_bytes()[:200])
    with pytest.raises(PdlabError, match=r"corrupt weights file .*model\.safetensors") as e:
        M.load(tmp_path)
    assert "\n" not in str(e.value)


def test_weights_for_another_config_are_refused(tmp_path):
    M.save(M.build(small_config()), tmp_path)
    (tmp_path / "config.json").write_text(small_config(ffn_size=512).to_json())
    with pytest.raises(PdlabError, match="does not match"):
        M.load(tmp_path)


def test_paged_prefill_logits_match_dense(tiny):
    """One whole prompt through the paged pass gives the dense logits at its last position."""
    ids = tokenizer.encode("Once upon a time, there was a kind owl")
    ex = ModelExecutor(tiny, num_blocks=8, block_size=8, device="cpu")
    seq = Sequence(Request(0, 0.0, len(ids), 1, tuple(ids)))
    seq.block_table = [7, 2, 5, 0, 3, 1, 6, 4][: -(-len(ids) // 8)]    # scrambled pages
    batch = Batch()
    batch.add_prefill(seq, len(ids))
    input_ids, pos, attn, idx = ex.prepare(batch)
    with torch.inference_mode():
        paged = tiny(input_ids, pos, ex.kv_caches, attn)          # every row: [T, V]
        dense = tiny.forward_dense(torch.tensor(ids))              # [T, V]
    torch.testing.assert_close(paged, dense, atol=2e-3, rtol=1e-3)


def test_random_presets_build_and_run_small():
    """Shape presets get seeded random weights; a 1-layer slice of the 8B shape runs a step."""
    cfg = M.preset("llama-3-8b", num_layers=1, vocab_size=512, hidden_size=512, num_heads=4,
                   num_kv_heads=1, ffn_size=1024, dtype="float32", kv_dtype="float16")
    a, b = M.build(cfg, seed=1), M.build(cfg, seed=1)
    assert torch.equal(a.layers[0].mlp.up_proj.weight, b.layers[0].mlp.up_proj.weight)
    ex = ModelExecutor(a, num_blocks=4, block_size=16, device="cpu")
    seq = Sequence(Request(0, 0.0, 5, 1, (1, 2, 3, 4, 5)))
    seq.block_table = [0]
    batch = Batch()
    batch.add_prefill(seq, 5)
    res = ex.run(batch)
    assert len(res.tokens) == 1 and res.seconds > 0
