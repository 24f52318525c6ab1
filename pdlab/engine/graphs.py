"""Decode steps replayed from CUDA graphs, one graph per (batch bucket, block-table width bucket).

A decode step of a 1B model launches ~300 kernels (16 layers of norms, GEMMs, rotations, the
KV write and the attention kernel). Launched from Python, each costs tens of microseconds of
host time, far longer than most of those kernels run: the step is host-bound (measured on an
H100: 22-24 ms per step whatever the batch, against a 0.8-2.2 ms roofline). A CUDA graph records
the launches once and replays them with one call (~1 us per kernel on the GPU, no Python).

How (as vLLM does):
- The batch is padded up to a bucket of ``BATCH_BUCKETS`` and the block tables to a power-of-two
  width (at least ``MIN_WIDTH`` blocks): the graph's shapes, grids and split plan are fixed at
  capture, and one graph serves every batch that pads to its bucket. Padded rows write nothing
  (slot -1) and attend to one token of block 0; their outputs are dropped.
- Every input lives in one static device buffer per graph (ids, positions, slots, seq_lens,
  block tables), refreshed by ONE host-to-device copy from a pinned host buffer per step; the
  only synchronisation is reading the sampled tokens.
- The Numba kernels launch on torch's current stream (``pdlab.kernels._numba.stream``), which
  inside ``torch.cuda.graph()`` is the capturing stream: they land in the graph.
- Graphs are captured lazily, the first time a bucket is seen, into one shared memory pool
  (replays never overlap).

``capture=False`` runs the same static-buffer step eagerly instead of replaying a graph: the CPU
(tests) takes the same padding and buffer path the GPU replays.
"""

from __future__ import annotations

import numpy as np
import torch

from ..kernels import validate
from .inputs import decode_inputs
from .model import AttentionMetadata

BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256)
MIN_WIDTH = 16          # blocks: the narrowest block-table bucket (256 tokens of page 16)


def bucket(n: int, blocks: int) -> tuple[int, int] | None:
    """(padded batch, padded block-table width) for n sequences reading up to ``blocks`` blocks;
    None when n is past the largest batch bucket (the step then runs eagerly)."""
    rows = next((b for b in BATCH_BUCKETS if b >= n), None)
    if rows is None:
        return None
    width = MIN_WIDTH
    while width < blocks:
        width *= 2
    return rows, width


class _Static:
    """One graph's inputs: a device byte buffer viewed as the step's tensors, and its pinned
    host twin (same layout), so a step's inputs go over in one copy."""

    def __init__(self, rows: int, width: int, device):
        self.rows, self.width = rows, width
        sizes = [("ids", np.int64, (rows,)), ("positions", np.int64, (rows,)), ("slots", np.int64, (rows,)),
                 ("seq_lens", np.int32, (rows,)), ("block_tables", np.int32, (rows, width))]
        offs, total = [], 0
        for _, dt, shape in sizes:
            offs.append(total)
            total += -(-int(np.prod(shape)) * np.dtype(dt).itemsize // 16) * 16
        pin = device.type == "cuda"
        self.host = torch.zeros(total, dtype=torch.uint8, pin_memory=pin)
        self.dev = torch.zeros(total, dtype=torch.uint8, device=device)
        hb = self.host.numpy()
        self.h, self.d = {}, {}
        for (name, dt, shape), o in zip(sizes, offs):
            nbytes = int(np.prod(shape)) * np.dtype(dt).itemsize
            self.h[name] = hb[o:o + nbytes].view(dt).reshape(shape)
            self.d[name] = self.dev[o:o + nbytes].view(torch.int64 if dt == np.int64 else torch.int32).view(shape)
        self.fill_padding(0)

    def fill_padding(self, n: int):
        """Rows n.. as padding: token 0 at position 0, no slot (-1: nothing written), one token
        of context in block 0 (read, never used)."""
        h = self.h
        h["ids"][n:] = 0
        h["positions"][n:] = 0
        h["slots"][n:] = -1
        h["seq_lens"][n:] = 1
        h["block_tables"][n:] = 0

    def load(self, d) -> None:
        n, w = len(d.ids), d.block_tables.shape[1]
        h = self.h
        h["ids"][:n], h["positions"][:n], h["slots"][:n], h["seq_lens"][:n] = d.ids, d.positions, d.slots, d.seq_lens
        h["block_tables"][:n, :w] = d.block_tables
        h["block_tables"][:n, w:] = 0
        self.fill_padding(n)
        self.dev.copy_(self.host, non_blocking=True)     # the step's one host-to-device copy


class DecodeGraphs:
    """Decode steps of one ``ModelExecutor`` through captured graphs (or, ``capture=False``,
    the same static buffers run eagerly). ``run(seqs) -> [n] int64`` sampled tokens on the
    device, or None when the batch fits no bucket (the caller runs it eagerly)."""

    def __init__(self, executor, capture: bool = True, max_graphs: int = 64):
        self.ex = executor
        self.capture = capture
        self.max_graphs = max_graphs
        self.graphs: dict = {}             # (rows, width) -> (static inputs, graph or None, out ids)
        self.pool = None                   # memory pool the graphs share
        self.captures = self.replays = self.steps = 0
        if capture:
            from ..kernels import decode_attention as da
            # the decode kernel's arrival counters are allocated once, eagerly, big enough for
            # every bucket (a later, larger allocation would leave captured graphs pointing at
            # freed memory); the reference keeps this one alive for the graphs' lifetime
            cfg = executor.cfg
            self._counters = da.done_counters(BATCH_BUCKETS[-1] * cfg.num_kv_heads, executor.device)

    def _forward(self, st: _Static):
        ex = self.ex
        d = st.d
        attn = AttentionMetadata(backend=ex.backend, slot_mapping=d["slots"], num_prefill_tokens=0,
                                 decode_seq_lens=d["seq_lens"], decode_block_tables=d["block_tables"])
        # padding rows carry slot -1; the host built and checked everything else
        attn.write_kwargs = {"check": False, "padding": True}
        attn.decode_kwargs = {"check": False, "max_seq_len": st.width * ex.block_size}
        logits = ex.model(d["ids"], d["positions"], ex.kv_caches, attn)     # [rows, V] fp32
        return logits.argmax(dim=-1)                                        # [rows] greedy

    def _entry(self, key):
        entry = self.graphs.get(key)
        if entry is not None:
            return entry
        if len(self.graphs) >= self.max_graphs:
            return None
        st = _Static(*key, self.ex.device)
        graph = out = None
        if self.capture:
            # warm up on a side stream (compiles kernels, wraps the caches, sizes the allocator),
            # as torch's capture recipe asks, then capture the step
            side = torch.cuda.Stream(device=self.ex.device)
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._forward(st)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                out = self._forward(st)
            self.pool = graph.pool()
            self.captures += 1
        entry = self.graphs[key] = (st, graph, out)
        return entry

    def bucket_of(self, seqs):
        """The (rows, width) bucket a decode batch of these sequences runs in (None: none)."""
        need = max(s.num_computed // self.ex.block_size + 1 for s in seqs)
        return bucket(len(seqs), need)

    def run(self, seqs) -> torch.Tensor | None:
        ex = self.ex
        d = decode_inputs(seqs, ex.block_size)
        key = bucket(len(seqs), d.num_blocks_needed)
        entry = self._entry(key) if key is not None else None
        if entry is None:
            return None
        validate.check_step(ex.num_blocks, ex.block_size, len(d.ids), d.slots, None, None, None,
                            d.seq_lens, d.block_tables)
        st, graph, out = entry
        # the host buffer is rewritten here: the caller read the previous step's tokens (a sync),
        # so its copy out of it has finished
        st.load(d)
        self.steps += 1
        if graph is None:
            out = self._forward(st)
        else:
            graph.replay()
            self.replays += 1
        return out[:len(seqs)]
