"""A Llama-style decoder in torch: RMSNorm, rotary positions (RoPE), grouped-query attention
and a SwiGLU feed-forward, with two forward passes over the same weights.

- ``forward_dense(ids)``: plain causal attention over a whole batch of sequences, no cache. It is
  the reference: whatever the paged engine does must give the same greedy tokens.
- ``forward(input_ids, positions, kv_caches, attn)``: the serving pass. Tokens of many sequences
  (prefill chunks and decodes mixed) are laid out flat in one ``[T]`` vector; each layer writes
  its new K/V into the paged cache, then attends through a pluggable backend
  (``pdlab.kernels.get_backend("torch" | "numba")``).

Shapes use T = tokens in the flat batch, H = query heads, Hkv = KV heads, D = head dim,
C = hidden size, F = FFN width, V = vocabulary, L = layers.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import PdlabError
from ..models import MODELS, ModelSpec
from ..paths import TINY as TINY_DIR     # the trained tiny model: data/tiny
from .layers import RMSNorm, _fused, _live, rope, rope_cos_sin  # noqa: F401  (re-exported)


@dataclass
class ModelConfig:
    name: str = "tiny"
    vocab_size: int = 258           # byte-level: 256 bytes + BOS + EOS
    hidden_size: int = 256          # C
    num_layers: int = 8             # L
    num_heads: int = 4              # H (query heads)
    num_kv_heads: int = 1           # Hkv: H / Hkv query heads share one K/V head (GQA)
    head_dim: int = 64              # D: the Numba kernels support 64 and 128
    ffn_size: int = 768             # F: SwiGLU width
    rope_theta: float = 10000.0     # RoPE base; Llama 3 uses 500000 for long contexts
    norm_eps: float = 1e-5
    tie_embeddings: bool = False    # share the input embedding with the output head
    dtype: str = "float32"          # weights and activations; GPU presets use bfloat16
    kv_dtype: str = "float16"       # the paged KV cache (the kernels take fp16 or bf16 only)
    trained: bool = False           # True: weights come from data/, else seeded random
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.head_dim not in (64, 128):
            raise ValueError(f"{self.name}: head_dim must be 64 or 128 (Numba kernels), got {self.head_dim}")
        if self.num_heads % self.num_kv_heads or self.num_heads // self.num_kv_heads not in (1, 4, 8):
            raise ValueError(f"{self.name}: query heads per KV head must be 1, 4 or 8, "
                             f"got {self.num_heads}/{self.num_kv_heads}")

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def torch_kv_dtype(self) -> torch.dtype:
        return getattr(torch, self.kv_dtype)

    def num_params(self) -> int:
        C, D, F_, V = self.hidden_size, self.head_dim, self.ffn_size, self.vocab_size
        attn = C * D * (self.num_heads * 2 + self.num_kv_heads * 2)
        layer = attn + 3 * C * F_ + 2 * C
        return self.num_layers * layer + V * C * (1 if self.tie_embeddings else 2) + C

    def kv_bytes_per_token(self) -> int:
        """Bytes of K and V one token occupies in the cache, over all layers."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.torch_kv_dtype.itemsize

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_spec(cls, spec: ModelSpec, **overrides) -> "ModelConfig":
        """The engine's config of a ``pdlab.models`` preset (one description for both clocks)."""
        if spec.ffn_kind != "swiglu":
            raise PdlabError(f"model {spec.name}: the engine runs Llama-style (SwiGLU) models, "
                             f"not a {spec.ffn_kind} FFN; simulate it with the cost model instead")
        extra = {"full_num_layers": spec.full_layers} if spec.full_layers else {}
        return cls(**{**dict(name=spec.name, vocab_size=spec.vocab, hidden_size=spec.hidden, num_layers=spec.layers,
                             num_heads=spec.heads, num_kv_heads=spec.kv_heads, head_dim=spec.head_dim,
                             ffn_size=spec.ffn, rope_theta=spec.rope_theta, norm_eps=spec.norm_eps,
                             tie_embeddings=spec.tied_embeddings, dtype=spec.dtype, kv_dtype=spec.kv_dtype,
                             extra=extra), **overrides})

    def spec(self) -> ModelSpec:
        """This config as a ``pdlab.models.ModelSpec``: what the cost model needs to time it."""
        if self.hidden_size != self.num_heads * self.head_dim:
            raise PdlabError(f"model {self.name}: the cost model needs hidden = heads x head_dim "
                             f"({self.hidden_size} != {self.num_heads} x {self.head_dim})")
        full = self.extra.get("full_num_layers")
        return ModelSpec(self.name, self.num_layers, self.hidden_size, self.num_heads, self.num_kv_heads,
                         self.ffn_size, self.vocab_size, dtype=self.dtype, kv_dtype=self.kv_dtype,
                         tied_embeddings=self.tie_embeddings, rope_theta=self.rope_theta, norm_eps=self.norm_eps,
                         full_layers=full if full and full != self.num_layers else None)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


#: The engine's presets, derived from ``pdlab.models``. ``tiny`` is trained (data/tiny); the others
#: are published shapes with seeded random weights, for realistic GPU timing (tokens are
#: meaningless, step times are real).
PRESETS: dict[str, ModelConfig] = {
    "tiny": replace(ModelConfig.from_spec(MODELS["tiny"]), trained=True),
    "llama-3.2-1b": ModelConfig.from_spec(MODELS["llama-3.2-1b"]),
    # 4 of Llama-3-8B's 32 layers: per-layer timing is the real one, and it fits anywhere
    "llama-3-8b": ModelConfig.from_spec(MODELS["llama-3-8b"].truncated(4)),
}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise PdlabError(f"unknown model preset {name!r}; choose from {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


# --------------------------------------------------------------------------------------------
# building blocks


@dataclass
class AttentionMetadata:
    """How the flat batch maps onto sequences and cache slots; built once per step by the
    executor and shared by every layer. Prefill tokens come first, then one token per decode."""

    backend: object                     # pdlab.kernels backend: write_kv, prefill/decode_attention
    slot_mapping: torch.Tensor          # [T] int64: cache slot (block * block_size + offset) per token
    num_prefill_tokens: int
    # prefill chunks (n_p sequences); seq_lens include the chunk itself
    prefill_cu_seqlens_q: torch.Tensor | None = None   # [n_p + 1] int32
    prefill_seq_lens: torch.Tensor | None = None       # [n_p] int32
    prefill_block_tables: torch.Tensor | None = None   # [n_p, max_blocks] int32
    # decodes (n_d sequences), one query token each
    decode_seq_lens: torch.Tensor | None = None        # [n_d] int32
    decode_block_tables: torch.Tensor | None = None    # [n_d, max_blocks] int32
    # extra keywords for every layer's backend calls: the executor validates the step once and
    # passes its host-side sizes here (check=False, max_q_len, ...), so no layer re-validates
    # the same tensors or reads them back from the GPU (each read-back is a host sync)
    write_kwargs: dict = field(default_factory=dict)
    prefill_kwargs: dict = field(default_factory=dict)
    decode_kwargs: dict = field(default_factory=dict)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        C, H, Hkv, D = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(C, H * D, bias=False)
        self.k_proj = nn.Linear(C, Hkv * D, bias=False)
        self.v_proj = nn.Linear(C, Hkv * D, bias=False)
        self.o_proj = nn.Linear(H * D, C, bias=False)
        self.scale = 1.0 / math.sqrt(D)
        self.wqkv = None                 # [(H + 2 Hkv) D, C] once fused (Model.fuse)

    def project(self, x):                                    # x [T, C] -> [T, (H + 2 Hkv) D]
        """q, k and v side by side, from one GEMM when the weights are fused (Model.fuse)."""
        if not _live(self.wqkv, self.q_proj):                # not fused, or moved since
            return torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], dim=-1)
        return F.linear(x, self.wqkv)

    def rotate(self, qkv, cos_sin):                          # qkv [T, (H + 2 Hkv) D]; cos/sin [T, 1, D]
        """q [T, H, D] (contiguous), k [T, Hkv, D] and v [T, Hkv, D] (views of one buffer), q and
        k rotated together (one rotation for both)."""
        cfg = self.cfg
        T, H, Hkv, D = qkv.shape[0], cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        qk = rope(qkv[:, :(H + Hkv) * D].view(T, H + Hkv, D), *cos_sin)     # [T, H + Hkv, D]
        v = qkv[:, (H + Hkv) * D:].view(T, Hkv, D)
        return qk[:, :H].contiguous(), qk[:, H:], v

    def qkv(self, x, cos_sin):                               # x [T, C]
        return self.rotate(self.project(x), cos_sin)

    def forward_paged(self, x, cos_sin, kv_cache, attn: AttentionMetadata):
        k_cache, v_cache = kv_cache                          # [num_blocks, block_size, Hkv, D] each
        be = attn.backend
        qkv = self.project(x)                                # [T, (H + 2 Hkv) D]
        # write first: a prefill chunk attends to itself through the cache
        fused = getattr(be, "rope_write_kv", None)
        if fused is not None and qkv.dtype == k_cache.dtype and qkv.element_size() == 2:
            # one kernel: rotate q and k, store k and v at their slots (six launches otherwise)
            q = fused(qkv, *cos_sin, k_cache, v_cache, attn.slot_mapping, self.cfg.num_heads)
        else:
            q, k, v = self.rotate(qkv, cos_sin)
            be.write_kv(k.to(k_cache.dtype), v.to(v_cache.dtype), k_cache, v_cache, attn.slot_mapping,
                        **attn.write_kwargs)
        P = attn.num_prefill_tokens
        outs = []
        if P:
            outs.append(be.prefill_attention(q[:P], k_cache, v_cache,
                                             attn.prefill_block_tables, attn.prefill_cu_seqlens_q,
                                             attn.prefill_seq_lens, self.scale,
                                             **attn.prefill_kwargs))               # [P, H, D]
        if q.shape[0] > P:
            outs.append(be.decode_attention(q[P:], k_cache, v_cache,
                                            attn.decode_block_tables, attn.decode_seq_lens,
                                            self.scale, **attn.decode_kwargs))     # [n_d, H, D]
        o = outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)               # [T, H, D]
        return self.o_proj(o.reshape(x.shape[0], -1).to(x.dtype))               # [T, C]

    def forward_dense(self, x, round_kv: bool = True):       # x [B, S, C]
        cfg = self.cfg
        B, S, _ = x.shape
        pos = torch.arange(S, device=x.device)
        q, k, v = self.qkv(x.reshape(B * S, -1), rope_cos_sin(pos.repeat(B), cfg.head_dim, cfg.rope_theta))
        if round_kv and cfg.torch_kv_dtype != q.dtype:
            # the engine stores K/V (and the torch backend also q) in the cache's precision:
            # round the same way so the reference sees the same numbers
            q, k, v = (t.to(cfg.torch_kv_dtype).to(t.dtype) for t in (q, k, v))
        q = q.view(B, S, cfg.num_heads, -1).transpose(1, 2)                     # [B, H, S, D]
        k = k.view(B, S, cfg.num_kv_heads, -1).transpose(1, 2)                  # [B, Hkv, S, D]
        v = v.view(B, S, cfg.num_kv_heads, -1).transpose(1, 2)
        k = k.repeat_interleave(cfg.group_size, dim=1)                          # [B, H, S, D]
        v = v.repeat_interleave(cfg.group_size, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.o_proj(o.transpose(1, 2).reshape(B, S, -1))                 # [B, S, C]


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.ffn_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.ffn_size, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_size, cfg.hidden_size, bias=False)
        self.w_gate_up = None            # [2 F, C] once fused (Model.fuse)

    def forward(self, x):                                    # x [..., C] -> [..., C]
        if not _live(self.w_gate_up, self.gate_proj):
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        gate, up = F.linear(x, self.w_gate_up).chunk(2, dim=-1)           # [..., F] each
        return self.down_proj(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.post_attn_norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.mlp = MLP(cfg)


class Model(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    @torch.no_grad()
    def fuse(self) -> "Model":
        """Concatenate each layer's q/k/v weights into one matrix and gate/up into another, and
        make the separate weights views of them (no extra memory; the state dict is unchanged):
        3 + 2 GEMMs per layer become 1 + 1. Idempotent; redo after moving the model."""
        for layer in self.layers:
            a, m = layer.attn, layer.mlp
            if not _live(a.wqkv, a.q_proj):
                a.wqkv = _fused(a.q_proj, a.k_proj, a.v_proj)
                m.w_gate_up = _fused(m.gate_proj, m.up_proj)
        return self

    @torch.no_grad()
    def init_random(self, seed: int = 0) -> "Model":
        """Seeded random weights for shape presets: small normal weights (std 0.02, residual
        outputs scaled by 1/sqrt(2L) as in GPT-2) so activations stay finite in bf16."""
        g = torch.Generator(device="cpu").manual_seed(seed)
        out_std = 0.02 / math.sqrt(2 * self.cfg.num_layers)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                std = out_std if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
                # generate on the CPU for the same weights on every device, chunked by rows
                for r0 in range(0, p.shape[0], 8192):
                    r1 = min(r0 + 8192, p.shape[0])
                    p[r0:r1] = (torch.randn(r1 - r0, *p.shape[1:], generator=g) * std).to(p.device, p.dtype)
        return self

    def forward(self, input_ids, positions, kv_caches, attn: AttentionMetadata, logits_index=None,
                layer_done=None):
        """The serving pass. input_ids, positions [T]; kv_caches: one (k_cache, v_cache) per
        layer; logits_index [S]: the rows that sample a token (all rows when None);
        ``layer_done(i)`` is called once layer i has written its K/V (a disaggregated prefill
        starts sending that layer while the later ones compute). Returns logits [S, V] in fp32."""
        x = self.embed(input_ids)                            # [T, C]
        cos_sin = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta)
        for i, (layer, kv) in enumerate(zip(self.layers, kv_caches)):
            x = x + layer.attn.forward_paged(layer.input_norm(x), cos_sin, kv, attn)
            if layer_done is not None:
                layer_done(i)
            x = x + layer.mlp(layer.post_attn_norm(x))
        if logits_index is not None:
            x = x[logits_index]                              # [S, C]: skip unsampled rows
        return self.lm_head(self.norm(x)).float()            # [S, V]

    def forward_dense(self, ids, round_kv: bool = True):
        """Reference causal forward, no cache. ids [B, S] (or [S]) -> logits [B, S, V] fp32.
        ``round_kv``: round q/K/V to the KV cache's precision, as the paged engine does."""
        squeeze = ids.dim() == 1
        if squeeze:
            ids = ids[None]
        x = self.embed(ids)                                  # [B, S, C]
        for layer in self.layers:
            x = x + layer.attn.forward_dense(layer.input_norm(x), round_kv)
            x = x + layer.mlp(layer.post_attn_norm(x))
        logits = self.lm_head(self.norm(x)).float()          # [B, S, V]
        return logits[0] if squeeze else logits

    @torch.no_grad()
    def generate_dense(self, prompt_ids, max_new_tokens: int, stop_id: int | None = None) -> list[int]:
        """Greedy generation with the reference forward (recomputes everything each step):
        the answer the paged engine must reproduce."""
        ids = torch.tensor(list(prompt_ids), device=self.device)
        out: list[int] = []
        for _ in range(max_new_tokens):
            nxt = int(self.forward_dense(ids)[-1].argmax())
            out.append(nxt)
            if nxt == stop_id:
                break
            ids = torch.cat([ids, ids.new_tensor([nxt])])
        return out


# --------------------------------------------------------------------------------------------
# building and loading


def build(cfg: ModelConfig | str, device="cpu", seed: int = 0, dtype: str | None = None) -> Model:
    """A model for a config or preset name: trained weights from ``data/`` for ``tiny``,
    seeded random weights for the shape presets."""
    if isinstance(cfg, str):
        if cfg == "tiny":
            return load_tiny(device=device, dtype=dtype)
        cfg = preset(cfg)
    if dtype:
        cfg = replace(cfg, dtype=dtype)
    with torch.device(device):
        model = Model(cfg).to(cfg.torch_dtype)
    return model.init_random(seed).eval().fuse()


def save(model: Model, directory: str | Path, dtype=torch.float16) -> Path:
    """Write ``model.safetensors`` (weights stored in fp16 to stay small) and ``config.json``."""
    from safetensors.torch import save_file
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()
             if not (model.cfg.tie_embeddings and k == "lm_head.weight")}
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt", "model": model.cfg.name})
    (d / "config.json").write_text(model.cfg.to_json() + "\n")
    return d / "model.safetensors"


def load(directory: str | Path, device="cpu", dtype: str | None = None) -> Model:
    """Load ``config.json`` + ``model.safetensors`` from a directory. A missing or corrupt file
    raises one clear error naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    d = Path(directory)
    cfg_path, w_path = d / "config.json", d / "model.safetensors"
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise PdlabError(f"model file not found: {p} (the tiny model ships in data/tiny; "
                         f"retrain with scripts/train_tiny.py)")
    try:
        cfg = ModelConfig.from_dict(json.loads(cfg_path.read_text()))
    except (ValueError, TypeError) as e:
        raise PdlabError(f"corrupt model config {cfg_path}: {e}") from None
    if dtype:
        cfg = replace(cfg, dtype=dtype)
    try:
        state = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise PdlabError(f"corrupt weights file {w_path}: {e}") from None
    model = Model(cfg)
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["embed.weight"]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise PdlabError(f"weights file {w_path} does not match {cfg_path}: "
                     f"{first[1].strip() if len(first) > 1 else first[0]}") from None
    return model.to(device=device, dtype=cfg.torch_dtype).eval().fuse()


def load_tiny(device="cpu", dtype: str | None = None) -> Model:
    return load(TINY_DIR, device=device, dtype=dtype)
