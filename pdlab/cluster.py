"""Workers, the router, KV links and the discrete-event loop that drives them.

One loop serves both clocks: a worker asks its scheduler for a Batch, asks its executor how long
the batch takes (a cost-model prediction or a measured run), and the loop jumps virtual time to
the end of that step. Arrivals, step completions and KV transfers are the only events.

Aggregated and chunked modes run ``num_gpus`` identical replicas behind a router. Disaggregated
mode runs a prefill pool and a decode pool: a sequence is prefilled (its first token comes from
the prefill worker), waits until a decode worker has room for its KV, crosses that worker's
inbound ``Link``, then decodes.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .costmodel import LINK_LATENCY_S, LINKS_GBPS, CostModel, Efficiency
from .errors import PdlabError
from .executors import CostModelExecutor, Executor
from .gcpause import gc_paused
from .kv import BlockManager
from .request import Request, Sequence, Status
from .schedulers import (INF, AggregatedScheduler, ChunkedScheduler, DecodeOnlyScheduler,
                         PrefillOnlyScheduler, Scheduler)

MODES = ("aggregated", "chunked", "disaggregated")
ROUTERS = ("round-robin", "least-loaded")


@dataclass
class ServingConfig:
    """Everything that defines a serving setup. Each knob is one CLI flag."""

    mode: str = "chunked"              # aggregated | chunked | disaggregated
    model: str = "llama-3-8b"          # a costmodel.MODELS preset
    gpu: str = "h100"                  # a costmodel.GPUS preset
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
        self.link_gbps()
        self.cost_model()
        return self

    def link_gbps(self) -> tuple[float, float]:
        """(GB/s, latency s) of the disaggregated KV link."""
        if isinstance(self.link, (int, float)) or str(self.link).replace(".", "", 1).isdigit():
            bw = float(self.link)
            if not bw > 0:
                raise PdlabError(f"link bandwidth must be > 0 GB/s, got {self.link}")
            return bw, 10e-6
        name = str(self.link).lower()
        if name not in LINKS_GBPS:
            raise PdlabError(f"unknown link '{self.link}' (a preset: {', '.join(LINKS_GBPS)}; or GB/s)")
        return LINKS_GBPS[name], LINK_LATENCY_S[name]

    def cost_model(self) -> CostModel:
        eff = Efficiency.load(self.profile) if self.profile else None
        return CostModel.from_names(self.gpu, self.model, self.tp, eff)

    @property
    def replicas(self) -> int:
        if self.mode == "disaggregated":
            return self.prefill_gpus + self.decode_gpus
        return self.num_gpus or 1

    @property
    def gpus(self) -> int:
        return self.replicas * self.tp


class Worker:
    """A scheduler + its block manager + an executor: one replica (``tp`` GPUs)."""

    def __init__(self, name: str, role: str, scheduler: Scheduler, executor: Executor):
        self.name, self.role = name, role
        self.sched = scheduler
        self.executor = executor
        self.busy = False


class Link:
    """A FIFO pipe for KV transfers (one per decode worker's inbound side)."""

    def __init__(self, name: str, gbps: float, latency_s: float):
        self.name, self.gbps, self.latency_s = name, gbps, latency_s
        self.free_at = 0.0
        self.bytes_moved = 0

    def send(self, now: float, nbytes: int) -> tuple[float, float]:
        start = max(now, self.free_at)
        end = start + self.latency_s + nbytes / (self.gbps * 1e9)
        self.free_at = end
        self.bytes_moved += nbytes
        return start, end


class Router:
    def __init__(self, policy: str, workers: list[Worker]):
        self.policy, self.workers, self._next = policy, workers, 0

    def pick(self, seq: Sequence) -> Worker:
        if self.policy == "round-robin":
            w = self.workers[self._next % len(self.workers)]
            self._next += 1
            return w
        return min(self.workers, key=lambda w: w.sched.load)   # first wins ties: deterministic


#: one row per iteration: (worker index, start s, end s, prefill tokens, decode tokens, KV blocks used)
StepRow = tuple[int, float, float, int, int, int]


@dataclass
class RunResult:
    config: ServingConfig
    sequences: list[Sequence]
    workers: list[str]                 # names, indexed by StepRow[0]
    roles: list[str]
    num_blocks: int
    steps: list[StepRow] = field(default_factory=list)
    transfers: int = 0
    kv_bytes_moved: int = 0
    prefix_hit_rate: float | None = None   # prompt tokens served from the prefix cache (when enabled)

    def summary(self, slos=None) -> dict:
        from .metrics import summarize
        out = summarize(self.sequences, slos, gpus=self.config.gpus)
        out["mode"] = self.config.mode
        out["gpus"] = self.config.gpus
        out["preemptions"] = sum(s.num_preemptions for s in self.sequences)
        if self.prefix_hit_rate is not None:
            out["prefix_hit_rate"] = self.prefix_hit_rate
        if self.config.mode == "disaggregated":
            out["kv_transfers"] = self.transfers
            out["kv_bytes_moved"] = self.kv_bytes_moved
        return out


ExecutorFactory = Callable[[str, str, int, int], Executor]


class Cluster:
    def __init__(self, config: ServingConfig, executor_factory: ExecutorFactory | None = None):
        self.config = cfg = config.validate()
        cm = cfg.cost_model()
        self.cost_model = cm
        self.num_blocks = cfg.num_blocks or cm.num_blocks(cfg.block_size)
        if executor_factory is None:
            shared = CostModelExecutor(cm)          # stateless: one serves every worker
            executor_factory = lambda name, role, nb, bs: shared  # noqa: E731

        def worker(name, role, sched_cls, **kw):
            bm = BlockManager(self.num_blocks, cfg.block_size, cfg.prefix_cache)
            sched = sched_cls(bm, cfg.max_num_seqs, **kw)
            return Worker(name, role, sched, executor_factory(name, role, self.num_blocks, cfg.block_size))

        if cfg.mode == "disaggregated":
            chunk = cfg.chunk_size or 8192
            self.prefill = [worker(f"prefill{i}", "prefill", PrefillOnlyScheduler, token_budget=chunk)
                            for i in range(cfg.prefill_gpus)]
            self.decode = [worker(f"decode{i}", "decode", DecodeOnlyScheduler) for i in range(cfg.decode_gpus)]
            gbps, lat = cfg.link_gbps()
            self.links = {id(w): Link(f"link->{w.name}", gbps, lat) for w in self.decode}
            front = self.prefill
        else:
            if cfg.mode == "aggregated":
                make = lambda i: worker(f"gpu{i}", "mixed", AggregatedScheduler,  # noqa: E731
                                        max_batched_tokens=cfg.chunk_size or INF)
            else:
                make = lambda i: worker(f"gpu{i}", "mixed", ChunkedScheduler,  # noqa: E731
                                        token_budget=cfg.chunk_size or 512)
            self.prefill, self.decode, self.links = [make(i) for i in range(cfg.replicas)], [], {}
            front = self.prefill
        self.workers = self.prefill + self.decode
        self.router = Router(cfg.router, front)

    # ---- the event loop -----------------------------------------------------------------------
    def run(self, requests: Iterable[Request]) -> RunResult:
        # cycle scans would rescan every token-time list: pausing them saves ~10% of a simulation
        with gc_paused():
            return self._run(requests)

    def _run(self, requests: Iterable[Request]) -> RunResult:
        seqs = sorted((Sequence(r) for r in requests), key=lambda s: (s.arrival, s.id))
        widx = {id(w): i for i, w in enumerate(self.workers)}
        res = RunResult(self.config, seqs, [w.name for w in self.workers], [w.role for w in self.workers],
                        self.num_blocks)
        steps = res.steps
        heap: list = []          # (time, tie, kind, payload): kind 0 = step done, 1 = transfer done
        tie = 0
        pending: deque = deque()  # (seq, prefill worker) waiting for decode-side memory
        kv_tok = self.cost_model.model.kv_bytes_per_token
        fits_decode = self.decode[0].sched if self.decode else None

        def start(w: Worker, now: float) -> None:
            nonlocal tie
            if w.busy:
                return
            batch = w.sched.schedule(now)
            if not batch:
                return
            result = w.executor.run(batch)
            w.busy = True
            tie += 1
            heapq.heappush(heap, (now + max(result.seconds, 1e-9), tie, 0, (w, batch, result, now)))

        def try_transfers(now: float) -> None:
            nonlocal tie
            while pending:
                seq, src = pending[0]
                for dst in sorted(self.decode, key=lambda d: -d.sched.bm.num_free):
                    table = dst.sched.reserve_for_transfer(seq)
                    if table is not None:
                        break
                else:
                    return   # decode memory is full: transfers wait (back-pressure on prefill)
                pending.popleft()
                seq.transfer_start, end = self.links[id(dst)].send(now, seq.num_computed * kv_tok)
                tie += 1
                heapq.heappush(heap, (end, tie, 1, (seq, src, dst, table)))

        i, n = 0, len(seqs)
        while i < n or heap:
            if heap and (i >= n or heap[0][0] <= seqs[i].arrival):
                now, _, kind, payload = heapq.heappop(heap)
                if kind == 0:
                    w, batch, result, t0 = payload
                    w.busy = False
                    w.sched.postprocess(batch, result, now)
                    steps.append((widx[id(w)], t0, now, batch.num_prefill_tokens, len(batch.decodes),
                                  w.sched.bm.num_used))
                    if w.role == "prefill":
                        pending.extend((seq, w) for seq in w.sched.handoff)
                        w.sched.handoff.clear()
                    if self.decode:
                        try_transfers(now)
                    start(w, now)
                else:
                    seq, src, dst, table = payload
                    dst.executor.transfer_kv(src.executor, seq.block_table, table)
                    src.sched.release(seq)
                    seq.transfer_end = now
                    dst.sched.accept(seq, table)
                    res.transfers += 1
                    res.kv_bytes_moved += seq.num_computed * kv_tok
                    start(dst, now)
                    try_transfers(now)
                    start(src, now)
            else:
                seq = seqs[i]
                i += 1
                now = seq.arrival
                if fits_decode is not None and fits_decode.max_blocks_needed(seq) > fits_decode.bm.num_blocks:
                    seq.status = Status.REJECTED
                    seq.reject_reason = (f"needs {fits_decode.max_blocks_needed(seq)} KV blocks on a decode "
                                         f"worker but its cache holds {fits_decode.bm.num_blocks}")
                    continue
                w = self.router.pick(seq)
                if w.sched.add(seq):
                    seq.worker = w.name
                    start(w, now)
        if self.config.prefix_cache:
            queried = sum(w.sched.bm.queries for w in self.workers)
            res.prefix_hit_rate = sum(w.sched.bm.hits for w in self.workers) / queried if queried else 0.0
        return res


def run_serving(requests: Iterable[Request], config: ServingConfig,
                executor_factory: ExecutorFactory | None = None) -> RunResult:
    """Serve ``requests`` with ``config``; the one entry point for CLI, labs and benchmarks."""
    return Cluster(config, executor_factory).run(requests)
