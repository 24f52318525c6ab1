"""A roofline cost model: the seconds one iteration takes on a given GPU and model.

Each part of a step is bounded by compute or by memory traffic, whichever is slower:

    linear layers   max(2 * tokens * params / (peak * mfu),  weight bytes / (bw * mbu))
    attention       max(attention FLOPs / (peak * attn_eff), KV bytes read+written / (bw * mbu))
    tensor parallel 2 all-reduces per layer over the GPU link
    overhead        per step + per sequence (scheduling, sampling, launches)

so prefill (many tokens share one read of the weights) becomes compute-bound above a few hundred
tokens, decode (one token per sequence) stays memory-bound, and decode tokens riding along with a
prefill chunk are nearly free. This is the shape of DistServe's latency model (OSDI'24, App. A).

Datasheet numbers come from vendor sheets (see data/README.md); the efficiency factors are
explicit guesses until ``pdlab calibrate`` fits them to measured steps (``Efficiency.load``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .errors import PdlabError
from .request import Batch


@dataclass(frozen=True)
class GpuSpec:
    name: str
    tflops: float          # dense bf16/fp16 tensor-core TFLOP/s
    tflops_fp32: float     # plain fp32 (CUDA cores: what Numba kernels can use)
    hbm_tbps: float        # memory bandwidth, TB/s
    mem_gb: float          # memory per GPU
    link_gbps: float       # GPU-GPU bandwidth per direction, GB/s (tensor parallelism)
    notes: str = ""


# Vendor datasheets, dense (no sparsity). Link: NVLink total / 2 per direction, or PCIe x16.
GPUS: dict[str, GpuSpec] = {g.name: g for g in [
    GpuSpec("h200", 989, 67, 4.8, 141, 450, "H200 SXM, NVLink 4"),
    GpuSpec("h100", 989, 67, 3.35, 80, 450, "H100 SXM, NVLink 4"),
    GpuSpec("a100-80gb", 312, 19.5, 2.04, 80, 300, "A100 80GB SXM, NVLink 3"),
    GpuSpec("l4", 121, 30.3, 0.30, 24, 25, "L4, PCIe 4 x16"),
    GpuSpec("t4", 65, 8.1, 0.32, 16, 12, "T4, PCIe 3 x16"),
    # A laptop-class CPU: rough, order-of-magnitude numbers; calibrate before trusting them.
    GpuSpec("cpu", 0.4, 0.4, 0.04, 16, 10, "generic 4-8 core laptop CPU (rough; run pdlab calibrate)"),
]}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    ffn_kind: str = "swiglu"   # "swiglu": 3 matrices (Llama family); "relu": 2 (OPT)
    dtype_bytes: int = 2       # bf16/fp16 weights
    tied_embeddings: bool = False  # the LM head reuses the input embedding (Llama-3.2-1B)
    kv_dtype_bytes: int = 2    # bf16/fp16 KV cache

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

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


def _tiny() -> ModelSpec:
    """pdlab's own trained model, read from its config (data/tiny/config.json)."""
    c = json.loads((Path(__file__).resolve().parent.parent / "data" / "tiny" / "config.json").read_text())
    size = {"float32": 4, "float16": 2, "bfloat16": 2}
    assert c["hidden_size"] == c["num_heads"] * c["head_dim"], "cost model assumes hidden = heads x head_dim"
    return ModelSpec("tiny", c["num_layers"], c["hidden_size"], c["num_heads"], c["num_kv_heads"],
                     c["ffn_size"], c["vocab_size"], dtype_bytes=size[c["dtype"]],
                     tied_embeddings=c["tie_embeddings"], kv_dtype_bytes=size[c["kv_dtype"]])


# Published configs (see REFERENCES in docs/DESIGN.md). "tiny" is pdlab's own trained model.
MODELS: dict[str, ModelSpec] = {m.name: m for m in [
    _tiny(),
    ModelSpec("llama-3.2-1b", 16, 2048, 32, 8, 8192, 128256, tied_embeddings=True),
    ModelSpec("llama-3-8b", 32, 4096, 32, 8, 14336, 128256),
    ModelSpec("mistral-7b", 32, 4096, 32, 8, 14336, 32000),
    ModelSpec("llama-2-7b", 32, 4096, 32, 32, 11008, 32000),
    ModelSpec("opt-13b", 40, 5120, 40, 40, 20480, 50272, ffn_kind="relu"),
    ModelSpec("llama-2-70b", 80, 8192, 64, 8, 28672, 32000),
]}


@dataclass(frozen=True)
class Efficiency:
    """How close a serving engine gets to the datasheet. Defaults are typical of well-tuned
    engines (large GEMMs ~60% of peak, attention kernels ~80% of bandwidth); calibrate to
    replace them with fitted values."""

    mfu: float = 0.6                   # linear layers, fraction of tensor peak
    attn_eff: float = 0.5              # attention FLOPs, fraction of tensor peak
    mbu: float = 0.8                   # fraction of HBM bandwidth reached
    step_overhead_s: float = 1.5e-3    # scheduling, launches, sampling per iteration
    seq_overhead_s: float = 2e-5       # per sequence in the batch
    prefill_overhead_s: float = 0.0    # per prefill chunk in the batch (its own attention call, metadata)
    mixed_overhead_s: float = 0.0      # per step that runs both phases (two attention paths per layer)
    mem_util: float = 0.9              # share of GPU memory the engine may use
    source: str = "defaults"           # or the profile file it was fitted into

    @classmethod
    def load(cls, path: str | Path) -> "Efficiency":
        try:
            data = json.loads(Path(path).read_text())
            eff = data.get("efficiency", data)
            fields = {k: eff[k] for k in cls.__dataclass_fields__ if k in eff}
            return cls(**{**fields, "source": str(path)})
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise PdlabError(f"cannot read cost-model profile {path}: {e}") from None


LINKS_GBPS: dict[str, float] = {   # per direction, effective
    "nvlink": 450.0, "pcie4": 25.0, "pcie5": 50.0, "ib-ndr": 50.0, "eth-100g": 12.5, "eth-25g": 3.1,
}
LINK_LATENCY_S: dict[str, float] = {
    "nvlink": 5e-6, "pcie4": 10e-6, "pcie5": 10e-6, "ib-ndr": 20e-6, "eth-100g": 50e-6, "eth-25g": 50e-6,
}


def lookup(table: dict, name: str, what: str):
    try:
        return table[name.lower()]
    except KeyError:
        raise PdlabError(f"unknown {what} '{name}' (choose from: {', '.join(table)})") from None


@dataclass
class CostModel:
    """Seconds per iteration for ``model`` on ``tp`` GPUs of type ``gpu`` (one replica)."""

    gpu: GpuSpec
    model: ModelSpec
    tp: int = 1
    eff: Efficiency = field(default_factory=Efficiency)

    @classmethod
    def from_names(cls, gpu: str, model: str, tp: int = 1, eff: Efficiency | None = None) -> "CostModel":
        if tp < 1:
            raise PdlabError(f"tensor parallelism must be >= 1, got {tp}")
        return cls(lookup(GPUS, gpu, "GPU"), lookup(MODELS, model, "model"), tp, eff or Efficiency())

    def with_efficiency(self, **kw) -> "CostModel":
        return replace(self, eff=replace(self.eff, **kw))

    # ---- capacity -------------------------------------------------------------------------
    def kv_capacity_tokens(self) -> int:
        """KV tokens that fit beside the weights on the replica's ``tp`` GPUs."""
        usable = self.gpu.mem_gb * 1e9 * self.eff.mem_util * self.tp
        # activations and workspace: a few GB per GPU at these sizes
        free = usable - self.model.weight_bytes - 1e9 * self.tp
        return max(0, int(free // self.model.kv_bytes_per_token))

    def num_blocks(self, block_size: int) -> int:
        n = self.kv_capacity_tokens() // block_size
        if n < 1:
            raise PdlabError(
                f"model {self.model.name} ({self.model.weight_bytes / 1e9:.1f} GB of weights) leaves no room "
                f"for a KV cache on {self.tp} x {self.gpu.name} ({self.gpu.mem_gb:g} GB each); raise --tp")
        return n

    # ---- time -----------------------------------------------------------------------------
    def _peak_flops(self) -> float:
        return self.gpu.tflops * 1e12 * self.tp

    def _bw(self) -> float:
        return self.gpu.hbm_tbps * 1e12 * self.eff.mbu * self.tp

    def _consts(self) -> tuple[int, int, int, int, int]:
        """Per-model constants of ``time_for`` (computed once: it runs every simulated step)."""
        c = self.__dict__.get("_c")
        if c is None:
            m = self.model
            c = self.__dict__["_c"] = (2 * m.layers * m.layer_params, 2 * m.vocab * m.hidden, m.step_weight_bytes,
                                       4 * m.layers * m.heads * m.head_dim, m.kv_bytes_per_token)
        return c

    def step_time(self, batch: Batch) -> float:
        """Seconds for one iteration running ``batch``."""
        n_seq = len(batch.prefills) + len(batch.decodes)
        if n_seq == 0:
            return 0.0
        prefill_ctx = prefill_pairs = 0
        n_sampled = len(batch.decodes)
        n_chunks = len(batch.prefills)
        for seq, n in batch.prefills:
            c = seq.num_computed                     # context already in the cache
            prefill_pairs += n * c + n * (n + 1) // 2  # causal query x key pairs
            prefill_ctx += c + n
            n_sampled += c + n == seq.num_tokens
        return self.time_for(batch.num_tokens, n_sampled, n_seq, prefill_pairs, prefill_ctx,
                             batch.num_prefill_tokens, batch.decode_context, n_chunks,
                             mixed=bool(n_chunks and batch.decodes))

    def time_for(self, tokens: int, sampled: int, seqs: int, prefill_pairs: int = 0,
                 prefill_ctx: int = 0, prefill_tokens: int = 0, decode_ctx: int = 0,
                 prefill_chunks: int = 0, mixed: bool = False) -> float:
        """The roofline from batch totals (vectorisable; ``step_time`` fills these in)."""
        m, e = self.model, self.eff
        peak, bw = self._peak_flops(), self._bw()
        layer_flops, head_flops, weight_bytes, per_pair, kv_tok = self._consts()
        # linear layers: every token through every matrix; logits only where a token is sampled
        flops = tokens * layer_flops + sampled * head_flops
        t_linear = max(flops / (peak * e.mfu), weight_bytes / bw)
        # attention: QK^T and PV (4 FLOPs per query-key pair per head dim); KV read once per step
        attn_flops = per_pair * (prefill_pairs + decode_ctx)
        attn_bytes = kv_tok * (prefill_ctx + decode_ctx + prefill_tokens)   # reads + new writes
        t_attn = max(attn_flops / (peak * e.attn_eff), attn_bytes / bw) if attn_flops else 0.0
        t = (t_linear + t_attn + e.step_overhead_s + e.seq_overhead_s * seqs
             + e.prefill_overhead_s * prefill_chunks + (e.mixed_overhead_s if mixed else 0.0))
        if self.tp > 1:   # two ring all-reduces of the activations per layer
            act = tokens * m.hidden * m.dtype_bytes
            t += 2 * m.layers * (2 * (self.tp - 1) / self.tp * act / (self.gpu.link_gbps * 1e9) + 5e-6)
        return t

    def prefill_time(self, tokens: int, context: int = 0) -> float:
        """One prefill of ``tokens`` new tokens after ``context`` cached ones, alone in a step."""
        pairs = tokens * context + tokens * (tokens + 1) // 2
        return self.time_for(tokens, 1, 1, pairs, context + tokens, tokens, 0, 1)

    def decode_time(self, batch: int, context: int) -> float:
        """One decode step of ``batch`` sequences each holding ``context`` tokens."""
        return self.time_for(batch, batch, batch, decode_ctx=batch * context)

    def kv_transfer_time(self, tokens: int, link_gbps: float, latency_s: float = 0.0) -> float:
        return latency_s + tokens * self.model.kv_bytes_per_token / (link_gbps * 1e9)

    def describe(self) -> dict:
        return {"gpu": self.gpu.name, "model": self.model.name, "tp": self.tp,
                "efficiency": {k: v for k, v in asdict(self.eff).items()},
                "kv_capacity_tokens": self.kv_capacity_tokens()}


def arithmetic_intensity(model: ModelSpec, tokens: int) -> float:
    """FLOPs per byte of weights moved for the linear layers of a step with ``tokens`` tokens:
    grows with the batch, which is the whole story of prefill vs decode."""
    return 2 * tokens * model.layers * model.layer_params / (model.layers * model.layer_params * model.dtype_bytes)


def ridge_point(gpu: GpuSpec) -> float:
    """FLOPs per byte above which ``gpu`` is compute-bound (tensor peak / HBM bandwidth)."""
    return gpu.tflops * 1e12 / (gpu.hbm_tbps * 1e12)
