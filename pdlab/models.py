"""One description of every model pdlab knows: its shape, precision and the byte counts that
follow from them. Torch-free: the cost model reads it directly, and the real engine derives its
``ModelConfig`` from it (``pdlab.engine.model.ModelConfig.from_spec``), so a preset means the same
model on both clocks."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from .errors import PdlabError
from .paths import TINY

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float8": 1}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    ffn_kind: str = "swiglu"        # "swiglu": 3 matrices (Llama family); "relu": 2 (OPT)
    dtype: str = "bfloat16"         # weights and activations
    kv_dtype: str = "bfloat16"      # the paged KV cache
    tied_embeddings: bool = False   # the LM head reuses the input embedding (Llama-3.2-1B)
    rope_theta: float = 500000.0    # RoPE base (the engine's; the cost model does not need it)
    norm_eps: float = 1e-5
    full_layers: int | None = None  # a truncated copy of a deeper model: how deep the original is

    def __post_init__(self):
        for k in ("layers", "hidden", "heads", "kv_heads", "ffn", "vocab"):
            if getattr(self, k) < 1:
                raise PdlabError(f"model {self.name}: {k} must be >= 1, got {getattr(self, k)}")
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise PdlabError(f"model {self.name}: hidden ({self.hidden}) must divide by heads ({self.heads}) "
                             f"and heads by KV heads ({self.kv_heads})")
        for k in ("dtype", "kv_dtype"):
            if getattr(self, k) not in DTYPE_BYTES:
                raise PdlabError(f"model {self.name}: unknown {k} {getattr(self, k)!r} "
                                 f"(choose from: {', '.join(DTYPE_BYTES)})")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def kv_dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.kv_dtype]

    @property
    def layer_params(self) -> int:
        d, hd = self.hidden, self.head_dim
        attn = d * self.heads * hd * 2 + d * self.kv_heads * hd * 2      # q, o, k, v
        ffn = (3 if self.ffn_kind == "swiglu" else 2) * d * self.ffn
        return attn + ffn

    @property
    def params(self) -> int:
        embeds = (1 if self.tied_embeddings else 2) * self.vocab * self.hidden   # embedding + LM head
        return self.layers * self.layer_params + embeds

    @property
    def step_weight_bytes(self) -> int:
        """Weights every iteration reads: all layers + the LM head (the embedding is a gather)."""
        return (self.layers * self.layer_params + self.vocab * self.hidden) * self.dtype_bytes

    @property
    def weight_bytes(self) -> int:
        return self.params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of one token across all layers."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.kv_dtype_bytes

    def truncated(self, layers: int) -> "ModelSpec":
        """The first ``layers`` layers of this model (per-layer timing of a model too big to run
        whole on the machine at hand)."""
        return replace(self, layers=layers, full_layers=self.full_layers or self.layers)


def _tiny() -> ModelSpec:
    """pdlab's own trained model, read from its config (data/tiny/config.json)."""
    c = json.loads((TINY / "config.json").read_text())
    if c["hidden_size"] != c["num_heads"] * c["head_dim"]:
        raise PdlabError(f"{TINY / 'config.json'}: hidden_size must equal num_heads x head_dim")
    return ModelSpec("tiny", c["num_layers"], c["hidden_size"], c["num_heads"], c["num_kv_heads"],
                     c["ffn_size"], c["vocab_size"], dtype=c["dtype"], kv_dtype=c["kv_dtype"],
                     tied_embeddings=c["tie_embeddings"], rope_theta=c["rope_theta"], norm_eps=c["norm_eps"])


# Published configs (docs/DESIGN.md's references). "tiny" is pdlab's own trained model.
MODELS: dict[str, ModelSpec] = {m.name: m for m in [
    _tiny(),
    ModelSpec("llama-3.2-1b", 16, 2048, 32, 8, 8192, 128256, tied_embeddings=True),
    ModelSpec("llama-3-8b", 32, 4096, 32, 8, 14336, 128256),
    ModelSpec("mistral-7b", 32, 4096, 32, 8, 14336, 32000, rope_theta=1e6),
    ModelSpec("llama-2-7b", 32, 4096, 32, 32, 11008, 32000, rope_theta=1e4),
    ModelSpec("opt-13b", 40, 5120, 40, 40, 20480, 50272, ffn_kind="relu", dtype="float16", kv_dtype="float16"),
    ModelSpec("llama-2-70b", 80, 8192, 64, 8, 28672, 32000, rope_theta=1e4),
]}


def model(name: str) -> ModelSpec:
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise PdlabError(f"unknown model '{name}' (choose from: {', '.join(MODELS)})") from None


def arithmetic_intensity(spec: ModelSpec, tokens: int) -> float:
    """FLOPs per byte of weights moved for the linear layers of a step with ``tokens`` tokens:
    grows with the batch, which is the whole story of prefill vs decode."""
    return 2 * tokens * spec.layer_params / (spec.layer_params * spec.dtype_bytes)
