"""The cluster: workers behind a router, KV links between pools, and the discrete-event loop
that drives them. The loop never asks what a step costs: a worker's executor says (the cost
model's prediction or a measured run), and virtual time jumps to the end of that step.

Aggregated and chunked modes run ``replicas`` identical workers behind the router.
Disaggregated mode runs a prefill pool and a decode pool: a sequence is prefilled (its first
token comes from the prefill worker), waits until a decode worker has room for its KV, crosses
that worker's inbound ``Link``, then decodes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..config import ServingConfig
from ..gcpause import gc_paused
from ..hardware import parse_link
from ..request import Batch, Request, Sequence, Status, StepResult
from .events import Arrival, EventQueue, StepDone, StepLog, TransferDone
from .kv import BlockManager, prefix_hashes
from .kvindex import build_index
from .offload import attach_host_tiers
from .prefixstats import prefix_counters
from .link import Link
from .policies import AggregatedScheduler, ChunkedScheduler, DecodeOnlyScheduler, PrefillOnlyScheduler
from .router import Router
from .scheduler import INF
from .worker import Executor, Worker

#: runs with at least this many requests may show a progress bar
PROGRESS_MIN_REQUESTS = 20_000

#: ``executor_factory(worker name, role, num_blocks, block_size) -> Executor``
ExecutorFactory = Callable[[str, str, int, int], Executor]
#: ``on_step(worker, batch, result)``: called as each iteration starts, before ``postprocess``
StepHook = Callable[[Worker, Batch, StepResult], None]


@dataclass
class RunResult:
    config: ServingConfig
    sequences: list[Sequence]
    workers: list[str]                 # names, indexed by StepRecord.worker
    roles: list[str]
    num_blocks: int
    clock: str = ""                    # where the seconds come from (simulated ... / measured ...)
    steps: StepLog = field(default_factory=StepLog)
    transfers: int = 0
    kv_bytes_moved: int = 0
    prefix_hit_rate: float | None = None   # prompt tokens served from the prefix cache (when enabled)
    prefix: dict | None = None             # prefix-reuse counters (pdlab.serving.prefixstats)

    def summary(self, slos=None) -> dict:
        from ..metrics import summarize
        out = summarize(self.sequences, slos, gpus=self.config.gpus)
        out["mode"] = self.config.mode
        out["gpus"] = self.config.gpus
        out["preemptions"] = sum(s.num_preemptions for s in self.sequences)
        if self.prefix_hit_rate is not None:
            out["prefix_hit_rate"] = self.prefix_hit_rate
        if self.prefix is not None:
            from ..prefixmetrics import prefix_summary
            out.update(prefix_summary(self))
        if self.config.mode == "disaggregated":
            out["kv_transfers"] = self.transfers
            out["kv_bytes_moved"] = self.kv_bytes_moved
            cfg = self.config
            out["prefill_tp"], out["decode_tp"] = cfg.pool_tp("prefill"), cfg.pool_tp("decode")
            out["first_token_from"], out["proxy_overhead_s"] = cfg.first_token_from, cfg.proxy_overhead_s
        return out


def _bar(total: int):
    from ..progress import bar
    return bar(total, desc="simulate", unit="req")


class Cluster:
    def __init__(self, config: ServingConfig, executor_factory: ExecutorFactory,
                 num_blocks: int | dict[str, int] | None = None, clock: str = "", on_step: StepHook | None = None,
                 recompute_s=None):
        """``num_blocks``: KV blocks per worker, or per role (pools of different TP hold different
        caches)."""
        self.config = cfg = config.validate()
        num_blocks = num_blocks or cfg.num_blocks
        if not num_blocks:
            raise ValueError("Cluster needs num_blocks (or config.num_blocks): the KV cache size per worker")
        per_role = num_blocks if isinstance(num_blocks, dict) else None
        self.num_blocks = max(per_role.values()) if per_role else num_blocks
        self.clock, self.on_step = clock, on_step
        self.workers: list[Worker] = []
        self.proxy_overhead_s = cfg.proxy_overhead_s
        self.first_token_from_decode = cfg.mode == "disaggregated" and cfg.first_token_from == "decode"

        def worker(name, role, sched_cls, inbound=None, **kw):
            nb = per_role[role] if per_role else num_blocks
            bm = BlockManager(nb, cfg.block_size, cfg.prefix_cache)
            w = Worker(len(self.workers), name, role, sched_cls(bm, cfg.max_num_seqs, **kw),
                       executor_factory(name, role, nb, cfg.block_size), inbound)
            self.workers.append(w)
            return w

        if cfg.mode == "disaggregated":
            chunk = cfg.chunk_size or 8192
            gbps, lat = parse_link(cfg.link)
            self.prefill = [worker(f"prefill{i}", "prefill", PrefillOnlyScheduler, token_budget=chunk)
                            for i in range(cfg.prefill_gpus)]
            self.decode = [worker(f"decode{i}", "decode", DecodeOnlyScheduler,
                                  inbound=Link(f"link->decode{i}", gbps, lat)) for i in range(cfg.decode_gpus)]
        else:
            if cfg.mode == "aggregated":
                kind, kw = AggregatedScheduler, {"max_batched_tokens": cfg.chunk_size or INF}
            else:
                kind, kw = ChunkedScheduler, {"token_budget": cfg.chunk_size or 512}
            self.prefill = [worker(f"gpu{i}", "mixed", kind, **kw) for i in range(cfg.replicas)]
            self.decode = []
        attach_host_tiers(cfg, self.workers, recompute_s)     # --offload-gb: evicted prefixes go to host memory
        self.index = build_index(cfg, self.workers)          # what the kv-aware router knows of the caches
        self.router = Router(cfg.router, self.prefill, cfg, self.index)
        self.local_prefills = 0
        # steady decodes as aggregates, where the clock reads only batch totals (exact either way)
        lazy = not cfg.exact_steps and on_step is None
        for w in self.workers:
            w.sched.lazy = lazy and getattr(w.executor, "lazy_decodes", False)

    # ---- the event loop -----------------------------------------------------------------------
    def run(self, requests: Iterable[Request]) -> RunResult:
        # cycle scans would rescan every token-time list: pausing them saves ~10% of a simulation
        with gc_paused():
            return self._run(requests)

    def _run(self, requests: Iterable[Request]) -> RunResult:
        seqs = sorted((Sequence(r) for r in requests), key=lambda s: (s.arrival, s.id))
        self.result = res = RunResult(self.config, seqs, [w.name for w in self.workers],
                                      [w.role for w in self.workers], self.num_blocks, self.clock)
        self.events = events = EventQueue(seqs)
        self.pending: deque = deque()       # (seq, prefill worker): KV waiting for decode-side memory
        # a bar on stderr for long runs (it shows after 2 s; requests arrived so far)
        bar = _bar(len(seqs)) if len(seqs) >= PROGRESS_MIN_REQUESTS else None
        shown, tick = 0, 0
        try:
            while events:
                now, ev = events.pop()
                if type(ev) is StepDone:
                    self._step_done(ev, now)
                elif type(ev) is TransferDone:
                    self._transfer_done(ev, now)
                else:
                    self._arrive(ev, now)
                tick += 1
                if bar is not None and not tick & 4095:
                    bar.update(events._next - shown)
                    shown = events._next
        finally:
            if bar is not None:
                bar.close()
        if self.config.prefix_cache:
            queried = sum(w.sched.bm.queries for w in self.workers)
            res.prefix_hit_rate = sum(w.sched.bm.hits for w in self.workers) / queried if queried else 0.0
            res.prefix = prefix_counters(self.workers, self.index, self.local_prefills)
        return res

    def _start(self, w: Worker, now: float, last: bool = False) -> None:
        """``last``: nothing else happens at ``now`` after this call (a steady worker may then run
        ahead, see ``_run_ahead``)."""
        if last and w.sched.lazy and not w.busy and not self.pending:
            self._run_ahead(w, now)
            return
        step = w.start(now)                                   # schedule -> run
        if step is not None:
            if self.on_step is not None:
                self.on_step(w, step.batch, step.result)
            self.events.push(now + max(step.result.seconds, 1e-9), step)

    def _run_ahead(self, w: Worker, now: float) -> None:
        """Fast-forward a worker whose iterations are its decode group alone: an iteration that
        would end before any other event (and finishes nobody) would be the very next event the
        loop pops, and its StepDone changes nothing but this worker's group; so run it here, in
        place, and go on. The first iteration that ends later, finishes a sequence, or is not
        steady is pushed as an ordinary StepDone. The per-iteration record is unchanged."""
        sched, g, bm, ex = w.sched, w.sched.group, w.sched.bm, w.executor
        steps, idx = self.result.steps, w.index
        t_heap, t_arrival = self.events.next_times()
        while True:
            n = sched.steady_decode()
            if not n:
                break
            end = now + max(ex.decode_seconds(n, g.ctx), 1e-9)
            if end >= t_heap or end >= t_arrival or (g.step + 1) in g.finish:
                batch = Batch(group_decodes=n, decode_context=g.ctx)
                g.inflight = True
                w.busy = True
                self.events.push(end, StepDone(w, batch, StepResult(end - now), now))
                return
            g.advance(n, end)                                 # the postprocess of that iteration
            steps.add(idx, now, end, 0, n, bm.num_used)
            now = end
        self._start(w, now)

    def _arrive(self, ev: Arrival, now: float) -> None:
        seq = ev.seq
        reason = self.decode[0].sched.rejects(seq) if self.decode else None
        if reason is not None:          # it could never finish on a decode worker
            seq.status = Status.REJECTED
            seq.reject_reason = reason
            return
        w = self.router.pick(seq, now)
        if self.config.disagg_threshold is not None:
            w = self._local_prefill(seq, now) or w
        if w.sched.add(seq):
            seq.worker = w.name
            self._start(w, now, last=True)

    def _local_prefill(self, seq: Sequence, now: float) -> Worker | None:
        """Per-request disaggregation: a prompt whose uncached part is short enough is prefilled
        on the decode worker that would cost least (no KV transfer, no prefill-pool queue)."""
        router, bs = self.router, self.config.block_size
        w = self.decode[router.choose(router.costs(seq, now, self.decode))]
        hashes = prefix_hashes(seq, bs)
        dev, _ = router.index.overlap(w.index, hashes, now)
        if seq.prompt_len - dev * bs > self.config.disagg_threshold:
            return None
        router.index.routed(w.index, hashes, now)
        self.local_prefills += 1
        return w

    def _step_done(self, step: StepDone, now: float) -> None:
        w = step.worker
        w.finish(step, now)                                   # postprocess
        b = step.batch
        self.result.steps.add(w.index, step.start, now, b.num_prefill_tokens, b.num_decode_tokens,
                                            w.sched.bm.num_used)
        if w.role == "prefill":
            self.pending.extend((seq, w) for seq in w.sched.take_handoffs())
        if self.decode:
            self._start_transfers(now)
        self._start(w, now, last=True)

    def _start_transfers(self, now: float) -> None:
        """Move waiting KV to the decode workers with room, emptiest first; stop at the first
        sequence that fits nowhere (back-pressure: prefill memory stays held until then)."""
        pending = self.pending
        while pending:
            seq, src = pending[0]
            for dst in sorted(self.decode, key=lambda d: -d.sched.bm.num_free):
                table = dst.sched.reserve_for_transfer(seq)
                if table is not None:
                    break
            else:
                return
            pending.popleft()
            seq.transfer_start, end = dst.inbound.send(now, seq.num_computed * dst.executor.kv_bytes_per_token)
            # the proxy's round trips (prefill response in, decode request out) come on top
            self.events.push(end + self.proxy_overhead_s, TransferDone(seq, src, dst, table))

    def _transfer_done(self, ev: TransferDone, now: float) -> None:
        seq, src, dst = ev.seq, ev.src, ev.dst
        dst.executor.transfer_kv(src.executor, seq.block_table, ev.blocks)
        src.sched.release(seq)
        seq.transfer_end = now
        if self.first_token_from_decode:
            # vLLM/SGLang P/D proxies return the first token from the decode instance, once the KV is there
            seq.move_first_token(now)
        dst.sched.accept(seq, ev.blocks)
        self.result.transfers += 1
        self.result.kv_bytes_moved += seq.num_computed * dst.executor.kv_bytes_per_token
        self._start(dst, now)
        self._start_transfers(now)
        self._start(src, now)
