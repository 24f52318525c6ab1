"""Exercise checks used by the labs: each compares the learner's answer with the package's
reference and prints "yours vs expected". A check never raises for a wrong answer: it prints
FAIL and returns False, so a workshop keeps flowing; an unattempted exercise prints TODO."""

from __future__ import annotations

import math


def report(name: str, ok: bool, yours, expected, hint: str = "") -> bool:
    mark = "PASS" if ok else "FAIL"
    print(f"[{mark}] {name}: yours = {yours!r}, expected = {expected!r}")
    if not ok and hint:
        print(f"       hint: {hint}")
    return ok


def attempt(name: str, fn, *args, **kwargs):
    """Call the learner's function; return (True, value) or (False, None) if still a stub."""
    try:
        return True, fn(*args, **kwargs)
    except NotImplementedError:
        print(f"[TODO] {name}: not attempted yet (the stub still raises NotImplementedError)")
        return False, None


def close(a: float, b: float, rel: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


# --- lab 02: attention kernels ----------------------------------------------------------------

def check_slot_of(slot_of) -> bool:
    """Ex 2.1: ``slot_of(block_table, pos, block_size)`` -> the KV-cache slot of token ``pos``."""
    table, bs = [7, 2, 9], 16
    positions = [0, 15, 16, 40]
    expected = [table[p // bs] * bs + p % bs for p in positions]
    ok, yours = attempt("Ex 2.1 slot_of", lambda: [int(slot_of(table, p, bs)) for p in positions])
    if not ok:
        return False
    return report("Ex 2.1 slot_of (positions 0, 15, 16, 40)", yours == expected, yours, expected,
                  hint="the block holding pos is block_table[pos // block_size]; pos % block_size is the row in it")


def check_online_softmax(fn) -> bool:
    """Ex 2.2: ``fn(q [D], k [L, D], v [L, D], scale, tile)`` equals softmax(q k^T * scale) v for
    every tile size, reading K/V one tile at a time."""
    import torch

    from .kernels import reference

    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(64, generator=g), torch.randn(50, 64, generator=g), torch.randn(50, 64, generator=g)
    k[7] += 4 * q                      # one large score: a kernel that forgets to rescale fails
    scale = 0.125
    expected = reference.attention(q[None, None], k[:, None], v[:, None], scale)[0, 0]
    worst = 0.0
    for tile in (1, 7, 16, 64):
        ok, yours = attempt("Ex 2.2 online softmax", fn, q, k, v, scale, tile)
        if not ok:
            return False
        yours = torch.as_tensor(yours, dtype=torch.float32).reshape(-1)
        if yours.shape != expected.shape:
            return report(f"Ex 2.2 online softmax (tile {tile}) shape", False, tuple(yours.shape),
                          tuple(expected.shape))
        err = float((yours - expected).abs().max())
        if not err < 1e-4:
            return report(f"Ex 2.2 online softmax (tile {tile}) max error", False, err, "< 1e-4",
                          hint="rescale l and acc by exp(m_old - m_new) before adding the new tile")
        worst = max(worst, err)
    return report("Ex 2.2 online softmax (tiles 1, 7, 16, 64) max error", True, f"{worst:.1e}", "< 1e-4")


def check_decode_traffic(fn) -> bool:
    """Ex 2.3: ``fn(batch, context, num_heads, num_kv_heads, head_dim, bytes_per_el)`` ->
    (bytes of K and V read, FLOPs) of one decode step of attention."""
    from .viz_kernels import decode_traffic

    cases = [(16, 4096, 32, 8, 128, 2), (1, 1000, 8, 8, 64, 2), (64, 1024, 32, 4, 128, 1)]
    for args in cases:
        ok, yours = attempt("Ex 2.3 decode traffic", fn, *args)
        if not ok:
            return False
        t = decode_traffic(*args)
        expected = (t["bytes"], t["flops"])
        if tuple(int(x) for x in yours) != expected:
            return report(f"Ex 2.3 decode traffic {args}", False, tuple(yours), expected,
                          hint="bytes: K and V, each [batch, context, num_kv_heads, head_dim]; "
                               "FLOPs: 2 per multiply-add, for q.k and for p*v, per query head")
    return report("Ex 2.3 decode traffic (3 shapes)", True, "all match", "all match")
