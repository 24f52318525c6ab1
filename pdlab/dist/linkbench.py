"""The backend's own bandwidth on the link the KV crosses: point-to-point send/recv between
workers 0 and 1, and all-gather over every worker (run inside the worker processes, on their
devices, by ``bench/disagg_nccl.py``)."""

from __future__ import annotations

import time

import torch
import torch.distributed as dist


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_seconds(op, iters: int, repeats: int, device) -> float:
    """Seconds per ``op()``, best of ``repeats`` rounds of ``iters`` calls, every rank starting
    together."""
    best = float("inf")
    for _ in range(repeats):
        dist.barrier()
        _sync(device)
        t = time.perf_counter()
        for _ in range(iters):
            op()
        _sync(device)
        best = min(best, (time.perf_counter() - t) / iters)
    return best


def run_bench(worker: int, device, spec: dict) -> dict:
    """``spec``: sizes (bytes), iters, warmup. Returns per size the receiver's seconds per message
    (p2p) and every rank's seconds per all-gather, best of ``repeats`` rounds."""
    out = {"p2p": [], "all_gather": []}
    world = dist.get_world_size()
    for nbytes in spec["sizes"]:
        n = max(1, nbytes // 2)
        buf = torch.ones(n, dtype=torch.float16, device=device)
        iters = max(2, min(spec["iters"], int(spec["bytes_per_size"] // nbytes)))

        def p2p():
            if worker == 0:
                dist.send(buf, 1)
            elif worker == 1:
                dist.recv(buf, 0)
        best = _best_seconds(p2p, iters, spec["repeats"], device)
        if worker == 1:
            out["p2p"].append({"bytes": 2 * n, "seconds": best, "gbps": 2 * n / best / 1e9})
        gathered = [torch.empty_like(buf) for _ in range(world)]
        best = _best_seconds(lambda: dist.all_gather(gathered, buf), iters, spec["repeats"], device)
        # bus bandwidth (nccl-tests' convention): bytes each rank receives per second
        out["all_gather"].append({"bytes": 2 * n, "seconds": best,
                                  "bus_gbps": 2 * n * (world - 1) / best / 1e9})
    dist.barrier()
    return out
