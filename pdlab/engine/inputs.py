"""A decode step's inputs built from the scheduler's sequences with numpy, not per token in
Python: the last token of every sequence, its position, its cache slot, its context length and
its block table, for ``n`` sequences in a handful of vector operations.

    d = decode_inputs(batch.decodes, block_size)    # DecodeInputs of numpy arrays

Shapes: n = sequences, W = block-table columns (the longest context's blocks, or a bucket).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..request import Sequence


@dataclass
class DecodeInputs:
    ids: np.ndarray          # [n] int64: the one uncomputed token of each sequence
    positions: np.ndarray    # [n] int64: its position (= tokens already in the cache)
    slots: np.ndarray        # [n] int64: where its K/V go
    seq_lens: np.ndarray     # [n] int32: context after this step (positions + 1)
    block_tables: np.ndarray  # [n, W] int32: padded with block 0 (never read past seq_lens)

    @property
    def num_blocks_needed(self) -> int:
        """Columns of block table the longest sequence reads."""
        return self.block_tables.shape[1]


def decode_inputs(seqs: list[Sequence], block_size: int) -> DecodeInputs:
    """Inputs of one decode token per sequence. Raises ValueError (naming the sequence) when a
    sequence has other than one uncomputed token or too few blocks allocated."""
    n, bs = len(seqs), block_size
    computed = np.fromiter((s.num_computed for s in seqs), np.int64, n)
    total = np.fromiter((s.num_tokens for s in seqs), np.int64, n)
    bad = np.flatnonzero(total - computed != 1)
    if bad.size:
        s = seqs[int(bad[0])]
        raise ValueError(f"sequence {s.id}: a decode needs exactly one uncomputed token, "
                         f"has {s.num_tokens - s.num_computed}")
    ids = np.fromiter((_token_at(s, p) for s, p in zip(seqs, computed.tolist())), np.int64, n)
    need = computed // bs + 1                                           # [n] blocks read
    have = np.fromiter((len(s.block_table) for s in seqs), np.int64, n)
    short = np.flatnonzero(have < need)
    if short.size:
        i = int(short[0])
        raise ValueError(f"sequence {seqs[i].id}: position {int(computed[i])} needs block {int(need[i]) - 1} "
                         f"but its block table has {int(have[i])}: allocate before run()")
    width = int(need.max()) if n else 1
    tables = np.zeros((n, width), dtype=np.int32)
    # every sequence's first need[i] block ids, flattened in row order = the mask's order
    flat = np.fromiter(itertools.chain.from_iterable(s.block_table[:k] for s, k in zip(seqs, need.tolist())),
                       np.int32, int(need.sum()))
    tables[np.arange(width)[None, :] < need[:, None]] = flat
    slots = tables[np.arange(n), computed // bs].astype(np.int64) * bs + computed % bs
    return DecodeInputs(ids, computed, slots, (computed + 1).astype(np.int32), tables)


def _token_at(seq: Sequence, p: int) -> int:
    """Token id at position p: the prompt's, then the generated ones."""
    if p >= seq.prompt_len:
        return seq.output_ids[p - seq.prompt_len]
    prompt = seq.request.prompt_ids
    if prompt is None:
        raise ValueError(f"request {seq.id} has no prompt ids: the model executor needs them")
    return prompt[p]
