"""Helpers shared by the engine tests (imported as a plain module: tests/ has no packages)."""

from __future__ import annotations

from pdlab.engine import model as M
from pdlab.engine import tokenizer
from pdlab.request import Request

PROMPTS = [
    "Once upon a time",
    "Tom and Lily went to the park. ",
    "One rainy day, Mia",
    "Once upon a time, there was a brave fox named Pip. Pip liked to play at the beach with Ben.",
    "Sam felt",
    "The end. Once upon a time, Leo lived near the lake with a duck named Sunny. Every day, Leo",
]


def story_requests(max_new=(14, 20, 9, 17, 12, 16), gap=0.0, prompts=PROMPTS) -> list[Request]:
    """Requests with real prompt ids (byte tokens), mixed lengths, arriving ``gap`` s apart."""
    out = []
    for i, (p, n) in enumerate(zip(prompts, max_new)):
        ids = tuple(tokenizer.encode(p))
        out.append(Request(i, i * gap, len(ids), n, ids))
    return out


def reference_tokens(model: M.Model, requests) -> dict[int, list[int]]:
    """Greedy tokens from the plain dense forward: what every serving mode must reproduce."""
    return {r.id: model.generate_dense(r.prompt_ids, r.max_new_tokens) for r in requests}


def small_config(**kw) -> M.ModelConfig:
    """A random-weight model small enough for the CUDA simulator: one head of 64, 2 layers."""
    base = dict(name="test-small", vocab_size=tokenizer.VOCAB_SIZE, hidden_size=128, num_layers=2,
                num_heads=2, num_kv_heads=2, head_dim=64, ffn_size=256)
    base.update(kw)
    return M.ModelConfig(**base)
