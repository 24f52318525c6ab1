"""Argument checks shared by both backends. A kernel that reads past a block table or writes to
a slot outside the cache does not fail cleanly on a GPU (illegal memory access, a dead CUDA
context), so every public entry point checks here first and raises a ``ValueError`` naming the
argument. Checks that read tensor *values* copy a few numbers to the host; they are skipped while
a CUDA graph is being captured (no host copies allowed there), so check outside the graph."""

from __future__ import annotations

import torch

KV_DTYPES = (torch.float16, torch.bfloat16)
INDEX_DTYPES = (torch.int32, torch.int64)


# ---- what the Numba kernels support (the torch backend takes any head dim and group) --------
NUMBA_HEAD_DIMS = (64, 128)
NUMBA_MAX_GROUP = 8


def kind(t) -> str:
    """The Numba kernels' name for a 16-bit tensor's dtype: "bf16" or "f16"."""
    return "bf16" if t.dtype == torch.bfloat16 else "f16"


def check_supported(head_dim: int, group: int, what: str = "attention") -> None:
    """Raise a ``ValueError`` (before any launch) for shapes the Numba ``what`` kernel does not
    cover: head dims other than 64 and 128 (the kernels' lane and tile layouts), and more than 8
    query heads per KV head (their per-thread state)."""
    if head_dim not in NUMBA_HEAD_DIMS:
        raise ValueError(f"q: head_dim {head_dim} not supported by the Numba {what} kernel "
                         f"(supported: {NUMBA_HEAD_DIMS}); use get_backend('torch')")
    if group > NUMBA_MAX_GROUP:
        raise ValueError(f"q: {group} query heads per KV head; the Numba kernels support up to {NUMBA_MAX_GROUP}")


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _tensor(name, t, ndim=None, dtypes=None):
    _need(isinstance(t, torch.Tensor), f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if ndim is not None:
        _need(t.dim() == ndim, f"{name}: expected {ndim} dimensions, got shape {tuple(t.shape)}")
    if dtypes is not None:
        _need(t.dtype in dtypes, f"{name}: dtype {t.dtype} not in {[str(d) for d in dtypes]}")


def _same_device(**tensors):
    devs = {n: t.device for n, t in tensors.items()}
    first = next(iter(devs.values()))
    for n, d in devs.items():
        _need(d == first, f"{n}: on {d}, but other arguments are on {first}")


def check_cache(k_cache, v_cache):
    """k_cache, v_cache: [num_blocks, block_size, num_kv_heads, head_dim] fp16/bf16."""
    _tensor("k_cache", k_cache, 4, KV_DTYPES)
    _tensor("v_cache", v_cache, 4, KV_DTYPES)
    _need(k_cache.shape == v_cache.shape,
          f"v_cache: shape {tuple(v_cache.shape)} != k_cache shape {tuple(k_cache.shape)}")
    _need(k_cache.dtype == v_cache.dtype, f"v_cache: dtype {v_cache.dtype} != k_cache dtype {k_cache.dtype}")
    _need(k_cache.is_contiguous() and v_cache.is_contiguous(), "k_cache/v_cache: must be contiguous")
    return tuple(k_cache.shape)


def check_write_kv(k, v, k_cache, v_cache, slot_mapping):
    num_blocks, block_size, hkv, d = check_cache(k_cache, v_cache)
    _tensor("k", k, 3)
    _tensor("v", v, 3)
    _tensor("slot_mapping", slot_mapping, 1, INDEX_DTYPES)
    _need(tuple(k.shape[1:]) == (hkv, d),
          f"k: shape {tuple(k.shape)} does not match the cache's [*, {hkv}, {d}]")
    _need(v.shape == k.shape, f"v: shape {tuple(v.shape)} != k shape {tuple(k.shape)}")
    _need(slot_mapping.shape[0] == k.shape[0],
          f"slot_mapping: {slot_mapping.shape[0]} slots for {k.shape[0]} tokens")
    _need(k.dtype == k_cache.dtype and v.dtype == k_cache.dtype,
          f"k/v: dtype {k.dtype}/{v.dtype} != cache dtype {k_cache.dtype}")
    _same_device(k=k, v=v, k_cache=k_cache, v_cache=v_cache, slot_mapping=slot_mapping)
    if k.shape[0] and not _capturing():
        hi, lo = int(slot_mapping.max()), int(slot_mapping.min())
        n = num_blocks * block_size
        _need(hi < n and lo >= -1,
              f"slot_mapping: slots must lie in [0, {n}) (or -1 to skip); got min {lo}, max {hi}")


def _check_tables(block_tables, seq_lens, num_seqs, block_size, num_blocks):
    _tensor("block_tables", block_tables, 2, (torch.int32,))
    _tensor("seq_lens", seq_lens, 1, (torch.int32,))
    _need(seq_lens.shape[0] == num_seqs, f"seq_lens: {seq_lens.shape[0]} entries for {num_seqs} sequences")
    _need(block_tables.shape[0] == num_seqs,
          f"block_tables: {block_tables.shape[0]} rows for {num_seqs} sequences")
    _need(block_tables.is_contiguous() and seq_lens.is_contiguous(), "block_tables/seq_lens: must be contiguous")
    if num_seqs == 0 or _capturing():
        return None
    lens = seq_lens.cpu()
    _need(int(lens.min()) >= 1, f"seq_lens: every sequence needs at least 1 token, got min {int(lens.min())}")
    need_blocks = (lens + block_size - 1) // block_size  # [num_seqs]
    _need(int(need_blocks.max()) <= block_tables.shape[1],
          f"block_tables: {block_tables.shape[1]} columns, but seq_lens needs up to {int(need_blocks.max())} "
          f"blocks of {block_size}")
    bt = block_tables.cpu()
    cols = torch.arange(bt.shape[1])[None, :]
    used = bt[cols < need_blocks[:, None]]  # only the entries the kernel will read
    if used.numel():
        _need(int(used.min()) >= 0 and int(used.max()) < num_blocks,
              f"block_tables: block ids must lie in [0, {num_blocks}); got {int(used.min())}..{int(used.max())}")
    return lens


def check_prefill(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale):
    """Returns (num_seqs, max_q_len) (max_q_len is None while capturing a graph)."""
    num_blocks, block_size, hkv, d = check_cache(k_cache, v_cache)
    _tensor("q", q, 3, KV_DTYPES + (torch.float32,))
    _need(q.shape[2] == d, f"q: head_dim {q.shape[2]} != cache head_dim {d}")
    _need(q.shape[1] % hkv == 0, f"q: {q.shape[1]} query heads is not a multiple of {hkv} KV heads")
    _tensor("cu_seqlens_q", cu_seqlens_q, 1, (torch.int32,))
    _need(cu_seqlens_q.shape[0] >= 1, "cu_seqlens_q: needs num_seqs + 1 entries")
    num_seqs = cu_seqlens_q.shape[0] - 1
    _need(isinstance(scale, (int, float)), f"scale: expected a Python float, got {type(scale).__name__}")
    _same_device(q=q, k_cache=k_cache, block_tables=block_tables, cu_seqlens_q=cu_seqlens_q, seq_lens=seq_lens)
    lens = _check_tables(block_tables, seq_lens, num_seqs, block_size, num_blocks)
    if lens is None:
        return num_seqs, None
    cu = cu_seqlens_q.cpu().to(torch.int64)
    qlens = cu[1:] - cu[:-1]
    _need(int(cu[0]) == 0 and int(cu[-1]) == q.shape[0],
          f"cu_seqlens_q: must run from 0 to total_q={q.shape[0]}, got {int(cu[0])}..{int(cu[-1])}")
    _need(bool((qlens >= 0).all()), "cu_seqlens_q: must be non-decreasing")
    _need(bool((qlens <= lens).all()),
          "seq_lens: each must include its query chunk (seq_len >= q_len); "
          f"got q_lens {qlens.tolist()[:8]} vs seq_lens {lens.tolist()[:8]}")
    return num_seqs, int(qlens.max()) if num_seqs else 0


def check_decode(q, k_cache, v_cache, block_tables, seq_lens, scale):
    num_blocks, block_size, hkv, d = check_cache(k_cache, v_cache)
    _tensor("q", q, 3, KV_DTYPES + (torch.float32,))
    _need(q.shape[2] == d, f"q: head_dim {q.shape[2]} != cache head_dim {d}")
    _need(q.shape[1] % hkv == 0, f"q: {q.shape[1]} query heads is not a multiple of {hkv} KV heads")
    _need(isinstance(scale, (int, float)), f"scale: expected a Python float, got {type(scale).__name__}")
    _same_device(q=q, k_cache=k_cache, block_tables=block_tables, seq_lens=seq_lens)
    _check_tables(block_tables, seq_lens, q.shape[0], block_size, num_blocks)
    return q.shape[0]


# ---- once per step, on the host --------------------------------------------------------------
def check_step(num_blocks: int, block_size: int, num_tokens: int, slot_mapping, cu_seqlens_q=None,
               prefill_seq_lens=None, prefill_block_tables=None, decode_seq_lens=None,
               decode_block_tables=None) -> None:
    """Everything the per-layer checks read from tensor *values*, checked once for a whole step
    on the host copies (numpy arrays) of the step's metadata, before they go to the device. An
    engine that calls this may then launch every layer's kernels with ``check=False``: the
    layers share these tensors, so checking them per layer only repeats the same host copies.

    slot_mapping [T]; cu_seqlens_q [n_p + 1], prefill_seq_lens [n_p], prefill_block_tables
    [n_p, w_p]; decode_seq_lens [n_d], decode_block_tables [n_d, w_d] (None where absent)."""
    import numpy as np

    def tables(name, lens, bt, num_seqs):
        lens, bt = np.asarray(lens), np.asarray(bt)
        _need(lens.shape == (num_seqs,), f"{name}seq_lens: {lens.shape[0]} entries for {num_seqs} sequences")
        _need(bt.ndim == 2 and bt.shape[0] == num_seqs,
              f"{name}block_tables: shape {bt.shape} for {num_seqs} sequences")
        if not num_seqs:
            return lens
        _need(int(lens.min()) >= 1, f"{name}seq_lens: every sequence needs at least 1 token, got min {int(lens.min())}")
        need = (lens.astype(np.int64) + block_size - 1) // block_size
        _need(int(need.max()) <= bt.shape[1],
              f"{name}block_tables: {bt.shape[1]} columns, but seq_lens needs up to {int(need.max())} "
              f"blocks of {block_size}")
        used = bt[np.arange(bt.shape[1])[None, :] < need[:, None]]   # the entries a kernel reads
        if used.size:
            _need(int(used.min()) >= 0 and int(used.max()) < num_blocks,
                  f"{name}block_tables: block ids must lie in [0, {num_blocks}); got "
                  f"{int(used.min())}..{int(used.max())}")
        return lens

    n_prefill = 0
    if cu_seqlens_q is not None:
        cu = np.asarray(cu_seqlens_q).astype(np.int64)
        _need(cu.ndim == 1 and cu.size >= 1, "cu_seqlens_q: needs num_seqs + 1 entries")
        lens = tables("prefill_", prefill_seq_lens, prefill_block_tables, cu.size - 1)
        qlens = np.diff(cu)
        _need(int(cu[0]) == 0, f"cu_seqlens_q: must start at 0, got {int(cu[0])}")
        _need(bool((qlens >= 0).all()), "cu_seqlens_q: must be non-decreasing")
        _need(bool((qlens <= lens).all()),
              "prefill_seq_lens: each must include its query chunk (seq_len >= q_len); "
              f"got q_lens {qlens.tolist()[:8]} vs seq_lens {lens.tolist()[:8]}")
        n_prefill = int(cu[-1])
    n_decode = 0
    if decode_seq_lens is not None:
        n_decode = len(decode_seq_lens)
        tables("decode_", decode_seq_lens, decode_block_tables, n_decode)
    _need(n_prefill + n_decode == num_tokens,
          f"cu_seqlens_q: {n_prefill} prefill + {n_decode} decode tokens, but the step has {num_tokens}")
    n_slots = num_blocks * block_size
    slots = np.asarray(slot_mapping)
    _need(slots.shape == (num_tokens,), f"slot_mapping: {slots.shape[0] if slots.ndim else 0} slots for "
                                        f"{num_tokens} tokens")
    if slots.size:
        lo, hi = int(slots.min()), int(slots.max())
        _need(lo >= -1 and hi < n_slots,
              f"slot_mapping: slots must lie in [0, {n_slots}) (or -1 to skip); got min {lo}, max {hi}")
