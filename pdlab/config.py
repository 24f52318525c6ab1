"""``ServingConfig``: everything that defines a serving setup, one field per CLI flag, checked
once (``validate``) so that bad input fails with one line naming the flag."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import PdlabError
from .hardware import gpu as gpu_preset, parse_link
from .models import model as model_preset

MODES = ("aggregated", "chunked", "disaggregated")
ROUTERS = ("round-robin", "least-loaded", "kv-aware", "session")
FIRST_TOKEN_FROM = ("prefill", "decode")


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
    prefill_tp: int | None = None      # disaggregated: GPUs per prefill replica (default tp)
    decode_tp: int | None = None       # disaggregated: GPUs per decode replica (default tp)
    first_token_from: str = "prefill"  # disaggregated: who returns the first token (DistServe: prefill;
                                       # vLLM/SGLang P/D proxies: decode, after the KV transfer)
    proxy_overhead_s: float = 0.0      # disaggregated: proxy round trips between prefill done and decode start
    exact_steps: bool = False          # simulate every decode sequence by sequence (the reference path)
    # prefix reuse and KV-aware routing (pdlab.serving.router, kvindex, offload)
    overlap_weight: float = 1.0        # kv-aware: weight of the prefill blocks (cache overlap) in the cost
    load_weight: float = 1.0           # kv-aware: weight of the load terms (1: Dynamo's cost; 0: pure affinity)
    router_temperature: float = 0.0    # kv-aware: 0 takes the lowest cost; > 0 samples softmax(-cost)
    kv_events: bool = True             # kv-aware: index replicas' KV events; False: predict from own routing
    router_ttl: float = 120.0          # kv-aware without events: seconds a routed prefix is assumed cached
    offload_gb: float = 0.0            # host-memory KV tier per replica (GB); 0: evicted prefixes are lost
    offload_link: str | float = "pcie5"  # host <-> GPU copy: a link preset or GB/s
    host_weight: float = 0.75          # kv-aware: a host-tier hit counts this much of a device hit
    disagg_threshold: int | None = None  # disaggregated: prefill on the decode worker when the uncached prompt is this short

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
        self._validate_pools()
        gpu_preset(self.gpu)
        spec = model_preset(self.model)
        for flag, tp in (("--tp", self.tp), ("--prefill-tp", self.prefill_tp), ("--decode-tp", self.decode_tp)):
            if tp is None or tp == 1 or (flag != "--tp" and tp == self.tp):
                continue
            # tensor parallelism splits heads and the FFN across GPUs; KV heads may be replicated
            bad = [f"{what} ({n})" for what, n in (("heads", spec.heads), ("FFN width", spec.ffn)) if n % tp]
            if spec.kv_heads % tp and tp % spec.kv_heads:
                bad.append(f"KV heads ({spec.kv_heads})")
            if bad:
                raise PdlabError(f"{flag} {tp} does not divide {self.model}'s {', '.join(bad)}")
        parse_link(self.link)
        parse_link(self.offload_link)
        for k in ("overlap_weight", "load_weight", "router_temperature", "offload_gb"):
            v = getattr(self, k)
            if not (v >= 0 and v != float("inf")):
                raise PdlabError(f"{k.replace('_', '-')} must be a number >= 0, got {v}")
        if not 0 <= self.host_weight <= 1:
            raise PdlabError(f"host-weight must be between 0 and 1, got {self.host_weight}")
        if not self.router_ttl > 0:
            raise PdlabError(f"router-ttl must be > 0 seconds, got {self.router_ttl}")
        if self.offload_gb and not self.prefix_cache:
            raise PdlabError("--offload-gb keeps evicted prefix blocks: it needs --prefix-cache")
        if self.disagg_threshold is not None:
            if self.mode != "disaggregated":
                raise PdlabError("--disagg-threshold decides per request in a disaggregated cluster: "
                                 "it needs --mode disaggregated")
            if self.disagg_threshold < 0:
                raise PdlabError(f"disagg-threshold must be >= 0 tokens, got {self.disagg_threshold}")
        return self

    def _validate_pools(self) -> None:
        """Per-pool parallelism and the first-token path exist only with two pools."""
        if self.first_token_from not in FIRST_TOKEN_FROM:
            raise PdlabError(f"unknown --first-token-from '{self.first_token_from}' "
                             f"(choose from: {', '.join(FIRST_TOKEN_FROM)})")
        if not (self.proxy_overhead_s >= 0 and self.proxy_overhead_s != float("inf")):
            raise PdlabError(f"--proxy-overhead must be >= 0 seconds, got {self.proxy_overhead_s}")
        for k in ("prefill_tp", "decode_tp"):
            v = getattr(self, k)
            if v is not None and v < 1:
                raise PdlabError(f"{k.replace('_', '-')} must be >= 1, got {v}")
        if self.mode != "disaggregated":
            given = [flag for flag, v in (("--prefill-tp", self.prefill_tp), ("--decode-tp", self.decode_tp),
                                          ("--first-token-from decode", self.first_token_from != "prefill"),
                                          ("--proxy-overhead", self.proxy_overhead_s != 0.0)) if v]
            if given:
                raise PdlabError(f"{', '.join(given)} need{'s' if len(given) == 1 else ''} --mode disaggregated "
                                 f"(mode {self.mode} has one pool: use --tp)")

    def pool_tp(self, role: str) -> int:
        """GPUs per replica of the pool that runs ``role`` ('prefill', 'decode', or 'mixed')."""
        if role == "prefill" and self.prefill_tp is not None:
            return self.prefill_tp
        if role == "decode" and self.decode_tp is not None:
            return self.decode_tp
        return self.tp

    @property
    def per_pool(self) -> bool:
        """Disaggregated with a pool option away from its default (the JSON then says which)."""
        return self.mode == "disaggregated" and (
            self.pool_tp("prefill") != self.tp or self.pool_tp("decode") != self.tp
            or self.first_token_from != "prefill" or self.proxy_overhead_s != 0.0)

    @property
    def replicas(self) -> int:
        if self.mode == "disaggregated":
            return self.prefill_gpus + self.decode_gpus
        return self.num_gpus or 1

    @property
    def gpus(self) -> int:
        if self.mode == "disaggregated":
            return self.prefill_gpus * self.pool_tp("prefill") + self.decode_gpus * self.pool_tp("decode")
        return self.replicas * self.tp
