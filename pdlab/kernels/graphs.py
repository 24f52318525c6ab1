"""Decode step as a CUDA graph.

A Numba launch costs tens of microseconds of Python and driver work, longer than the decode
kernel itself at small batch. A CUDA graph records the launches once and replays them with one
call. Numba launches land in the graph because they go to torch's current stream
(``_numba.stream()``), and inside ``torch.cuda.graph()`` that is the capturing stream.

The graph replays on the same memory: update q, block_tables and seq_lens *in place*
(``g.q.copy_(new_q)``) and call ``replay()``; the result appears in ``g.out``.
"""

from __future__ import annotations

import torch

from . import validate
from .decode_attention import auto_splits, decode_attention


class DecodeGraph:
    def __init__(self, q, k_cache, v_cache, block_tables, seq_lens, scale, num_splits=None, **variant):
        validate.check_decode(q, k_cache, v_cache, block_tables, seq_lens, scale)  # once, eagerly
        self.q, self.k_cache, self.v_cache = q, k_cache, v_cache
        self.block_tables, self.seq_lens, self.scale = block_tables, seq_lens, scale
        self.variant = variant           # kernel variant options of decode_attention (benchmarks)
        # fixed split count: the graph's grid cannot change between replays
        self.num_splits = num_splits or auto_splits(q, k_cache, block_tables, **variant)
        self._run()                      # compile, load the module, wrap the cache: not capturable
        torch.cuda.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self._run()

    def _run(self):
        return decode_attention(self.q, self.k_cache, self.v_cache, self.block_tables, self.seq_lens,
                                self.scale, num_splits=self.num_splits, check=False, **self.variant)

    def replay(self):
        self.graph.replay()
        return self.out
