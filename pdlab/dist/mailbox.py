"""Control messages over a ``torch.distributed.TCPStore``: one inbox per process, heartbeats.

The KV cache itself never goes through the store (it crosses ``torch.distributed`` send/recv);
the store carries small pickled dicts: the coordinator's commands (run this batch, send or
receive these blocks) and the workers' replies (tokens, a transfer landed). An inbox is a
sequence of keys ``NAME/0, NAME/1, ...``: a sender claims the next index with the store's atomic
``add`` (so several workers can write to the coordinator's inbox), the owner reads them in order
and deletes each one.
"""

from __future__ import annotations

import datetime
import os
import pickle
import queue
import threading
import time

COORDINATOR = "coord"            # the coordinator's inbox; workers' are "w0", "w1", ...
ABORT_KEY = "abort"              # set by the coordinator when it stops everything
HEARTBEAT_S = 0.25               # how often a worker says it is alive


def inbox(worker: int) -> str:
    return f"w{worker}"


def connect(host: str, port: int, is_master: bool, timeout_s: float, world: int | None = None):
    """The store: the coordinator hosts it (``is_master``), every worker connects to it."""
    from torch.distributed import TCPStore
    return TCPStore(host, port, world, is_master, timeout=datetime.timedelta(seconds=timeout_s),
                    wait_for_workers=False)


class Mailbox:
    """Send to any inbox, read one's own. A listener thread, on a connection of its own, blocks
    in the store until the next message exists and queues it, so a process waiting for mail
    sleeps instead of polling the store (on a busy CPU polling steals time from the steps)."""

    def __init__(self, store, own: str, host: str | None = None, port: int | None = None):
        self.store, self.own = store, own
        self.queue: queue.Queue = queue.Queue()
        self._listener = None
        if host is not None:
            self._listener = threading.Thread(target=self._listen, args=(host, port), daemon=True, name=f"mail-{own}")
            self._listener.start()

    def close(self) -> None:
        """Release the listener (it must not be left blocked in the store when the process or the
        store goes away: the C++ error would abort the process)."""
        if self._listener is not None and self._listener.is_alive():
            try:
                self.send(self.own, {"op": "_close"})
            except Exception:
                return
            self._listener.join(timeout=5)

    def send(self, to: str, msg: dict) -> None:
        i = self.store.add(f"{to}/n", 1) - 1
        self.store.set(f"{to}/{i}", pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))

    def _listen(self, host: str, port: int) -> None:
        store = connect(host, port, False, LISTEN_TIMEOUT_S)
        i = 0
        while True:
            key = f"{self.own}/{i}"
            try:
                store.wait([key])
            except Exception:              # a very long silence (or the store is gone): look again
                if not _alive(store):
                    return
                continue
            msg = pickle.loads(store.get(key))
            store.delete_key(key)
            i += 1
            if msg.get("op") == "_close":
                return
            self.queue.put(msg)

    def wake(self) -> None:
        """Make a waiting ``poll`` return (something other than mail has happened)."""
        self.queue.put(None)

    def poll(self, timeout: float = 0.0) -> dict | None:
        """The next message, waiting up to ``timeout`` s; None if there is none yet."""
        try:
            return self.queue.get(timeout=timeout) if timeout > 0 else self.queue.get_nowait()
        except queue.Empty:
            return None


LISTEN_TIMEOUT_S = 24 * 3600.0     # the listener's connection waits as long as it takes


def _alive(store) -> bool:
    try:
        store.check([ABORT_KEY])
        return True
    except Exception:
        return False


class Heartbeat(threading.Thread):
    """A worker's pulse on its own store connection (a long step does not silence it), and its
    way out when the coordinator is gone or has aborted: the process exits, nothing hangs."""

    def __init__(self, host: str, port: int, worker: int, timeout_s: float):
        super().__init__(daemon=True, name=f"heartbeat-w{worker}")
        self.store = connect(host, port, False, timeout_s)
        self.key, self.timeout_s = f"hb/{worker}", timeout_s
        self.stopped = False             # set on a clean stop: the store may go away first

    def run(self) -> None:
        while not self.stopped:
            try:
                self.store.set(self.key, repr(time.time()))
                if self.store.check([ABORT_KEY]):
                    os._exit(3)
            except Exception:            # the store (the coordinator) is gone: stop at once
                if not self.stopped:
                    os._exit(3)
            time.sleep(HEARTBEAT_S)


def heartbeat_age(store, worker: int) -> float | None:
    """Seconds since ``worker`` last beat (None before its first beat)."""
    key = f"hb/{worker}"
    if not store.check([key]):
        return None
    return time.time() - float(store.get(key).decode())
