"""``ServingConfig``: everything that defines a serving setup, one field per CLI flag, checked
once (``validate``) so that bad input fails with one line naming the flag."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import PdlabError
from .hardware import gpu as gpu_preset, parse_link
from .models import model as model_preset

MODES = ("aggregated", "chunked", "disaggregated")
ROUTERS = ("round-robin", "least-loaded")


@dataclass
class ServingConfig:
    mode: str = "chunked"              # aggregated | chunked | disaggregated
    model: str = "llama-3-8b"          # a pdlab.models preset
    gpu: str = "h100"                  # a pdlab.hardware preset
    tp: int = 1                        # tensor parallelism: GPUs per replica
    num_gpus: int | None = None        # replicas for aggregated/chunked; a cap on the pools when disaggregated
    prefill_gpus: int = 1              # disaggregated: prefill replicas
    decode_gpus: int = 1               # disaggregated: decode replicas
    chunk_size: int | None = None      # chunked: token budget per iteration (default 512); disaggregated: prefill chunk (default 8192)
    max_num_seqs: int = 256            # running sequences per worker
    block_size: int = 16               # tokens per KV block
    num_blocks: int | None = None      # KV blocks per worker; None: what fits in GPU memory
    link: str | float = "nvlink"       # disaggregated KV link: a preset or GB/s
    router: str = "least-loaded"
    prefix_cache: bool = False
    profile: str | None = None         # calibrated efficiency JSON (pdlab calibrate)
    exact_steps: bool = False          # simulate every decode sequence by sequence (the reference path)

    def validate(self) -> "ServingConfig":
        if self.mode not in MODES:
            raise PdlabError(f"unknown mode '{self.mode}' (choose from: {', '.join(MODES)})")
        if self.router not in ROUTERS:
            raise PdlabError(f"unknown router '{self.router}' (choose from: {', '.join(ROUTERS)})")
        for k in ("tp", "prefill_gpus", "decode_gpus", "max_num_seqs", "block_size"):
            if getattr(self, k) < 1:
                raise PdlabError(f"{k.replace('_', '-')} must be >= 1, got {getattr(self, k)}")
        if self.num_gpus is not None and self.num_gpus < 1:
            raise PdlabError(f"num-gpus must be >= 1, got {self.num_gpus}")
        if self.chunk_size is not None and not self.chunk_size >= 1:
            raise PdlabError(f"chunk size must be a positive number of tokens, got {self.chunk_size}")
        if self.num_blocks is not None and self.num_blocks < 1:
            raise PdlabError(f"num-blocks must be >= 1, got {self.num_blocks}")
        if self.mode == "disaggregated" and self.num_gpus is not None:
            pools = self.prefill_gpus + self.decode_gpus
            if pools > self.num_gpus:
                raise PdlabError(f"the pools need {pools} replicas ({self.prefill_gpus} prefill + "
                                 f"{self.decode_gpus} decode) but --num-gpus gives {self.num_gpus}")
        gpu_preset(self.gpu)
        spec = model_preset(self.model)
        if self.tp > 1:
            # tensor parallelism splits heads and the FFN across GPUs; KV heads may be replicated
            bad = [f"{what} ({n})" for what, n in (("heads", spec.heads), ("FFN width", spec.ffn)) if n % self.tp]
            if spec.kv_heads % self.tp and self.tp % spec.kv_heads:
                bad.append(f"KV heads ({spec.kv_heads})")
            if bad:
                raise PdlabError(f"--tp {self.tp} does not divide {self.model}'s {', '.join(bad)}")
        parse_link(self.link)
        return self

    @property
    def replicas(self) -> int:
        if self.mode == "disaggregated":
            return self.prefill_gpus + self.decode_gpus
        return self.num_gpus or 1

    @property
    def gpus(self) -> int:
        return self.replicas * self.tp
