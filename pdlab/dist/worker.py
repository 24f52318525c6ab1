"""A worker process: one device, one ``ModelExecutor`` (model + paged KV cache), no scheduler.

The coordinator decides everything (it runs the same scheduler classes as the single-process
modes); a worker runs what it is told, in order:

    step   run a Batch (sequences are mirrored here: a new one arrives whole, then only what
           changed), optionally sending some sequences' KV layer by layer as the prefill runs
    send   send KV blocks it holds to a decode worker (the prefill finished earlier)
    recv   post the receives of a transfer into staging buffers; when all have landed, copy
           them into the reserved blocks and report it
    bench  time the backend's own send and all-gather (bench/disagg_nccl.py)
    stop   leave

Replies go to the coordinator's inbox. Sends and receives run asynchronously (``isend`` /
``irecv``), so a decode worker keeps decoding while KV for the next sequences arrives.
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
import time
import traceback

from . import kvwire
from .mailbox import COORDINATOR, Heartbeat, Mailbox, connect, inbox


class WorkerOptions(dict):
    """Picklable settings the launcher hands each worker (a dict with attribute access)."""
    __getattr__ = dict.__getitem__


def pick_device(opts, worker: int):
    import torch
    if opts.device == "cpu":
        return torch.device("cpu")
    n = torch.cuda.device_count()
    if n == 0:
        raise RuntimeError("--device cuda but this host has no CUDA GPU")
    local = int(os.environ.get("PDLAB_LOCAL_DEVICE", worker))   # torchrun: set from LOCAL_RANK
    return torch.device("cuda", local % n)


class WorkerProcess:
    def __init__(self, worker: int, opts):
        import torch
        import torch.distributed as dist

        from ..engine import model as M
        from ..engine.executor import ModelExecutor

        self.worker, self.opts = worker, opts
        torch.set_num_threads(opts.threads)
        self.device = pick_device(opts, worker)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.store = connect(opts.host, opts.port, False, opts.timeout)
        self.mail = Mailbox(self.store, inbox(worker), opts.host, opts.port)
        self.heartbeat = Heartbeat(opts.host, opts.port, worker, opts.timeout)
        self.heartbeat.start()
        from torch.distributed import PrefixStore
        dist.init_process_group(opts.backend, store=PrefixStore("pg", self.store), rank=worker,
                                world_size=opts.world, timeout=datetime.timedelta(seconds=opts.timeout))
        model = M.build(opts.model, device=self.device, seed=opts.seed)
        self.ex = ModelExecutor(model, opts.num_blocks, opts.block_size, backend=opts.attention,
                                device=self.device)
        self.seqs: dict = {}               # sequence id -> mirrored Sequence
        self.sending: list = []            # kvwire.Pending of sends in flight
        self.receiving: list = []          # (mode, kvwire.Pending) of receives in flight
        self.steps = 0
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        self.mail.send(COORDINATOR, {"op": "ready", "worker": worker, "device": name,
                                     "kv_bytes_per_token": self.ex.kv_bytes_per_token, "pid": os.getpid(),
                                     "nccl_nvls_enable": os.environ.get("NCCL_NVLS_ENABLE")})

    # ---- the loop ---------------------------------------------------------------------------
    def serve(self) -> None:
        kvwire.Pending.on_done = self.mail.wake      # a finished transfer wakes the loop
        while True:
            self._progress()
            msg = self.mail.poll(timeout=0.5)
            if msg is None:
                continue
            op = msg["op"]
            if op == "stop":
                self._drain()
                return
            getattr(self, "_" + op)(msg)
            self._progress()

    def _progress(self) -> bool:
        """Land finished receives, forget finished sends; True if anything happened."""
        moved = False
        for mode, p in [r for r in self.receiving if r[1].done]:
            self.receiving.remove((mode, p))
            if p.error:
                raise RuntimeError(f"KV transfer {p.xid} failed: {p.error}")
            kvwire.land(self.ex.kv_caches, mode, p)
            self.mail.send(COORDINATOR, {"op": "recv_done", "worker": self.worker, "xid": p.xid,
                                         "posted": p.posted, "landed": p.done_at, "reported": time.perf_counter()})
            moved = True
        for p in [s for s in self.sending if s.done]:
            self.sending.remove(p)
            if p.error:
                raise RuntimeError(f"KV transfer {p.xid} failed: {p.error}")
            self.mail.send(COORDINATOR, {"op": "send_done", "worker": self.worker, "xid": p.xid,
                                         "posted": p.posted, "done": p.done_at})
            moved = True
        return moved

    def _drain(self) -> None:
        deadline = time.time() + self.opts.timeout
        while (self.receiving or self.sending) and time.time() < deadline:
            self._progress()
            time.sleep(1e-3)

    # ---- commands ---------------------------------------------------------------------------
    def _step(self, msg) -> None:
        import torch

        from ..request import Batch, Sequence
        for req in msg["new"]:
            self.seqs[req.id] = Sequence(req)
        for sid, computed, tokens, table, out in msg["seqs"]:
            s = self.seqs[sid]
            s.num_computed, s.num_tokens, s.block_table = computed, tokens, table
            s.output_ids.extend(out)
        batch = Batch()
        for sid, n in msg["prefills"]:
            batch.add_prefill(self.seqs[sid], n)
        for sid in msg["decodes"]:
            batch.add_decode(self.seqs[sid])
        groups = msg.get("send") or []
        sent: list = []
        if groups:                       # per-layer KV, sent as each layer finishes
            idx = [torch.tensor(g["blocks"], dtype=torch.int64, device=self.device) for g in groups]

            t_first = []

            def layer_done(i):
                if not t_first:
                    t_first.append(time.perf_counter())
                for g, ix in zip(groups, idx):
                    w, buf = kvwire.send_layer(self.ex.kv_caches, i, ix, g["dst"], g["xid"])
                    sent.append((g["xid"], w, buf))
            self.ex.layer_done = layer_done
        try:
            result = self.ex.run(batch)
        finally:
            self.ex.layer_done = None
        t_end = time.perf_counter()
        for g in groups:
            mine = [(w, b) for x, w, b in sent if x == g["xid"]]
            self.sending.append(kvwire.Pending(g["xid"], [w for w, _ in mine], [b for _, b in mine],
                                               posted=t_first[0] if t_first else None))
        for sid in msg.get("drop", ()):
            self.seqs.pop(sid, None)
        self.steps += 1
        self.mail.send(COORDINATOR, {"op": "step_done", "worker": self.worker, "step": msg["step"],
                                     "seconds": result.seconds, "tokens": result.tokens, "t_end": t_end})
        if self.opts.kill_after and self.steps >= self.opts.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)          # the --kill-worker test hook

    def _send(self, msg) -> None:
        self.sending.append(kvwire.send_held(self.ex.kv_caches, msg["mode"], msg["blocks"], msg["dst"], msg["xid"]))

    def _recv(self, msg) -> None:
        self.receiving.append((msg["mode"], kvwire.post_recv(self.ex.kv_caches, msg["mode"], msg["blocks"],
                                                             msg["src"], msg["xid"])))

    def _drop(self, msg) -> None:
        for sid in msg["ids"]:
            self.seqs.pop(sid, None)

    def _bench(self, msg) -> None:
        from .linkbench import run_bench
        out = run_bench(self.worker, self.device, msg)
        self.mail.send(COORDINATOR, {"op": "bench_done", "worker": self.worker, "result": out})


def main(worker: int, opts) -> None:
    """Entry point of a worker process (spawned by the launcher, or a torchrun rank > 0)."""
    os.environ["NCCL_NVLS_ENABLE"] = "0"      # NVLink multicast stays off (the device machines need it)
    try:
        w = WorkerProcess(worker, opts)
        w.serve()
        w.heartbeat.stopped = True
        w.heartbeat.join(timeout=2)
        import torch.distributed as dist
        dist.destroy_process_group()
        w.mail.close()
        w.mail.send(COORDINATOR, {"op": "stopped", "worker": worker})
    except Exception as e:
        line = f"{type(e).__name__}: {e}".splitlines()[0]
        print(f"pdlab: worker {worker} failed: {line}", file=sys.stderr)
        if os.environ.get("PDLAB_DEBUG"):
            traceback.print_exc()
        os._exit(1)
