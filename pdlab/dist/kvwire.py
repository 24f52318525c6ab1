"""KV blocks on the wire: what one transfer sends, in which messages, and how it lands.

Two granularities (``--transfer``):

    per-layer  one message per layer: that layer's K and V of every block of the transfer,
               [2, n_blocks, block_size, Hkv, D]. When the decode worker had room before the
               prefill ran, layer i is sent as soon as layer i has written its KV, while layers
               i+1.. still compute (vLLM's P2P NCCL connector does this in ``save_kv_layer``).
    per-block  one message per KV block: all layers of that block, [L, 2, block_size, Hkv, D],
               sent once the prefill has finished (Mooncake/DistServe move blocks).

Both sides post their messages in the same order (the coordinator issues a transfer's send and
receive together and every worker runs its commands in order), which is what NCCL needs: its
point-to-point messages between two ranks match in order (tags are ignored). Gloo matches by
tag as well, so every message also carries a unique tag.
"""

from __future__ import annotations

import threading
import time

import torch
import torch.distributed as dist

MODES = ("per-layer", "per-block")
_TAG_PARTS = 1 << 12          # messages per transfer that get distinct tags


def tag(xid: int, part: int) -> int:
    return (xid * _TAG_PARTS + part) % (1 << 30)


def num_messages(mode: str, num_layers: int, num_blocks: int) -> int:
    return num_layers if mode == "per-layer" else num_blocks


def gather_layer(kv_caches, layer: int, idx: torch.Tensor) -> torch.Tensor:
    """Layer ``layer``'s K and V of blocks ``idx``: [2, n, block_size, Hkv, D] (a copy)."""
    k, v = kv_caches[layer]
    return torch.stack([k.index_select(0, idx), v.index_select(0, idx)])


def gather_blocks(kv_caches, idx: torch.Tensor) -> torch.Tensor:
    """Every layer of blocks ``idx``, block-major: [n, L, 2, block_size, Hkv, D]."""
    k0 = kv_caches[0][0]
    out = torch.empty((len(idx), len(kv_caches), 2) + tuple(k0.shape[1:]), dtype=k0.dtype, device=k0.device)
    for i, (k, v) in enumerate(kv_caches):
        out[:, i, 0] = k.index_select(0, idx)
        out[:, i, 1] = v.index_select(0, idx)
    return out


class Pending:
    """Messages in flight for one transfer on one side; a thread notes when the last completes
    (so the time is exact even while this process runs a step) and calls ``Pending.on_done``."""

    on_done = None                  # the worker's mailbox wake-up

    def __init__(self, xid: int, works: list, buffers: list, blocks: list[int] | None = None,
                 posted: float | None = None):
        self.xid, self.works, self.buffers, self.blocks = xid, works, buffers, blocks
        self.posted = time.perf_counter() if posted is None else posted    # before the first message
        self.done_at: float | None = None
        self.error: str | None = None
        threading.Thread(target=self._wait, daemon=True, name=f"kv-xfer-{xid}").start()

    def _wait(self) -> None:
        # gloo's point-to-point works only complete through wait() (is_completed stays False);
        # NCCL's wait() only orders streams, its is_completed() asks the GPU
        poll = dist.get_backend() == "nccl"
        try:
            for w in self.works:
                while poll and not w.is_completed():
                    time.sleep(5e-5)
                w.wait()
        except Exception as e:          # a peer died or the backend timed out
            self.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        self.done_at = time.perf_counter()
        if Pending.on_done is not None:
            Pending.on_done()

    @property
    def done(self) -> bool:
        return self.done_at is not None


def send_layer(kv_caches, layer: int, idx: torch.Tensor, dst: int, xid: int) -> tuple:
    buf = gather_layer(kv_caches, layer, idx)
    return dist.isend(buf, dst, tag=tag(xid, layer)), buf


def send_held(kv_caches, mode: str, blocks: list[int], dst: int, xid: int) -> Pending:
    """Send KV that already sits in the cache (the prefill finished earlier)."""
    t = time.perf_counter()
    idx = torch.tensor(blocks, dtype=torch.int64, device=kv_caches[0][0].device)
    works, bufs = [], []
    if mode == "per-layer":
        for i in range(len(kv_caches)):
            w, b = send_layer(kv_caches, i, idx, dst, xid)
            works.append(w)
            bufs.append(b)
    else:
        buf = gather_blocks(kv_caches, idx)               # [n, L, 2, bs, Hkv, D]
        for j in range(len(blocks)):
            works.append(dist.isend(buf[j], dst, tag=tag(xid, j)))
        bufs.append(buf)
    return Pending(xid, works, bufs, posted=t)


def post_recv(kv_caches, mode: str, blocks: list[int], src: int, xid: int) -> Pending:
    """Post every receive of one transfer into staging buffers (``land`` moves them into the
    cache once all have arrived)."""
    t = time.perf_counter()
    k0 = kv_caches[0][0]
    n, L = len(blocks), len(kv_caches)
    block = tuple(k0.shape[1:])                           # (block_size, Hkv, D)
    works, bufs = [], []
    if mode == "per-layer":
        for i in range(L):
            b = torch.empty((2, n) + block, dtype=k0.dtype, device=k0.device)
            works.append(dist.irecv(b, src, tag=tag(xid, i)))
            bufs.append(b)
    else:
        b = torch.empty((n, L, 2) + block, dtype=k0.dtype, device=k0.device)
        for j in range(n):
            works.append(dist.irecv(b[j], src, tag=tag(xid, j)))
        bufs.append(b)
    return Pending(xid, works, bufs, blocks, posted=t)


def land(kv_caches, mode: str, p: Pending) -> None:
    """Scatter a completed receive into the paged cache at its reserved blocks."""
    idx = torch.tensor(p.blocks, dtype=torch.int64, device=kv_caches[0][0].device)
    for i, (k, v) in enumerate(kv_caches):
        if mode == "per-layer":
            src_k, src_v = p.buffers[i][0], p.buffers[i][1]
        else:
            src_k, src_v = p.buffers[0][:, i, 0], p.buffers[0][:, i, 1]
        k.index_copy_(0, idx, src_k)
        v.index_copy_(0, idx, src_v)
