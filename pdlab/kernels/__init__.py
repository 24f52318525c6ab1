"""Attention kernels over a paged KV cache, behind one backend switch.

    from pdlab.kernels import get_backend
    kb = get_backend("numba")   # Numba CUDA kernels (GPU, or the CPU simulator)
    kb = get_backend("torch")   # paged gather + torch SDPA (fast reference, CPU fallback)
    kb.write_kv(k, v, k_cache, v_cache, slot_mapping)
    out = kb.prefill_attention(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale)
    out = kb.decode_attention(q, k_cache, v_cache, block_tables, seq_lens, scale)

Shapes (per layer):
    k_cache, v_cache  [num_blocks, block_size, num_kv_heads, head_dim]   fp16 or bf16
    slot of position p of a sequence = block_table[p // block_size] * block_size + p % block_size

Both backends take the same per-step hints as keywords, so an engine that validated a step once
(``validate.check_step``) can launch every layer without re-validation or host syncs:
``write_kv(..., check=False, padding=False)``, ``prefill_attention(..., max_q_len=,
check=False, cu_seqlens_host=, seq_lens_host=)``, ``decode_attention(..., max_seq_len=,
check=False)``. A backend ignores the hints it does not need.

Importing this package does not import numba: the torch backend must work where numba is
missing or broken. ``get_backend("numba")`` imports it on first use.
"""

from __future__ import annotations

import functools
import importlib
from types import SimpleNamespace

from . import torch_paged

BACKENDS = ("numba", "torch")
_cache: dict = {}
_reserved_wrappers = 0   # see reserve_wrappers


def reserve_wrappers(n: int) -> None:
    """Make room for at least ``n`` cached wrappers of persistent tensors (KV caches) in the
    Numba backend. It wraps each cache view it launches on once and keeps the wrapper in a small
    first-in, first-out cache; a launch on a view that has fallen out re-wraps it (tens of
    microseconds). An engine with L layers launches on up to 4 views per layer (write_kv's
    [slots, Hkv*D] and the attention kernels' flat view, of K and of V), so it reserves about
    4 L per executor. Reservations only grow. Does not import numba."""
    global _reserved_wrappers
    _reserved_wrappers = max(_reserved_wrappers, int(n))


def get_backend(name: str = "numba"):
    """An object with ``write_kv``, ``prefill_attention``, ``decode_attention`` (and ``name``)."""
    if name not in BACKENDS:
        raise ValueError(f"name: unknown backend {name!r}; choose one of {BACKENDS}")
    if name == "torch":
        return torch_paged
    if "numba" not in _cache:
        cache_ops = importlib.import_module(".cache_ops", __name__)   # imports numba here, lazily
        prefill = importlib.import_module(".prefill_attention", __name__)
        decode = importlib.import_module(".decode_attention", __name__)
        rope_write = importlib.import_module(".rope_write", __name__)
        _cache["numba"] = SimpleNamespace(
            name="numba",
            write_kv=cache_ops.write_kv,
            rope_write_kv=rope_write.rope_write_kv,   # optional: the model rotates + writes in torch without it
            prefill_attention=_numba_prefill(prefill.prefill_attention),
            decode_attention=_numba_decode(decode.decode_attention),
        )
    return _cache["numba"]


def _numba_prefill(fn):
    """The Numba prefill with the torch backend's host hints accepted (and not needed: the kernel
    reads cu_seqlens/seq_lens on the device; ``max_q_len`` sizes its grid without a sync)."""

    @functools.wraps(fn)
    def prefill_attention(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale, *args,
                          cu_seqlens_host=None, seq_lens_host=None, **kw):
        return fn(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens, scale, *args, **kw)

    return prefill_attention


def _numba_decode(fn):
    """The Numba decode with the torch backend's ``max_seq_len`` hint accepted (not needed: the
    split count comes from the block-table width, no sync)."""

    @functools.wraps(fn)
    def decode_attention(q, k_cache, v_cache, block_tables, seq_lens, scale, *args, max_seq_len=None, **kw):
        return fn(q, k_cache, v_cache, block_tables, seq_lens, scale, *args, **kw)

    return decode_attention


def default_backend() -> str:
    """"numba" where it can run (a GPU, or the simulator when NUMBA_ENABLE_CUDASIM=1), else "torch"."""
    import os

    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1":
        return "numba"
    try:
        import torch

        if not torch.cuda.is_available():
            return "torch"
        get_backend("numba")
        return "numba"
    except Exception:  # numba missing/broken: the engine still runs on torch
        return "torch"


__all__ = ["get_backend", "default_backend", "reserve_wrappers", "BACKENDS"]
