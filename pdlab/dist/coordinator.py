"""The coordinator: the serving loop of ``pdlab.serving.cluster.Cluster`` on the wall clock, with
every worker in its own process.

It builds the workers exactly as ``Cluster`` does (the same ``PrefillOnlyScheduler``,
``DecodeOnlyScheduler``, ``AggregatedScheduler`` or ``ChunkedScheduler``, the same router and
block managers), but a worker's executor is a ``RemoteExecutor``: a batch is sent to the worker
process as a command and its tokens come back as a reply. Time is real: an arrival is admitted
when the wall clock reaches it, a token is stamped when its reply reaches the coordinator (what a
client would see), and the metrics are the same ``RunResult.summary()`` as every other mode.

KV transfers follow the disaggregated mode's rules:

- back-pressure: a transfer starts only when ``DecodeOnlyScheduler.reserve_for_transfer`` finds
  free blocks on a decode worker; until then the prefill worker holds the KV (its blocks stay
  allocated) and the sequence waits in a FIFO, so nothing is lost;
- ``per-layer``: if a decode worker has room when the prompt's last chunk is scheduled (and no
  earlier sequence is waiting), its blocks are reserved first and the prefill worker sends each
  layer's KV as soon as that layer is computed; otherwise the held KV is sent later, layer by layer;
- ``per-block``: the held KV is sent after the prefill, one message per block.

A sequence joins its decode worker once its KV has landed there and the prefill step that made
it has been post-processed (the two replies may arrive in either order).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from ..config import ServingConfig
from ..request import Batch, Request, Sequence, Status, StepResult
from ..serving import Cluster, RunResult, StepRecord
from .mailbox import inbox


class RemoteExecutor:
    """What the cluster's Worker holds as its executor: the worker process's index and the bytes
    its cache holds per token. Batches are dispatched by the coordinator, never run here."""

    def __init__(self, index: int, kv_bytes_per_token: int):
        self.index, self.kv_bytes_per_token = index, kv_bytes_per_token

    def run(self, batch):
        raise RuntimeError("a remote worker's batches are dispatched by the coordinator")


@dataclass
class Transfer:
    xid: int
    src: object                           # serving Worker (prefill)
    dst: object                           # serving Worker (decode)
    mode: str
    overlapped: bool                      # sent layer by layer while its prefill ran
    issued: float
    seqs: list = field(default_factory=list)
    tables: dict = field(default_factory=dict)        # seq id -> blocks reserved on dst
    src_blocks: list = field(default_factory=list)
    handed: set = field(default_factory=set)          # post-processed on the prefill side
    cancelled: set = field(default_factory=set)       # finished at its first token
    landed: bool = False
    stamps: dict = field(default_factory=dict)

    @property
    def dst_blocks(self) -> list[int]:
        return [b for s in self.seqs for b in self.tables[s.id]]


class Coordinator:
    def __init__(self, runtime, config: ServingConfig, transfer: str = "per-layer", clock: str = "",
                 overlap: bool = True):
        # overlap=False: per-layer KV always waits for the prefill to end (what the wire alone takes)
        self.rt, self.transfer, self.clock, self.overlap = runtime, transfer, clock, overlap
        slots = iter(range(runtime.world))
        if config.replicas > runtime.world:
            raise ValueError(f"{config.mode} needs {config.replicas} workers, {runtime.world} are running")
        if config.first_token_from != "prefill" or config.disagg_threshold is not None:
            raise ValueError("serve-disagg returns the first token from the prefill worker and prefills every "
                             "prompt there (first_token_from='decode' and disagg_threshold are simulated only)")
        num_blocks = config.num_blocks
        if num_blocks > runtime.num_blocks:
            raise ValueError(f"{num_blocks} KV blocks per worker asked, the workers hold {runtime.num_blocks}")
        self.cluster = Cluster(config, lambda name, role, nb, bs: RemoteExecutor(next(slots), runtime.kv_bytes_per_token),
                               num_blocks, clock)
        self.config = self.cluster.config
        self.workers, self.decode = self.cluster.workers, self.cluster.decode

    # ---- the loop ---------------------------------------------------------------------------
    def run(self, requests: list[Request]) -> RunResult:
        seqs = sorted((Sequence(r) for r in requests), key=lambda s: (s.arrival, s.id))
        self.result = res = RunResult(self.config, seqs, [w.name for w in self.workers],
                                      [w.role for w in self.workers], self.cluster.num_blocks, self.clock)
        self.pending: deque = deque()            # (seq, prefill worker): KV held, waiting for decode room
        self.inflight: dict[int, tuple] = {}     # worker index -> (batch, start, early transfers)
        self.known: list[dict] = [dict() for _ in self.workers]   # seq id -> outputs the worker has
        self.drops: list[list] = [[] for _ in self.workers]
        self.xfers: dict[int, Transfer] = {}
        self.early: dict[int, Transfer] = {}     # seq id -> its overlapped transfer
        self.log: list[Transfer] = []
        self._xid = getattr(self.rt, "last_xid", 0)    # unique over the runtime's runs (late replies, gloo tags)
        mail, rt = self.rt.mail, self.rt
        self.t0 = t0 = time.perf_counter()
        i, n = 0, len(seqs)
        last_msg = time.perf_counter()
        while True:
            now = time.perf_counter() - t0
            while i < n and seqs[i].arrival <= now:
                self._arrive(seqs[i], now)
                i += 1
            wait = seqs[i].arrival - now if i < n else 0.05
            msg = mail.poll(timeout=max(0.0, min(wait, 0.02)))   # sleeps until mail, an arrival or a check
            if msg is not None:
                last_msg = time.perf_counter()
                self._handle(msg, time.perf_counter() - t0)
                continue
            if i == n and not self.inflight and not self.xfers:
                if not self.pending and all(s.status in (Status.FINISHED, Status.REJECTED) for s in seqs):
                    if all("sent" in tr.stamps for tr in self.log):    # every sender has reported too
                        break
                    if time.perf_counter() - last_msg > rt.timeout:
                        raise rt.lost(f"no reply from the workers in {rt.timeout:g} s (--timeout)")
                    rt.check()
                    continue
                self._start_transfers(now)
                for w in self.workers:
                    self._start(w, now)
                if not self.inflight and not self.xfers:     # nothing can move: a scheduling bug
                    raise RuntimeError(f"serving stalled with {len(self.pending)} transfers held and "
                                       f"{sum(s.status not in (Status.FINISHED, Status.REJECTED) for s in seqs)} "
                                       "sequences unfinished")
            rt.check()
            if (self.inflight or self.xfers) and time.perf_counter() - last_msg > rt.timeout:
                raise rt.lost(f"no reply from the workers in {rt.timeout:g} s (--timeout)")
        return res

    def _handle(self, msg: dict, now: float) -> None:
        op = msg["op"]
        if op == "step_done":
            self._step_done(msg, now)
        elif op == "recv_done":
            tr = self.xfers.get(msg["xid"])
            if tr is None:                 # a reply from an earlier, aborted run
                return
            tr.stamps.update(recv_posted=msg["posted"] - self.t0, landed=msg["landed"] - self.t0)
            tr.landed = True
            self._settle(tr, now)
        elif op == "send_done":
            tr = self.xfers.get(msg["xid"]) or next((t for t in reversed(self.log) if t.xid == msg["xid"]), None)
            if tr is not None:
                tr.stamps.update(send_posted=msg["posted"] - self.t0, sent=msg["done"] - self.t0)

    # ---- arrivals and steps -----------------------------------------------------------------
    def _arrive(self, seq: Sequence, now: float) -> None:
        reason = self.decode[0].sched.rejects(seq) if self.decode else None
        if reason is not None:
            seq.status, seq.reject_reason = Status.REJECTED, reason
            return
        w = self.cluster.router.pick(seq, now)
        if w.sched.add(seq):
            seq.worker = w.name
            self._start(w, now)

    def _start(self, w, now: float) -> None:
        if w.busy:
            return
        batch = w.sched.schedule(now)
        if not batch:
            return
        early = self._reserve_early(w, batch, now) if w.role == "prefill" else []
        known, entries, new = self.known[w.index], [], []
        for seq in [s for s, _ in batch.prefills] + batch.decodes:
            if seq.id not in known:
                new.append(seq.request)
                known[seq.id] = 0
            entries.append((seq.id, seq.num_computed, seq.num_tokens, list(seq.block_table),
                            seq.output_ids[known[seq.id]:]))
            known[seq.id] = len(seq.output_ids)
        for tr in early:                   # the receive is posted before the sends can start
            self._post_recv(tr)
        self.rt.mail.send(inbox(w.executor.index), {
            "op": "step", "step": len(self.result.steps), "new": new, "seqs": entries,
            "prefills": [(s.id, k) for s, k in batch.prefills], "decodes": [s.id for s in batch.decodes],
            "send": [{"dst": tr.dst.executor.index, "xid": tr.xid, "blocks": tr.src_blocks} for tr in early],
            "drop": self.drops[w.index]})
        self.drops[w.index] = []
        w.busy = True
        self.inflight[w.index] = (batch, now, early)

    def _step_done(self, msg: dict, now: float) -> None:
        w = self.workers[msg["worker"]]
        batch, start, early = self.inflight.pop(w.index)
        w.busy = False
        left = w.sched.postprocess(batch, StepResult(msg["seconds"], msg["tokens"]), now)
        self.result.steps.append(StepRecord(w.index, start, now, batch.num_prefill_tokens, len(batch.decodes),
                                            w.sched.bm.num_used))
        for seq in left:
            if seq.status is Status.FINISHED:
                self._forget(w, seq)
        for tr in early:
            tr.stamps["prefill_end"] = msg["t_end"] - self.t0      # the worker's clock (same host)
            for seq in tr.seqs:
                if seq.status is Status.FINISHED:
                    tr.cancelled.add(seq.id)
        if w.role == "prefill":
            for seq in w.sched.take_handoffs():
                tr = self.early.get(seq.id)
                if tr is None:
                    self.pending.append((seq, w))
                else:
                    tr.handed.add(seq.id)
            for tr in early:
                self._settle(tr, now)
        if self.decode:                    # a finished stream may have freed decode blocks
            self._start_transfers(now)
        self._start(w, now)

    # ---- KV transfers -----------------------------------------------------------------------
    def _new_transfer(self, src, dst, overlapped: bool, now: float) -> Transfer:
        self._xid += 1
        self.rt.last_xid = self._xid
        tr = Transfer(self._xid, src, dst, self.transfer, overlapped, now)
        self.xfers[tr.xid] = tr
        self.log.append(tr)
        return tr

    def _pick_dst(self, seq: Sequence, num_tokens: int | None = None):
        for dst in sorted(self.decode, key=lambda d: -d.sched.bm.num_free):
            table = dst.sched.reserve_for_transfer(seq, num_tokens)
            if table is not None:
                return dst, table
        return None, None

    def _reserve_early(self, w, batch: Batch, now: float) -> list[Transfer]:
        """Per-layer mode: reserve decode blocks for the prompts this step completes, so their KV
        can leave layer by layer while the step runs. Never jumps the queue of held KV."""
        if self.transfer != "per-layer" or not self.overlap or self.pending:
            return []
        groups: dict[int, Transfer] = {}
        for seq, k in batch.prefills:
            if seq.num_computed + k != seq.num_tokens or seq.num_tokens + 1 >= seq.finish_at:
                continue                   # not its last chunk, or its first token is its last
            dst, table = self._pick_dst(seq, seq.num_tokens)
            if dst is None:
                break                      # no room: this one and the rest are held (FIFO)
            tr = groups.get(dst.index) or groups.setdefault(dst.index, self._new_transfer(w, dst, True, now))
            tr.seqs.append(seq)
            tr.tables[seq.id] = table
            tr.src_blocks += seq.block_table[:len(table)]
            self.early[seq.id] = tr
        return list(groups.values())

    def _post_recv(self, tr: Transfer) -> None:
        self.rt.mail.send(inbox(tr.dst.executor.index), {"op": "recv", "xid": tr.xid, "mode": tr.mode,
                                                          "src": tr.src.executor.index, "blocks": tr.dst_blocks})

    def _start_transfers(self, now: float) -> None:
        """Held KV to the decode workers with room, emptiest first; stop at the first sequence
        that fits nowhere (back-pressure: prefill memory stays held until then)."""
        while self.pending:
            seq, src = self.pending[0]
            dst, table = self._pick_dst(seq)
            if dst is None:
                return
            self.pending.popleft()
            tr = self._new_transfer(src, dst, False, now)
            tr.seqs.append(seq)
            tr.tables[seq.id] = table
            tr.src_blocks = seq.block_table[:len(table)]
            tr.handed.add(seq.id)
            self._post_recv(tr)
            self.rt.mail.send(inbox(src.executor.index), {"op": "send", "xid": tr.xid, "mode": tr.mode,
                                                          "dst": dst.executor.index, "blocks": tr.src_blocks})

    def _settle(self, tr: Transfer, now: float) -> None:
        """Once the KV has landed and the prefill side is done with a sequence, it decodes."""
        if not tr.landed:
            return
        for seq in list(tr.seqs):
            if seq.id in tr.cancelled:
                tr.dst.sched.cancel_transfer(tr.tables[seq.id])
            elif seq.id in tr.handed:
                tr.src.sched.release(seq)
                self._forget(tr.src, seq)
                seq.transfer_start, seq.transfer_end = tr.issued, now
                tr.dst.sched.accept(seq, tr.tables[seq.id])
                self.result.transfers += 1
                self.result.kv_bytes_moved += seq.num_computed * tr.dst.executor.kv_bytes_per_token
            else:
                continue                   # its prefill step's reply has not arrived yet
            tr.seqs.remove(seq)
            tr.stamps.setdefault("tokens", 0)
            tr.stamps["tokens"] += seq.num_computed if seq.id not in tr.cancelled else 0
            tr.stamps["blocks"] = tr.stamps.get("blocks", 0) + len(tr.tables[seq.id])
            tr.stamps["sequences"] = tr.stamps.get("sequences", 0) + 1
            self.early.pop(seq.id, None)
        if not tr.seqs:
            self.xfers.pop(tr.xid, None)
            self._start(tr.dst, now)
            self._start_transfers(now)
            self._start(tr.src, now)

    def _forget(self, w, seq: Sequence) -> None:
        if self.known[w.index].pop(seq.id, None) is not None:
            self.drops[w.index].append(seq.id)

    # ---- what the transfers took ------------------------------------------------------------
    def transfer_log(self) -> list[dict]:
        """One record per transfer (seconds since the run started, this host's clock)."""
        out = []
        bpt = self.rt.kv_bytes_per_token
        blk = self.config.block_size * bpt
        for tr in self.log:
            s = tr.stamps
            if "landed" not in s:
                continue
            start = max(s.get("send_posted", tr.issued), s.get("recv_posted", tr.issued)) if not tr.overlapped \
                else s.get("recv_posted", tr.issued)
            out.append({"xid": tr.xid, "mode": tr.mode, "overlapped": tr.overlapped,
                        "sequences": s.get("sequences", 0), "tokens": s.get("tokens", 0), "blocks": s.get("blocks", 0),
                        "bytes": s.get("blocks", 0) * blk, "issued": tr.issued, "start": start,
                        "landed": s["landed"], "prefill_end": s.get("prefill_end"),
                        "seconds": s["landed"] - start,
                        # what the transfer adds after the prefill has ended (0 when the last layer
                        # landed before the step finished its sampling)
                        "exposed_s": max(0.0, s["landed"] - (s["prefill_end"] if tr.overlapped and "prefill_end" in s
                                                             else start))})
        return out
