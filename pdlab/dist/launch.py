"""Start the worker processes, watch them, stop them.

Two ways in, one runtime:

- ``Runtime.spawn(...)`` (what ``pdlab serve-disagg`` does when run directly): this process is
  the coordinator; it hosts the TCPStore and starts one process per worker with
  ``torch.multiprocessing`` (spawn).
- under ``torchrun``: rank 0 is the coordinator and hosts the store on ``MASTER_PORT + 1``
  (``PDLAB_STORE_PORT`` overrides); ranks 1.. are workers 0.. (``Runtime.attach``). With
  torchrun's c10d rendezvous the ranks may live on several hosts.

Failure behaviour: the coordinator checks every few milliseconds that each spawned process is
alive and every worker's heartbeat is younger than ``--timeout``; otherwise it raises
``WorkerLost`` naming the worker, sets the store's abort key (workers that are still alive exit
on it) and terminates what it spawned. Workers exit on their own when the store disappears.
"""

from __future__ import annotations

import os
import socket
import time

from ..errors import PdlabError
from .mailbox import ABORT_KEY, COORDINATOR, Mailbox, connect, heartbeat_age, inbox
from .worker import WorkerOptions, main as worker_main


class WorkerLost(PdlabError):
    """A worker process died or stopped answering: the run is over (exit 1, not a usage error)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_names(prefill: int, decode: int, total: int) -> list[str]:
    """Process index -> the serving worker it runs in disaggregated mode (extras are spares)."""
    names = [f"prefill{i}" for i in range(prefill)] + [f"decode{i}" for i in range(decode)]
    return names + [f"worker{i}" for i in range(len(names), total)]


class Runtime:
    """The coordinator's side of the worker processes: their store, their mail, their health."""

    def __init__(self, store, world: int, opts: WorkerOptions, procs=None, names=None):
        self.store, self.world, self.opts, self.procs = store, world, opts, procs
        self.names = names or [f"worker{i}" for i in range(world)]
        self.timeout, self.num_blocks = opts.timeout, opts.num_blocks
        self.mail = Mailbox(store, COORDINATOR, opts.host, opts.port)
        self._checked = 0.0
        self.devices: list[str] = []
        self.kv_bytes_per_token = 0

    # ---- starting ---------------------------------------------------------------------------
    @classmethod
    def spawn(cls, workers: int, names=None, kill: tuple[int, int] | None = None, **kw) -> "Runtime":
        import torch.multiprocessing as mp
        os.environ["NCCL_NVLS_ENABLE"] = "0"            # inherited by every worker
        host, port = "127.0.0.1", _free_port()
        store = connect(host, port, True, kw.get("timeout", 60.0))
        procs = []
        ctx = mp.get_context("spawn")
        for i in range(workers):
            opts = worker_options(host, port, workers, kill_after=kill[1] if kill and kill[0] == i else 0, **kw)
            p = ctx.Process(target=worker_main, args=(i, opts), name=f"pdlab-worker{i}", daemon=False)
            p.start()
            procs.append(p)
        rt = cls(store, workers, worker_options(host, port, workers, **kw), procs, names)
        try:
            rt._wait_ready()
        except BaseException:
            rt.abort()
            raise
        return rt

    @classmethod
    def attach(cls, host: str, port: int, workers: int, names=None, **kw) -> "Runtime":
        """Coordinator of a torchrun job: the workers are the other ranks."""
        store = connect(host, port, True, kw.get("timeout", 60.0))
        rt = cls(store, workers, worker_options(host, port, workers, **kw), None, names)
        rt._wait_ready()
        return rt

    def _wait_ready(self) -> None:
        ready: dict[int, dict] = {}
        deadline = time.time() + self.timeout
        while len(ready) < self.world:
            msg = self.mail.poll(timeout=0.02)
            if msg is not None and msg["op"] == "ready":
                ready[msg["worker"]] = msg
                continue
            self.check(force=True, started=False)
            if time.time() > deadline:
                missing = [self.names[i] for i in range(self.world) if i not in ready]
                raise self.lost(f"workers {', '.join(missing)} did not start within {self.timeout:g} s (--timeout)")
        self.ready = [ready[i] for i in range(self.world)]
        self.devices = [ready[i]["device"] for i in range(self.world)]
        self.kv_bytes_per_token = ready[0]["kv_bytes_per_token"]

    # ---- health -----------------------------------------------------------------------------
    def lost(self, why: str) -> WorkerLost:
        return WorkerLost(why + "; stopped all workers")

    def check(self, force: bool = False, started: bool = True) -> None:
        """Raise ``WorkerLost`` if a worker process has exited or its heartbeat is too old."""
        now = time.perf_counter()
        if not force and now - self._checked < 0.02:
            return
        self._checked = now
        for i, p in enumerate(self.procs or ()):
            if p.exitcode is not None:
                how = f"was killed by signal {-p.exitcode}" if p.exitcode < 0 else f"exited with code {p.exitcode}"
                raise self.lost(f"worker {self.names[i]} (process {i}, pid {p.pid}) {how}")
        if started:
            for i in range(self.world):
                age = heartbeat_age(self.store, i)
                if age is not None and age > self.timeout:
                    raise self.lost(f"worker {self.names[i]} (process {i}) sent no heartbeat for {age:.1f} s (--timeout)")

    # ---- stopping ---------------------------------------------------------------------------
    def close(self) -> None:
        for i in range(self.world):
            self.mail.send(inbox(i), {"op": "stop"})
        stopped, deadline = set(), time.time() + self.timeout
        while len(stopped) < self.world and time.time() < deadline:
            msg = self.mail.poll(timeout=0.05)
            if msg is not None and msg["op"] == "stopped":
                stopped.add(msg["worker"])
            elif msg is None and any(p.exitcode not in (None, 0) for p in self.procs or ()):
                break
        for p in self.procs or ():
            p.join(timeout=self.timeout)
        self.abort()

    def abort(self) -> None:
        """Stop everything now: workers still alive see the abort key (or are terminated)."""
        try:
            self.store.set(ABORT_KEY, "1")
        except Exception:
            pass
        self.mail.close()
        for p in self.procs or ():
            if p.is_alive():
                p.terminate()
        deadline = time.time() + 5
        for p in self.procs or ():
            p.join(timeout=max(0.1, deadline - time.time()))
            if p.is_alive():
                p.kill()
                p.join(timeout=1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.close()
        else:
            self.abort()


def worker_options(host, port, world, *, device="cpu", backend="gloo", model="tiny", num_blocks=256,
                   block_size=16, timeout=60.0, attention="torch", threads=1, seed=0, kill_after=0) -> WorkerOptions:
    return WorkerOptions(host=host, port=port, world=world, device=device, backend=backend, model=model,
                         num_blocks=num_blocks, block_size=block_size, timeout=float(timeout),
                         attention=attention, threads=threads, seed=seed, kill_after=kill_after)


def torchrun_env() -> dict | None:
    """(rank, world, store host, store port, local device) when started by torchrun, else None."""
    if "TORCHELASTIC_RUN_ID" not in os.environ and "LOCAL_RANK" not in os.environ:
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    port = int(os.environ.get("PDLAB_STORE_PORT", int(os.environ["MASTER_PORT"]) + 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    if int(os.environ.get("GROUP_RANK", 0)) == 0:   # node 0's first local rank is the coordinator
        local -= 1
    return {"rank": rank, "world": world, "host": os.environ["MASTER_ADDR"], "port": port, "local": max(local, 0)}
