"""A roofline cost model: the seconds one iteration takes on a given GPU and model.

Each part of a step is bounded by compute or by memory traffic, whichever is slower:

    linear layers   max(2 * tokens * params / (peak * mfu),  weight bytes / (bw * mbu))
    attention       max(attention FLOPs / (peak * attn_eff), KV bytes read+written / (bw * mbu))
    tensor parallel 2 all-reduces per layer over the GPU link
    overhead        per step + per sequence (scheduling, sampling, launches)

so prefill (many tokens share one read of the weights) becomes compute-bound above a few hundred
tokens, decode (one token per sequence) stays memory-bound, and decode tokens riding along with a
prefill chunk are nearly free. This is the shape of DistServe's latency model (OSDI'24, App. A).

A batch reaches the model as a ``StepShape`` (its token, sequence and attention-pair totals):
``CostModel.shape(batch)`` reads it off a ``Batch``, ``time_for(shape)`` prices it, and
``step_time(batch)`` is the two in one. Datasheet numbers come from ``pdlab.hardware`` and
``pdlab.models``; the efficiency factors are explicit guesses until ``pdlab calibrate`` fits them
to measured steps (``Efficiency.load``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from ..errors import PdlabError
from ..hardware import GpuSpec, gpu as gpu_preset
from ..models import ModelSpec, model as model_preset
from ..request import Batch


class StepShape(NamedTuple):
    """What the cost model needs to know about one iteration."""

    tokens: int              # tokens through the linear layers (prefill + one per decode)
    sampled: int             # sequences that sample a token (the LM head runs for these)
    seqs: int                # sequences in the batch
    prefill_pairs: int = 0   # causal (query, key) pairs of the prefill chunks
    prefill_ctx: int = 0     # KV the prefill chunks read (cached context + the chunk)
    prefill_tokens: int = 0  # KV the prefill chunks write
    decode_ctx: int = 0      # KV the decodes read (sum of their context lengths)
    prefill_chunks: int = 0
    mixed: bool = False      # prefill chunks and decodes in one step
    running: int = 0         # sequences resident on the worker (the engine's per-step pass walks them all)

    @classmethod
    def prefill(cls, tokens: int, context: int = 0) -> "StepShape":
        """One prefill of ``tokens`` new tokens after ``context`` cached ones, alone in a step."""
        pairs = tokens * context + tokens * (tokens + 1) // 2
        return cls(tokens, 1, 1, pairs, context + tokens, tokens, 0, 1)

    @classmethod
    def decode(cls, batch: int, context: int) -> "StepShape":
        """A decode step of ``batch`` sequences each holding ``context`` tokens."""
        return cls(batch, batch, batch, decode_ctx=batch * context)

    @property
    def kind(self) -> str:
        """'prefill', 'decode' or 'mixed': the phases this step runs."""
        if self.prefill_chunks:
            return "mixed" if self.mixed else "prefill"
        return "decode"

    def __add__(self, other: "StepShape") -> "StepShape":
        """Both in one step (e.g. a prefill chunk with decodes riding along)."""
        s = StepShape(*(a + b for a, b in zip(self[:8], other[:8])), False, self.running + other.running)
        return s._replace(mixed=bool(s.prefill_chunks and s.seqs > s.prefill_chunks))


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
    # terms a production engine pays beyond the roofline (0: the ideal engine; see docs/DESIGN.md)
    decode_mbu: float = 0.0            # decode attention's own share of HBM bandwidth (0: mbu)
    token_overhead_s: float = 0.0      # per sampled token (sampling, detokenising, streaming it out)
    running_overhead_s: float = 0.0    # per sequence resident on the worker, every step (scheduler, output pass)
    block_overhead_s: float = 0.0      # per KV block allocated (block tables, allocator)
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


@dataclass
class CostModel:
    """Seconds per iteration for ``model`` on ``tp`` GPUs of type ``gpu`` (one replica)."""

    gpu: GpuSpec
    model: ModelSpec
    tp: int = 1
    eff: Efficiency = field(default_factory=Efficiency)
    block_size: int = 16               # tokens per KV block (what block_overhead_s counts)

    @classmethod
    def from_names(cls, gpu: str, model: str, tp: int = 1, eff: Efficiency | None = None,
                   block_size: int = 16) -> "CostModel":
        if tp < 1:
            raise PdlabError(f"tensor parallelism must be >= 1, got {tp}")
        return cls(gpu_preset(gpu), model_preset(model), tp, eff or Efficiency(), block_size)

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
    def _consts(self) -> tuple:
        """Per-model constants of ``time_for`` (computed once: it runs every simulated step)."""
        c = self.__dict__.get("_c")
        if c is None:
            m = self.model
            c = self.__dict__["_c"] = (2 * m.layers * m.layer_params, 2 * m.vocab * m.hidden, m.step_weight_bytes,
                                       4 * m.layers * m.heads * m.head_dim, m.kv_bytes_per_token,
                                       self.gpu.tflops * 1e12 * self.tp,
                                       self.gpu.hbm_tbps * 1e12 * self.eff.mbu * self.tp)
        return c

    @staticmethod
    def shape(batch: Batch) -> StepShape:
        """The batch's totals, read once (the scheduler filled ``num_prefill_tokens`` and
        ``decode_context`` while building it)."""
        prefill_ctx = prefill_pairs = 0
        n_dec = len(batch.decodes) + batch.group_decodes
        n_sampled = n_dec
        for seq, n in batch.prefills:
            c = seq.num_computed                     # context already in the cache
            prefill_pairs += n * c + n * (n + 1) // 2  # causal query x key pairs
            prefill_ctx += c + n
            n_sampled += c + n == seq.num_tokens
        n_chunks = len(batch.prefills)
        return StepShape(batch.num_prefill_tokens + n_dec, n_sampled, n_chunks + n_dec,
                         prefill_pairs, prefill_ctx, batch.num_prefill_tokens, batch.decode_context, n_chunks,
                         bool(n_chunks and n_dec), batch.num_running)

    def step_time(self, batch: Batch) -> float:
        """Seconds for one iteration running ``batch``."""
        if not batch:
            return 0.0
        return self.time_for(self.shape(batch))

    def time_for(self, s: StepShape) -> float:
        """The roofline of one step's shape."""
        m, e = self.model, self.eff
        layer_flops, head_flops, weight_bytes, per_pair, kv_tok, peak, bw = self._consts()
        # linear layers: every token through every matrix; logits only where a token is sampled
        flops = s.tokens * layer_flops + s.sampled * head_flops
        t_linear = max(flops / (peak * e.mfu), weight_bytes / bw)
        # attention: QK^T and PV (4 FLOPs per query-key pair per head dim); KV read once per step
        attn_flops = per_pair * (s.prefill_pairs + s.decode_ctx)
        if e.decode_mbu:   # decode attention (paged, one query per sequence) at a bandwidth share of its own
            t_bytes = (kv_tok * (s.prefill_ctx + s.prefill_tokens) / bw
                       + kv_tok * s.decode_ctx / (bw / e.mbu * e.decode_mbu))
        else:
            t_bytes = kv_tok * (s.prefill_ctx + s.decode_ctx + s.prefill_tokens) / bw   # reads + new writes
        t_attn = max(attn_flops / (peak * e.attn_eff), t_bytes) if attn_flops else 0.0
        t = (t_linear + t_attn + e.step_overhead_s + e.seq_overhead_s * s.seqs
             + e.prefill_overhead_s * s.prefill_chunks + (e.mixed_overhead_s if s.mixed else 0.0)
             # engine costs beyond the roofline: plain arithmetic on the step's totals (0 by default)
             + e.token_overhead_s * s.sampled + e.running_overhead_s * s.running
             + e.block_overhead_s * (s.prefill_tokens + s.seqs - s.prefill_chunks) / self.block_size)
        if self.tp > 1:   # two ring all-reduces of the activations per layer
            act = s.tokens * m.hidden * m.dtype_bytes
            t += 2 * m.layers * (2 * (self.tp - 1) / self.tp * act / (self.gpu.link_gbps * 1e9) + 5e-6)
        return t

    def decode_step_time(self, n: int, context: int) -> float:
        """``time_for`` of a step of ``n`` decodes over ``context`` KV tokens and nothing else
        (``n`` sequences resident: a steady decode group), term for term the same floating-point
        operations (the simulator's fast-forward calls it once per steady iteration; a test
        checks it equals ``time_for`` bit for bit)."""
        c = self.__dict__.get("_dc")
        if c is None or c[0] != n:
            m, e = self.model, self.eff
            layer_flops, head_flops, weight_bytes, per_pair, kv_tok, peak, bw = self._consts()
            t_linear = max((n * layer_flops + n * head_flops) / (peak * e.mfu), weight_bytes / bw)
            tp_s = 0.0
            if self.tp > 1:
                act = n * m.hidden * m.dtype_bytes
                tp_s = 2 * m.layers * (2 * (self.tp - 1) / self.tp * act / (self.gpu.link_gbps * 1e9) + 5e-6)
            # the engine terms beyond the roofline, as time_for adds them (sampled = running = n)
            extra = (e.token_overhead_s * n, e.running_overhead_s * n, e.block_overhead_s * n / self.block_size)
            kv_bw = bw / e.mbu * e.decode_mbu if e.decode_mbu else bw
            c = self.__dict__["_dc"] = (n, t_linear, per_pair, peak * e.attn_eff, kv_tok, kv_bw, e.step_overhead_s,
                                        e.seq_overhead_s * n, e.prefill_overhead_s * 0, self.tp > 1, tp_s, extra)
        _, t_linear, per_pair, attn_peak, kv_tok, bw, step_s, seqs_s, chunks_s, tp, tp_s, extra = c
        if context:
            t_attn = max(per_pair * context / attn_peak, kv_tok * context / bw)
        else:
            t_attn = 0.0
        t = t_linear + t_attn + step_s + seqs_s + chunks_s + 0.0 + extra[0] + extra[1] + extra[2]
        if tp:
            t += tp_s
        return t

    def prefill_time(self, tokens: int, context: int = 0) -> float:
        """One prefill of ``tokens`` new tokens after ``context`` cached ones, alone in a step."""
        return self.time_for(StepShape.prefill(tokens, context))

    def decode_time(self, batch: int, context: int) -> float:
        """One decode step of ``batch`` sequences each holding ``context`` tokens."""
        return self.time_for(StepShape.decode(batch, context))

    def kv_transfer_time(self, tokens: int, link_gbps: float, latency_s: float = 0.0) -> float:
        return latency_s + tokens * self.model.kv_bytes_per_token / (link_gbps * 1e9)

    def describe(self) -> dict:
        return {"gpu": self.gpu.name, "model": self.model.name, "tp": self.tp,
                "efficiency": {k: v for k, v in asdict(self.eff).items()},
                "kv_capacity_tokens": self.kv_capacity_tokens()}


def ridge_point(gpu: GpuSpec) -> float:
    """FLOPs per byte above which ``gpu`` is compute-bound (tensor peak / HBM bandwidth)."""
    return gpu.tflops * 1e12 / (gpu.hbm_tbps * 1e12)
