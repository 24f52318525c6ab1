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
                  hint="which logical block holds position pos, which row inside it, and where does the "
                       "block table say that block lives?")


def check_online_softmax(fn) -> bool:
    """Ex 2.2: ``fn(q [D], k [L, D], v [L, D], scale, tile)`` equals softmax(q k^T * scale) v for
    every tile size, reading K/V one tile at a time."""
    import torch

    from ..kernels import reference

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
                          hint="when a tile raises the running max, the sums kept so far were taken against the old "
                               "max: what must happen to them before the tile is added?")
        worst = max(worst, err)
    return report("Ex 2.2 online softmax (tiles 1, 7, 16, 64) max error", True, f"{worst:.1e}", "< 1e-4")


def check_decode_traffic(fn) -> bool:
    """Ex 2.3: ``fn(batch, context, num_heads, num_kv_heads, head_dim, bytes_per_el)`` ->
    (bytes of K and V read, FLOPs) of one decode step of attention."""
    from ..viz.kernels import decode_traffic

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


# --- labs 03-06: KV cache, interference, chunked prefill, disaggregation ----------------------

def check_kv_bytes_per_token(fn) -> bool:
    """Ex 3.1: ``fn(model: ModelSpec) -> int``: bytes of K and V one token occupies, all layers."""
    from ..models import MODELS

    names = ["llama-3-8b", "llama-2-7b", "opt-13b", "llama-2-70b", "tiny"]
    for name in names:
        m = MODELS[name]
        ok, yours = attempt("Ex 3.1 KV bytes per token", fn, m)
        if not ok:
            return False
        expected = m.kv_bytes_per_token
        if yours is None or int(yours) != expected:
            return report(f"Ex 3.1 KV bytes per token ({name})", False, yours, expected,
                          hint="what does one token leave in the cache, in every layer? Count the vectors (and "
                               "whose heads they belong to in a GQA model), their length, their bytes")
    m = MODELS["llama-3-8b"]
    return report(f"Ex 3.1 KV bytes per token ({len(names)} presets; llama-3-8b)", True,
                  int(fn(m)), m.kv_bytes_per_token)


def check_max_decode_batch(fn) -> bool:
    """Ex 3.2: ``fn(cost_model, context) -> int``: sequences of ``context`` tokens whose KV fits."""
    from ..sim import CostModel

    cases = [("h100", "llama-3-8b", 4096), ("a100-80gb", "llama-2-7b", 2048), ("l4", "llama-3.2-1b", 8192)]
    for gpu, model, ctx in cases:
        cm = CostModel.from_names(gpu, model)
        ok, yours = attempt("Ex 3.2 max decode batch", fn, cm, ctx)
        if not ok:
            return False
        expected = cm.kv_capacity_tokens() // ctx
        if yours is None or int(yours) != expected:
            return report(f"Ex 3.2 max decode batch ({model} on {gpu}, {ctx} tokens)", False, yours, expected,
                          hint="how many tokens of KV fit in the room the cost model leaves, and how many does "
                               "each sequence hold?")
    return report("Ex 3.2 max decode batch (3 cases)", True, "all match", "all match")


def check_frozen_share(fn) -> bool:
    """Ex 4.1: ``fn(result, threshold_s) -> float``: share of finished requests whose longest gap
    between two tokens exceeds ``threshold_s``."""
    import numpy as np

    from ..analysis import max_gaps
    from .experiments import simulate

    r = simulate("chat-long", 120, 6.0, seed=3, mode="aggregated")
    for thr in (0.05, 0.1, 0.2):
        ok, yours = attempt("Ex 4.1 frozen share", fn, r, thr)
        if not ok:
            return False
        g = max_gaps(r)
        expected = float(np.mean(g > thr))
        if yours is None or not close(float(yours), expected, 1e-9):
            return report(f"Ex 4.1 frozen share (threshold {thr * 1e3:g} ms)", False, yours, round(expected, 4),
                          hint="per finished request: max of the differences of seq.token_times; "
                               "then the fraction of requests above the threshold")
    return report("Ex 4.1 frozen share (3 thresholds)", True, round(float(fn(r, 0.1)), 4),
                  round(float(np.mean(max_gaps(r) > 0.1)), 4))


def reference_pick_budget(points, itl_slo: float):
    ok = [p for p in points if p["itl"] <= itl_slo]
    if not ok:
        return None
    return min(ok, key=lambda p: (p["ttft"], p["chunk"]))["chunk"]


def check_pick_budget(fn) -> bool:
    """Ex 5.1: ``fn(points, itl_slo) -> chunk``: among ``points`` (dicts with chunk, ttft, itl),
    the budget that meets ``itl <= itl_slo`` with the lowest TTFT (None if none does)."""
    cases = [
        ([{"chunk": 256, "ttft": 0.30, "itl": 0.010}, {"chunk": 512, "ttft": 0.20, "itl": 0.018},
          {"chunk": 1024, "ttft": 0.15, "itl": 0.034}, {"chunk": 2048, "ttft": 0.14, "itl": 0.065}], 0.05),
        ([{"chunk": 2048, "ttft": 0.14, "itl": 0.065}, {"chunk": 128, "ttft": 0.5, "itl": 0.008},
          {"chunk": 512, "ttft": 0.21, "itl": 0.018}], 0.02),
        ([{"chunk": 512, "ttft": 0.2, "itl": 0.5}], 0.05),
        # the lowest TTFT is not always the largest budget that fits
        ([{"chunk": 256, "ttft": 0.12, "itl": 0.01}, {"chunk": 512, "ttft": 0.13, "itl": 0.02}], 0.05),
    ]
    for i, (pts, slo) in enumerate(cases):
        ok, yours = attempt("Ex 5.1 pick the budget", fn, [dict(p) for p in pts], slo)
        if not ok:
            return False
        expected = reference_pick_budget(pts, slo)
        if yours != expected:
            return report(f"Ex 5.1 pick the budget (case {i + 1}, ITL SLO {slo * 1e3:g} ms)", False, yours, expected,
                          hint="first decide which budgets are allowed at all (the ITL SLO), then which of those "
                               "serves first tokens best; and when none is allowed?")
    return report("Ex 5.1 pick the budget (4 cases)", True, "all match", "all match")


def check_kv_transfer_s(fn) -> bool:
    """Ex 6.1: ``fn(model, prompt_tokens, link_gbps, latency_s) -> seconds`` to move a prompt's KV."""
    from ..hardware import LINK_LATENCY_S, LINKS_GBPS
    from ..models import MODELS
    from ..sim import CostModel

    cases = [("llama-3-8b", 4096, "nvlink"), ("llama-3-8b", 4096, "eth-25g"), ("opt-13b", 512, "pcie4"),
             ("llama-2-70b", 8192, "ib-ndr")]
    for model, tokens, link in cases:
        m = MODELS[model]
        ok, yours = attempt("Ex 6.1 KV transfer time", fn, m, tokens, LINKS_GBPS[link], LINK_LATENCY_S[link])
        if not ok:
            return False
        expected = CostModel.from_names("h100", model).kv_transfer_time(tokens, LINKS_GBPS[link], LINK_LATENCY_S[link])
        if yours is None or not close(float(yours), expected, 1e-6):
            return report(f"Ex 6.1 KV transfer time ({model}, {tokens} tokens over {link})", False, yours, expected,
                          hint="a transfer costs a fixed start-up plus its bytes over the bandwidth; how many bytes "
                               "does a prompt's KV hold, and what is a GB/s in bytes per second?")
    m = MODELS["llama-3-8b"]
    return report("Ex 6.1 KV transfer time (4 cases; llama-3-8b, 4096 tokens, 25 GbE)", True,
                  round(float(fn(m, 4096, LINKS_GBPS["eth-25g"], LINK_LATENCY_S["eth-25g"])), 4),
                  round(CostModel.from_names("h100", "llama-3-8b").kv_transfer_time(
                      4096, LINKS_GBPS["eth-25g"], LINK_LATENCY_S["eth-25g"]), 4))


# ---- labs 00 and 01: the engine and the two phases --------------------------------------------
def reference_kv_blocks(prompt_len: int, new_tokens: int, block_size: int) -> int:
    """KV blocks a request holds when its last token comes out: every token but the newest
    has KV (the newest is sampled, never fed back), rounded up to whole blocks."""
    return -(-(prompt_len + new_tokens - 1) // block_size)


def check_kv_blocks(fn) -> bool:
    """Ex 0.1: ``fn(prompt_len, new_tokens, block_size) -> blocks`` held at the end of generation."""
    cases = [(17, 40, 16), (16, 1, 16), (16, 2, 16), (1, 1, 4), (100, 29, 16), (5, 12, 1)]
    for p, n, b in cases:
        ok, yours = attempt("Ex 0.1 KV blocks", fn, p, n, b)
        if not ok:
            return False
        expected = reference_kv_blocks(p, n, b)
        if yours != expected:
            return report(f"Ex 0.1 KV blocks (prompt {p}, {n} new tokens, blocks of {b})", False, yours, expected,
                          hint="tokens with KV = prompt + new - 1 (the last sampled token is never fed back); "
                               "then round up to whole blocks")
    return report("Ex 0.1 KV blocks (6 cases; prompt 17, 40 new, blocks of 16)", True, fn(17, 40, 16),
                  reference_kv_blocks(17, 40, 16))


def reference_decode_step_cost(model, batch: int, context: int) -> tuple[float, float]:
    """(FLOPs, bytes) of one decode step: ``batch`` sequences, each attending to ``context``
    tokens. FLOPs: 2 per weight per token through every layer and the LM head, plus QK^T and PV
    (4 * heads * head_dim per layer per context token). Bytes: every layer's weights and the LM
    head read once (the embedding lookup reads only ``batch`` rows: ignored), plus the K and V of
    every context token."""
    m = model
    flops = 2 * batch * (m.layers * m.layer_params + m.vocab * m.hidden) \
        + 4 * m.layers * m.heads * m.head_dim * batch * context
    nbytes = (m.layers * m.layer_params + m.vocab * m.hidden) * m.dtype_bytes + batch * context * m.kv_bytes_per_token
    return float(flops), float(nbytes)


def kv_intensity(model) -> float:
    """FLOPs per byte of attention over the KV cache in decode: ``4 x heads x head_dim`` FLOPs
    per context token and layer (QK^T and PV) over the K and V bytes of that token and layer
    (grouped-query attention shares a KV head among ``heads / kv_heads`` query heads)."""
    return 4 * model.heads * model.head_dim * model.layers / model.kv_bytes_per_token


def decode_ridge_batch(model, ridge: float, context: int, max_batch: int = 1 << 20) -> int | None:
    """The smallest batch at which a whole decode step (``reference_decode_step_cost``: weights,
    LM head, attention over ``context`` tokens each) reaches ``ridge`` FLOP/byte; None if the step
    levels off below it (long contexts: the KV reads' ~4 FLOP/B pull it down)."""
    def ai(b):
        f, n = reference_decode_step_cost(model, b, context)
        return f / n
    if ai(max_batch) < ridge:
        return None
    lo, hi = 1, max_batch            # intensity grows with the batch: bisect
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if ai(mid) < ridge else (lo, mid)
    return lo


def check_decode_step_cost(fn) -> bool:
    """Ex 1.1: ``fn(model, batch, context) -> (flops, bytes)`` of one decode step."""
    from ..models import MODELS

    cases = [("llama-3-8b", 1, 1024), ("llama-3-8b", 64, 1024), ("llama-3.2-1b", 16, 4096), ("opt-13b", 8, 512)]
    for name, b, c in cases:
        ok, yours = attempt("Ex 1.1 decode step cost", fn, MODELS[name], b, c)
        if not ok:
            return False
        ef, eb = reference_decode_step_cost(MODELS[name], b, c)
        try:
            yf, yb = (float(v) for v in yours)
        except (TypeError, ValueError):
            return report("Ex 1.1 decode step cost", False, yours, (ef, eb), hint="return a pair (flops, bytes)")
        if not close(yf, ef, 1e-6):
            return report(f"Ex 1.1 decode FLOPs ({name}, batch {b}, context {c})", False, yf, ef,
                          hint="follow one token: every weight it meets (each layer, then the LM head) costs 2 "
                               "FLOPs; attention adds work that grows with the context; then times the batch")
        if not close(yb, eb, 1e-6):
            return report(f"Ex 1.1 decode bytes ({name}, batch {b}, context {c})", False, yb, eb,
                          hint="what is read once per step whatever the batch, and what once per sequence "
                               "for every token of its context?")
    ef, eb = reference_decode_step_cost(MODELS["llama-3-8b"], 64, 1024)
    yf, yb = (float(v) for v in fn(MODELS["llama-3-8b"], 64, 1024))
    return report("Ex 1.1 decode step cost (4 cases; llama-3-8b batch 64 @ 1024: FLOP/byte)", True,
                  round(yf / yb, 2), round(ef / eb, 2))


# --- lab 07: prefix reuse and routing ---------------------------------------------------------

def reference_kv_cost(prompt_blocks: int, device_hit: int, host_hit: int, queued: int, active: int,
                      overlap_weight: float = 1.0, load_weight: float = 1.0, host_weight: float = 0.75) -> float:
    """One replica's kv-aware cost, computed by the router itself (``pdlab.serving.router``)."""
    from types import SimpleNamespace

    from ..config import ServingConfig
    from ..request import Request, Sequence
    from ..serving.router import Router

    w = SimpleNamespace(index=0, sched=SimpleNamespace(kv_load=lambda: (queued, active)))
    index = SimpleNamespace(overlap=lambda i, hashes, now: (device_hit, host_hit), routed=lambda *a: None)
    cfg = ServingConfig(router="kv-aware", overlap_weight=overlap_weight, load_weight=load_weight,
                        host_weight=host_weight, block_size=16)
    r = Router("kv-aware", [w], cfg, index)
    return r.costs(Sequence(Request(0, 0.0, prompt_blocks * 16, 1)), 0.0, [w])[0]


def check_kv_cost(fn) -> bool:
    """Ex 7.1: ``fn(prompt_blocks, device_hit, host_hit, queued, active, overlap_weight, load_weight)``
    -> the kv-aware cost of one replica (host hits count 0.75 of a device hit)."""
    cases = [(100, 0, 0, 0, 0, 1.0, 1.0), (100, 80, 0, 30, 2000, 1.0, 1.0), (100, 40, 40, 0, 500, 2.0, 1.0),
             (64, 64, 0, 10, 300, 4.0, 0.0), (64, 10, 0, 200, 3000, 0.0, 1.0)]
    for c in cases:
        ok, yours = attempt("Ex 7.1 kv_cost", fn, *c)
        if not ok:
            return False
        expected = reference_kv_cost(*c)
        if not (isinstance(yours, (int, float)) and close(float(yours), expected)):
            return report(f"Ex 7.1 kv_cost{c}", False, yours, expected,
                          hint="new = max(0, prompt_blocks - device_hit - 0.75 * host_hit); "
                               "cost = overlap_weight * (new + load_weight * queued) + load_weight * active")
    return report("Ex 7.1 kv_cost (5 replicas' states)", True, "all equal", "the router's costs")


def reference_attainment(ttft, tpot, ttft_slo: float, tpot_slo: float) -> float:
    """DistServe's SLO attainment: the share of requests within both targets at once (a one-token
    answer, TPOT NaN, has no pace to miss; a never-served one, TTFT inf, misses)."""
    import numpy as np
    ttft, tpot = np.asarray(ttft, dtype=float), np.asarray(tpot, dtype=float)
    ok = (ttft <= ttft_slo) & (np.isnan(tpot) | (tpot <= tpot_slo))
    return float(ok.mean()) if ok.size else 0.0


def check_attainment(fn) -> bool:
    import numpy as np
    cases = [
        (np.array([0.1, 0.2, 0.9, 0.3]), np.array([0.01, 0.06, 0.01, 0.02]), 0.5, 0.05),
        (np.array([0.1, np.inf, 0.2]), np.array([0.01, np.nan, np.nan]), 0.5, 0.05),
        (np.array([0.4, 0.4]), np.array([0.05, 0.05]), 0.4, 0.05),
    ]
    for ttft, tpot, a, b in cases:
        ok, yours = attempt("attainment", fn, ttft, tpot, a, b)
        if not ok:
            return False
        want = reference_attainment(ttft, tpot, a, b)
        if not close(float(yours), want):
            return report("attainment", False, yours, want,
                          "a request counts when TTFT <= target AND (TPOT <= target or TPOT is NaN)")
    return report("attainment", True, "all cases", "all cases")
