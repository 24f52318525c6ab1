"""The executor validates a step once, on the host, and sends its metadata in one copy: the
layers launch their kernels without re-validation or device read-backs, and get the same
tokens as with per-layer checks."""

from __future__ import annotations

import pytest
import torch

from pdlab.kernels import validate
from pdlab.engine.executor import ModelExecutor
from pdlab.request import Batch, Request, Sequence


def _seq(i, ids, computed, table):
    s = Sequence(Request(i, 0.0, len(ids), 4, tuple(ids)))
    s.num_computed = computed
    s.block_table = list(table)
    return s


def _mixed_batch():
    """Two prefill chunks (one after cached context) and two decodes, on scrambled pages."""
    b = Batch()
    b.add_prefill(_seq(0, range(1, 21), 0, [3, 1]), 20)
    b.add_prefill(_seq(1, range(30, 60), 16, [5, 0]), 14)
    b.add_decode(_seq(2, range(2, 12), 9, [7]))
    b.add_decode(_seq(3, range(4, 27), 22, [2, 6]))
    return b


def test_layers_skip_the_per_call_checks(tiny, monkeypatch):
    ex = ModelExecutor(tiny, num_blocks=8, block_size=16, device="cpu")
    calls = {"step": 0}
    real = validate.check_step

    def count_step(*a, **k):
        calls["step"] += 1
        return real(*a, **k)

    def refuse(*a, **k):
        raise AssertionError("a layer re-validated the step")

    monkeypatch.setattr(validate, "check_step", count_step)
    for name in ("check_write_kv", "check_prefill", "check_decode"):
        monkeypatch.setattr(validate, name, refuse)
    res = ex.run(_mixed_batch())
    assert calls["step"] == 1 and len(res.tokens) == 4      # 2 completing chunks + 2 decodes


def test_metadata_is_one_buffer(tiny):
    ex = ModelExecutor(tiny, num_blocks=8, block_size=16, device="cpu")
    ids, pos, attn, idx = ex.prepare(_mixed_batch())
    tensors = [ids, pos, idx, attn.slot_mapping, attn.prefill_cu_seqlens_q, attn.prefill_seq_lens,
               attn.prefill_block_tables, attn.decode_seq_lens, attn.decode_block_tables]
    assert len({t.untyped_storage().data_ptr() for t in tensors}) == 1
    assert attn.prefill_cu_seqlens_q.tolist() == [0, 20, 34] and attn.prefill_seq_lens.tolist() == [20, 30]
    assert attn.prefill_block_tables.tolist() == [[3, 1], [5, 0]]
    assert attn.decode_seq_lens.tolist() == [10, 23] and attn.decode_block_tables.tolist() == [[7, 0], [2, 6]]
    assert pos.tolist() == list(range(20)) + list(range(16, 30)) + [9, 22]
    assert attn.slot_mapping.tolist()[:2] == [48, 49] and attn.slot_mapping.tolist()[-2:] == [7 * 16 + 9, 6 * 16 + 6]
    assert ids.dtype == pos.dtype == idx.dtype == attn.slot_mapping.dtype == torch.int64
    assert attn.prefill_kwargs["max_q_len"] == 20 and attn.decode_kwargs["max_seq_len"] == 23
    assert attn.prefill_kwargs["check"] is False and attn.decode_kwargs["check"] is False


def test_same_tokens_with_per_layer_checks(tiny):
    a = ModelExecutor(tiny, num_blocks=8, block_size=16, device="cpu")
    b = ModelExecutor(tiny, num_blocks=8, block_size=16, device="cpu", check_layers=True)
    # the decodes' context must be in the cache first: prefill everything, then decode
    assert a.run(_mixed_batch()).tokens == b.run(_mixed_batch()).tokens


@pytest.mark.parametrize("bad,match", [
    (lambda b: b.decodes[0].block_table.__setitem__(0, 99), "block_tables"),
    (lambda b: b.prefills[1][0].block_table.__setitem__(1, -3), "block"),
])
def test_bad_block_tables_are_refused_before_any_kernel(tiny, bad, match):
    ex = ModelExecutor(tiny, num_blocks=8, block_size=16, device="cpu")
    batch = _mixed_batch()
    bad(batch)
    with pytest.raises(ValueError, match=match):
        ex.run(batch)


def test_check_step_names_the_argument():
    import numpy as np

    with pytest.raises(ValueError, match="slot_mapping"):
        validate.check_step(4, 16, 2, np.array([0, 64]), None, None, None,
                            np.array([1, 1], np.int32), np.array([[0], [1]], np.int32))
    with pytest.raises(ValueError, match="seq_len >= q_len"):
        validate.check_step(4, 16, 3, np.array([0, 1, 2]), np.array([0, 3], np.int32),
                            np.array([2], np.int32), np.array([[0]], np.int32))
    with pytest.raises(ValueError, match="decode_block_tables"):
        validate.check_step(4, 16, 1, np.array([0]), None, None, None,
                            np.array([40], np.int32), np.array([[0, 1]], np.int32))
