"""Independent simulations in parallel: one interface for a loop, local processes or a Dask cluster.

``sweep.map(fn, items, jobs=..., dask=...)`` returns ``[fn(x) for x in items]`` in the order of
``items`` whatever runs it: ``jobs=1`` runs in this process (no pickling, easiest to debug),
``jobs=N`` (``None``: every core) on a :class:`concurrent.futures.ProcessPoolExecutor`, and
``dask="tcp://host:8786"`` (or a ``distributed.Client``) on a Dask cluster, whose client speaks
the same futures interface. ``fn`` and the items must pickle for the last two (module-level
functions, configs, request lists).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

from .errors import PdlabError
from .progress import progress


def default_jobs() -> int:
    """The cores this process may use (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:          # macOS, Windows
        return max(1, os.cpu_count() or 1)


def check_jobs(jobs: int | None) -> int:
    if jobs is None:
        return default_jobs()
    if not isinstance(jobs, int) or jobs < 1:
        raise PdlabError(f"--jobs {jobs}: must be a positive number of processes")
    return jobs


def dask_client(address: Any):
    """A ``distributed.Client`` for ``address`` (a scheduler address, a cluster or a client)."""
    try:
        from distributed import Client
    except ImportError:
        raise PdlabError("--dask needs the optional extra: pip install 'pdlab[dask]'") from None
    if isinstance(address, Client):
        return address
    try:
        return Client(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise PdlabError(f"--dask {address}: cannot reach the Dask scheduler ({exc})") from None


def map(fn: Callable[[Any], Any], items: Iterable[Any], jobs: int | None = 1, dask: Any = None,
        desc: str | None = None) -> list:
    """``[fn(x) for x in items]``, in order, on this process, local processes or a Dask cluster."""
    items = list(items)
    if dask is not None:
        client = dask_client(dask)
        return _gather(client, fn, items, desc, owns=client is not dask)
    jobs = min(check_jobs(jobs), max(1, len(items)))
    if jobs == 1:
        return [fn(x) for x in progress(items, desc=desc)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return _gather(pool, fn, items, desc)


@contextmanager
def mapper(jobs: int | None = 1, dask: Any = None):
    """A reusable ``map``: yields ``run(fn, items) -> [fn(x) for x in items]`` on one pool of
    processes (or one Dask client) kept for the whole block, for searches that map round after
    round (``pdlab goodput``)."""
    if dask is not None:
        client = dask_client(dask)
        try:
            yield lambda fn, items: _ordered(client, fn, items)
        finally:
            if client is not dask:
                client.close()
        return
    jobs = check_jobs(jobs)
    if jobs == 1:
        yield lambda fn, items: [fn(x) for x in items]
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield lambda fn, items: _ordered(pool, fn, items)


def _ordered(executor, fn, items) -> list:
    futures = [executor.submit(fn, x) for x in items]
    return [f.result() for f in futures]


def _gather(executor: Executor, fn, items: Sequence, desc, owns: bool = False) -> list:
    from concurrent.futures import as_completed as cf_completed
    try:
        futures = [executor.submit(fn, x) for x in items]
        index = {id(f): i for i, f in enumerate(futures)}
        out: list = [None] * len(items)
        done = _as_completed(executor, futures, cf_completed)
        for f in progress(done, total=len(futures), desc=desc):
            out[index[id(f)]] = f.result()
        return out
    finally:
        if owns:
            executor.close()


def _as_completed(executor, futures, cf_completed):
    if hasattr(executor, "gather"):          # a distributed.Client: its futures are not stdlib ones
        from distributed import as_completed
        return as_completed(futures)
    return cf_completed(futures)
