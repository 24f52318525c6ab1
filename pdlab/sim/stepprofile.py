"""A profile with a step-time model of its own: DistServe's fitted per-iteration latency models
(``step-profile-*.json`` in ``data/measured/``, OSDI'24's simulator), in milliseconds,

    prefill step   a + b * sum(prompt_len) + c * sum(prompt_len ** 2)          "prefill": [a, b, c]
    decode step    a + b * sum(context_len) + c * batch_size                   "decoding_smallbs" /
                   (one coefficient set up to ``decoding_large_small_bs_threshold`` sequences,
                   another above it)                                           "decoding_largebs"

per model and TP degree. ``StepProfileModel`` prices a ``StepShape`` with them, so the simulator can
run "vLLM on A100 as DistServe profiled it" behind the same scheduler and loop. Where the
published model has no term, the shape is mapped onto the nearest one: a prefill chunk after
cached context counts its attention pairs (``sum(prompt_len**2)`` is ``2 * pairs - tokens`` for
whole prompts); a mixed step is its prefill part plus the decode part's per-context and
per-sequence terms (one intercept: it is one iteration). The overheads of ``Efficiency`` (per
step, per sequence, per running sequence, per sampled token, per KV block) are added on top;
``profiles.load_profile`` sets them to zero unless a fit wrote them, so a fit can put the costs a
step-only profile misses (a serving loop's, not the kernels') beside it. KV capacity is the
roofline's (weights, memory share), on the profile's GPU.

Two file layouts load: DistServe's own (``{"facebook/opt-13b": {"1": {...}}}``) and pdlab's
wrapper (``{"kind": "step-profile", "gpu": ..., "models": {"opt-13b": {"1": {...}}}, ...}``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import PdlabError
from .costmodel import CostModel, Efficiency, StepShape

KIND = "step-profile"
_KEYS = ("prefill", "decoding_smallbs", "decoding_largebs")


def is_step_profile(data) -> bool:
    """A DistServe-layout or pdlab-wrapped step profile (and not an efficiency profile)."""
    if not isinstance(data, dict):
        return False
    if data.get("kind") == KIND:
        return True
    return bool(data) and all(isinstance(v, dict) and v and all(isinstance(t, dict) and "prefill" in t
                                                               for t in v.values()) for v in data.values())


def models_of(data: dict) -> dict:
    """``{pdlab model name: {tp (int): coefficients}}`` from either layout."""
    raw = data["models"] if data.get("kind") == KIND else data
    return {name.split("/")[-1].lower(): {int(tp): c for tp, c in by_tp.items()} for name, by_tp in raw.items()}


@dataclass
class StepProfileModel:
    """Seconds per iteration from a published step-time model (one model, one TP degree).
    Duck-types ``CostModel``: ``shape``, ``time_for``, ``step_time``, ``num_blocks``, ``model``."""

    roofline: CostModel                 # GPU, model, TP, memory share and the extra overheads
    prefill: tuple[float, float, float]
    decode_small: tuple[float, float, float]
    decode_large: tuple[float, float, float]
    threshold: int
    source: str = ""
    shape = staticmethod(CostModel.shape)
    eff: Efficiency = field(init=False)

    def __post_init__(self):
        self.eff = self.roofline.eff
        self.model, self.gpu, self.tp = self.roofline.model, self.roofline.gpu, self.roofline.tp

    @classmethod
    def from_data(cls, data: dict, roofline: CostModel, source: str = "") -> "StepProfileModel":
        models = models_of(data)
        name, tp = roofline.model.name, roofline.tp
        if name not in models:
            raise PdlabError(f"step profile {source} has no model '{name}' (it has: {', '.join(models)})")
        if tp not in models[name]:
            raise PdlabError(f"step profile {source} has no TP {tp} for {name} "
                             f"(it has: {', '.join(map(str, sorted(models[name])))})")
        c = models[name][tp]
        try:
            coef = [tuple(float(x) for x in c[k]) for k in _KEYS]
            if any(len(v) != 3 for v in coef):
                raise ValueError("each coefficient list holds [a, b, c]")
            thr = int(c.get("decoding_large_small_bs_threshold", 10 ** 9))
        except (KeyError, TypeError, ValueError) as e:
            raise PdlabError(f"step profile {source}: bad coefficients for {name} TP {tp}: {e}") from None
        return cls(roofline, *coef, thr, source)

    def time_for(self, s: StepShape) -> float:
        e = self.eff
        ms = 0.0
        decodes = s.seqs - s.prefill_chunks
        if s.prefill_chunks:
            a, b, c = self.prefill
            ms = a + b * s.prefill_tokens + c * (2 * s.prefill_pairs - s.prefill_tokens)
        if decodes:
            a, b, c = self.decode_small if decodes <= self.threshold else self.decode_large
            ms += (0.0 if s.prefill_chunks else a) + b * s.decode_ctx + c * decodes
        return (1e-3 * ms + e.step_overhead_s + e.seq_overhead_s * s.seqs + e.token_overhead_s * s.sampled
                + e.running_overhead_s * s.running
                + e.block_overhead_s * (s.prefill_tokens + decodes) / self.roofline.block_size)

    def decode_step_time(self, n: int, context: int) -> float:
        """A step of ``n`` decodes over ``context`` KV tokens, ``n`` sequences resident (the
        simulator's fast-forward of a steady decode group)."""
        return self.time_for(StepShape(n, n, n, decode_ctx=context, running=n))

    def step_time(self, batch) -> float:
        if not batch:
            return 0.0
        return self.time_for(self.shape(batch))

    def with_efficiency(self, **kw) -> "StepProfileModel":
        return StepProfileModel(self.roofline.with_efficiency(**kw), self.prefill, self.decode_small,
                                self.decode_large, self.threshold, self.source)

    def kv_capacity_tokens(self) -> int:
        return self.roofline.kv_capacity_tokens()

    def num_blocks(self, block_size: int) -> int:
        return self.roofline.num_blocks(block_size)

    def prefill_time(self, tokens: int, context: int = 0) -> float:
        return self.time_for(StepShape.prefill(tokens, context))

    def decode_time(self, batch: int, context: int) -> float:
        return self.time_for(StepShape.decode(batch, context))

    def kv_transfer_time(self, tokens: int, link_gbps: float, latency_s: float = 0.0) -> float:
        return self.roofline.kv_transfer_time(tokens, link_gbps, latency_s)

    def describe(self) -> dict:
        return {**self.roofline.describe(), "step_profile": self.source,
                "prefill_ms": list(self.prefill), "decode_small_ms": list(self.decode_small),
                "decode_large_ms": list(self.decode_large), "threshold": self.threshold}
