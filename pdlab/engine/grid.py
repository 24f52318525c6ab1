"""Synthetic batches and how long the real engine takes to run them: the measuring half of
``pdlab calibrate`` (``pdlab.engine.calibrate`` fits the cost model to what is measured here).

Batches hold sequences with fresh block tables over an executor's cache; timings are medians
of a few runs after a warm-up, taken round-robin over the grid so that a step follows a step of
another shape, as in serving.
"""

from __future__ import annotations

import statistics

import numpy as np

from ..request import Batch, Request, Sequence


# ---- synthetic batches ------------------------------------------------------------------------
class BatchFactory:
    """Builds batches of synthetic sequences with fresh block tables over an executor's cache
    (ids wrap around when the cache is exhausted: the timing does not depend on the contents)."""

    def __init__(self, num_blocks: int, block_size: int, vocab: int, seed: int = 0):
        self.num_blocks, self.block_size, self.vocab = num_blocks, block_size, vocab
        self.rng = np.random.default_rng(seed)
        self._next_block = 0
        self._next_id = 0

    def _seq(self, total_tokens: int, computed: int) -> Sequence:
        ids = tuple(int(t) for t in self.rng.integers(0, self.vocab, total_tokens))
        seq = Sequence(Request(self._next_id, 0.0, total_tokens, 1, ids))
        self._next_id += 1
        n = -(-total_tokens // self.block_size)
        if n > self.num_blocks:
            raise ValueError(f"a sequence of {total_tokens} tokens needs {n} blocks; the cache has {self.num_blocks}")
        if self._next_block + n > self.num_blocks:
            self._next_block = 0
        seq.block_table = list(range(self._next_block, self._next_block + n))
        self._next_block += n
        seq.num_computed = computed
        return seq

    def prefill(self, tokens: int, context: int = 0, batch: Batch | None = None, seqs: int = 1) -> Batch:
        """``seqs`` prompt chunks of ``tokens`` each, after ``context`` cached tokens."""
        b = batch if batch is not None else Batch()
        for _ in range(seqs):
            b.add_prefill(self._seq(context + tokens, context), tokens)
        return b

    def decode(self, num_seqs: int, context: int, batch: Batch | None = None) -> Batch:
        """``num_seqs`` decodes, each attending to ``context`` tokens (its newest included)."""
        b = batch if batch is not None else Batch()
        for _ in range(num_seqs):
            b.add_decode(self._seq(context, context - 1))
        return b

    def mixed(self, chunk: int, num_decodes: int, context: int) -> Batch:
        return self.decode(num_decodes, context, self.prefill(chunk))

    def serving(self, chunks, num_decodes: int, context: int) -> Batch:
        """A step as a scheduler issues it: prefill chunks ``[(tokens, cached context), ...]``
        (whole short prompts, or a slice of a long one) beside ``num_decodes`` decodes."""
        b = Batch()
        for tokens, ctx in chunks:
            self.prefill(tokens, ctx, b)
        return self.decode(num_decodes, context, b) if num_decodes else b


def time_batch(executor, batch: Batch, repeats: int = 5, warmup: int = 1) -> float:
    """Median measured seconds of ``executor.run(batch)`` (run never changes the sequences)."""
    for _ in range(warmup):
        executor.run(batch)
    return statistics.median(executor.run(batch).seconds for _ in range(repeats))


def time_batches(executor, batches: list[Batch], repeats: int = 5, warmup: int = 1) -> list[float]:
    """Median measured seconds of each batch, timed round-robin: every run follows a step of a
    different shape (as in serving), not a repeat of itself."""
    for _ in range(warmup):
        for b in batches:
            executor.run(b)
    times = [[] for _ in batches]
    for _ in range(repeats):
        for i, b in enumerate(batches):
            times[i].append(executor.run(b).seconds)
    return [statistics.median(t) for t in times]


def measure_prefill(executor, factory: BatchFactory, lengths, repeats: int = 3) -> list[float]:
    """Step seconds of a single prompt of each length (a whole prefill, no context)."""
    return [time_batch(executor, factory.prefill(n), repeats) for n in lengths]


def measure_decode(executor, factory: BatchFactory, batch_sizes, context: int, repeats: int = 3) -> list[float]:
    """Step seconds of one decode step for each batch size, every sequence at ``context`` tokens."""
    return [time_batch(executor, factory.decode(b, context), repeats) for b in batch_sizes]


# ---- the grid ---------------------------------------------------------------------------------
def grid(fast: bool, max_tokens: int) -> list[dict]:
    """Batch shapes to time. ``max_tokens`` caps the KV a single point holds."""
    if fast:
        prefill = [16, 64, 256]
        decode_b, decode_c = [1, 8, 32], [64, 256]
        mixed = [(64, 8, 128)]
        ctx_prefill = [(64, 256)]
        multi = [(4, 32)]
        serving = [([(48, 0), (32, 16)], 6, 96), ([(64, 128)], 4, 64)]
    else:
        prefill = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
        decode_b, decode_c = [1, 2, 4, 8, 16, 32, 64, 128, 256], [128, 512, 2048]
        mixed = [(128, 16, 512), (256, 32, 512), (512, 16, 1024), (512, 64, 512), (1024, 32, 1024),
                 (2048, 16, 512)]
        prefill.append(8192)
        ctx_prefill = [(512, 1024), (512, 3584), (256, 2048), (1024, 2048), (512, 7680)]
        multi = [(2, 256), (4, 128), (4, 256), (8, 64), (8, 256), (16, 128)]     # (prompts, tokens each)
        # (prefill chunks [(tokens, cached context)], decodes, decode context): steps as the
        # schedulers issue them for chat traffic (prompts 64-512, 64-160 output tokens) with a
        # few long prompts: a 512-token chunked budget filled after the decodes, whole prompts
        # batched together (aggregated), slices of a long prompt beside the running streams
        serving = [([(200, 0), (150, 0)], 24, 320), ([(256, 0), (128, 64)], 32, 400),
                   ([(480, 0)], 32, 256), ([(300, 0), (100, 200)], 8, 500),
                   ([(128, 0), (128, 0), (128, 0)], 64, 300), ([(64, 0), (96, 0), (200, 0), (100, 0)], 48, 256),
                   ([(448, 3584)], 64, 400), ([(496, 7680)], 16, 600), ([(512, 1024)], 40, 350),
                   ([(300, 0), (200, 0), (450, 0)], 0, 0), ([(120, 0), (380, 0), (250, 0), (90, 0)], 0, 0),
                   ([(8192, 0)], 0, 0), ([(2048, 0)], 48, 400), ([(24, 0), (40, 0)], 96, 350)]
    pts = [{"kind": "prefill", "tokens": n, "context": 0, "decodes": 0} for n in prefill if n <= max_tokens]
    pts += [{"kind": "prefill", "tokens": n, "context": 0, "decodes": 0, "seqs": k} for k, n in multi
            if k * n <= max_tokens]
    pts += [{"kind": "prefill", "tokens": n, "context": c, "decodes": 0} for n, c in ctx_prefill if n + c <= max_tokens]
    pts += [{"kind": "decode", "tokens": 0, "context": c, "decodes": b}
            for c in decode_c for b in decode_b if b * c <= max_tokens]
    pts += [{"kind": "mixed", "tokens": n, "context": c, "decodes": b} for n, b, c in mixed
            if n + b * c <= max_tokens]
    pts += [{"kind": "serving", "tokens": sum(n for n, _ in ch), "context": c, "decodes": b,
             "chunks": [list(x) for x in ch]} for ch, b, c in serving
            if sum(n + k for n, k in ch) + b * c <= max_tokens]
    return pts


def build_batch(f: BatchFactory, p: dict) -> Batch:
    if p["kind"] == "prefill":
        return f.prefill(p["tokens"], p["context"], seqs=p.get("seqs", 1))
    if p["kind"] == "decode":
        return f.decode(p["decodes"], p["context"])
    if p["kind"] == "serving":
        return f.serving(p["chunks"], p["decodes"], p["context"])
    return f.mixed(p["tokens"], p["decodes"], p["context"])


def measure_grid(executor, points: list[dict], repeats: int = 5, progress=None) -> list[dict]:
    """Time every point (round-robin, see ``time_batches``). Batches hold disjoint blocks of the
    cache as long as it has room, so round-robin runs do not overwrite each other's context."""
    f = BatchFactory(executor.num_blocks, executor.block_size, executor.cfg.vocab_size)
    batches = [build_batch(f, p) for p in points]
    secs = time_batches(executor, batches, repeats)
    out = []
    for p, b, s in zip(points, batches, secs):
        out.append({**p, "measured_s": s, "_batch": b})
        if progress:
            progress(out[-1])
    return out
