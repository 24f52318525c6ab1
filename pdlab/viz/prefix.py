"""Lab 07: prefix reuse and routing.

    conversation_tokens / conversation_cost   one session turn by turn: the prompt grows with
                                              the history; a prefix cache computes only the new part
    router_bars        per router: prefix hit rate (against the unbounded-cache bound), TTFT p50/p90,
                       throughput
    replica_load       KV blocks in use per replica over a run (a hot spot is one line on top)
    weight_sweep       kv-aware's overlap weight against hit rate and TTFT p90
    ttft_split_bars    mean TTFT split into queueing, host-tier transfer and compute
    offload_breakeven  copying a prefix back from host memory vs recomputing it, over link bandwidth

Inputs are ``RunResult.summary()`` dicts (or plain numbers); every figure names its clock.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..request import Sequence
from ..serving.kv import prefix_hashes
from .style import DECODE, PALETTE, PREFILL, fig as _fig, subtitle as _subtitle, vline


def conversation_tokens(turns, block_size: int = 16) -> dict[str, np.ndarray]:
    """Per turn of one session (requests in order): prompt tokens, tokens a cache-less replica
    computes (the whole prompt) and tokens a replica that kept the session's earlier blocks computes."""
    seen: set[int] = set()
    prompt, cached = [], []
    for r in turns:
        hashes = prefix_hashes(Sequence(r), block_size)
        k, cap = 0, (r.prompt_len - 1) // block_size
        while k < min(cap, len(hashes)) and hashes[k] in seen:
            k += 1
        seen.update(hashes)
        prompt.append(r.prompt_len)
        cached.append(r.prompt_len - k * block_size)
    p = np.array(prompt)
    return {"turn": np.arange(1, len(p) + 1), "prompt": p, "without_cache": p, "with_cache": np.array(cached)}


def conversation_cost(turns, block_size: int = 16, widget: bool = False) -> go.Figure:
    t = conversation_tokens(turns, block_size)
    f = _fig(widget, title=_subtitle("One conversation: prefill tokens per turn", "token counts (no clock)"),
             barmode="group", xaxis_title="turn", yaxis_title="prefill tokens")
    f.add_trace(go.Bar(x=t["turn"], y=t["without_cache"], name="computed without a prefix cache", marker_color=PREFILL))
    f.add_trace(go.Bar(x=t["turn"], y=t["with_cache"], name="computed with the history cached", marker_color=DECODE))
    return f


def _clock(summaries: dict) -> str:
    return next((s.get("clock") for s in summaries.values() if s.get("clock")), "")


def router_bars(summaries: dict, clock: str | None = None, widget: bool = False) -> go.Figure:
    """``summaries``: label -> ``RunResult.summary()``. Three panels: hit rate (device + host, with
    the unbounded-cache bound as a line), TTFT p50 and p90, output throughput."""
    labels = list(summaries)
    base = make_subplots(rows=1, cols=3, subplot_titles=["prefix hit rate", "TTFT (s)", "throughput (tok/s)"])
    f = _fig(widget, base, title=_subtitle("Routers on the same requests", clock or _clock(summaries)),
             barmode="group", height=420)
    dev = [s["prefix_hit_rate_device"] for s in summaries.values()]
    host = [s["prefix_hit_rate_host"] for s in summaries.values()]
    f.add_trace(go.Bar(x=labels, y=dev, name="hit rate, GPU", marker_color=PALETTE[0]), row=1, col=1)
    if any(host):
        f.add_trace(go.Bar(x=labels, y=host, name="hit rate, host tier", marker_color=PALETTE[5]), row=1, col=1)
        f.update_layout(barmode="stack")
    bound = max(s["prefix_hit_rate_upper_bound"] for s in summaries.values())
    f.add_trace(go.Scatter(x=labels, y=[bound] * len(labels), mode="lines", line=dict(dash="dash", color="#444"),
                           name="unbounded cache"), row=1, col=1)
    for i, p in enumerate(("p50", "p90")):
        f.add_trace(go.Scatter(x=labels, y=[s["ttft_s"][p] for s in summaries.values()], mode="markers",
                               marker=dict(size=12, symbol="circle" if p == "p50" else "diamond",
                                           color=PALETTE[1 + i]), name=f"TTFT {p}"), row=1, col=2)
    f.add_trace(go.Bar(x=labels, y=[s["throughput_tok_s"] for s in summaries.values()], name="throughput",
                       marker_color=PALETTE[3], showlegend=False), row=1, col=3)
    return f


def replica_load(summary: dict, clock: str | None = None, widget: bool = False) -> go.Figure:
    """KV blocks in use per replica over time (``summary["replica_load"]``); the legend gives
    each replica's share of the requests."""
    rl = summary["replica_load"]
    total = max(1, sum(rl["requests"]))
    f = _fig(widget, title=_subtitle("KV blocks in use per replica", clock or summary.get("clock")),
             xaxis_title="time (s)", yaxis_title="KV blocks in use (mean per window)")
    for i, (name, ys, n) in enumerate(zip(rl["workers"], rl["kv_blocks"], rl["requests"])):
        f.add_trace(go.Scatter(x=rl["t_s"], y=ys, mode="lines", name=f"{name}: {100 * n / total:.0f}% of requests",
                               line=dict(color=PALETTE[i % len(PALETTE)])))
    return f


def weight_sweep(points: list[dict], current: float | None = None, clock: str = "", widget: bool = False) -> go.Figure:
    """``points``: dicts with ``overlap_weight``, ``hit_rate``, ``ttft_p90`` (s). Hit rate on the
    left axis, TTFT p90 on the right."""
    pts = sorted(points, key=lambda p: p["overlap_weight"])
    x = [p["overlap_weight"] for p in pts]
    base = make_subplots(specs=[[{"secondary_y": True}]])
    f = _fig(widget, base, title=_subtitle("kv-aware: the overlap weight", clock), xaxis_title="overlap weight")
    f.add_trace(go.Scatter(x=x, y=[p["hit_rate"] for p in pts], mode="lines+markers", name="prefix hit rate",
                           line=dict(color=PALETTE[0])), secondary_y=False)
    f.add_trace(go.Scatter(x=x, y=[p["ttft_p90"] for p in pts], mode="lines+markers", name="TTFT p90 (s)",
                           line=dict(color=PREFILL)), secondary_y=True)
    f.update_yaxes(title_text="prefix hit rate", secondary_y=False)
    f.update_yaxes(title_text="TTFT p90 (s)", secondary_y=True)
    if current is not None:
        vline(f, current, f"weight {current:g}")
    return f


def ttft_split_bars(summaries: dict, clock: str | None = None, widget: bool = False) -> go.Figure:
    """Mean TTFT of each run as queueing + host-tier transfer + compute (means add up)."""
    labels = list(summaries)
    f = _fig(widget, title=_subtitle("Where the first token's time goes (mean)", clock or _clock(summaries)),
             barmode="stack", yaxis_title="seconds")
    for part, color in (("queueing", PALETTE[3]), ("transfer", PALETTE[5]), ("compute", PREFILL)):
        f.add_trace(go.Bar(x=labels, y=[s["ttft_split_s"][part]["mean"] or 0.0 for s in summaries.values()],
                           name=part, marker_color=color))
    return f


def offload_breakeven(cost_model, tokens: int, context: int = 0, gbps=None, widget: bool = False) -> go.Figure:
    """Seconds to copy ``tokens`` tokens of KV back from host memory at each bandwidth, against
    the seconds recomputing them (after ``context`` cached tokens) takes on the cost model; the
    break-even bandwidth is where the lines cross."""
    gbps = np.geomspace(0.5, 500, 60) if gbps is None else np.asarray(gbps, float)
    per_tok = cost_model.model.kv_bytes_per_token
    copy = tokens * per_tok / (gbps * 1e9)
    recompute = cost_model.prefill_time(tokens + 1, context) - cost_model.prefill_time(1, context + tokens)
    clock = f"simulated (cost model: {cost_model.model.name} on {cost_model.gpu.name})"
    f = _fig(widget, title=_subtitle(f"Reload {tokens} tokens of KV or recompute them?", clock),
             xaxis=dict(title="host -> GPU bandwidth (GB/s)", type="log"), yaxis=dict(title="seconds", type="log"))
    f.add_trace(go.Scatter(x=gbps, y=copy, mode="lines", name="copy back over the link", line=dict(color=PALETTE[5])))
    f.add_trace(go.Scatter(x=gbps, y=np.full(gbps.size, recompute), mode="lines", name="recompute (prefill)",
                           line=dict(color=PREFILL)))
    even = tokens * per_tok / recompute / 1e9
    if gbps.min() <= even <= gbps.max():
        vline(f, even, f"break-even {even:.1f} GB/s", log=True)
    return f


def breakeven_gbps(cost_model, tokens: int, context: int = 0) -> float:
    """The bandwidth (GB/s) above which copying ``tokens`` of KV back beats recomputing them."""
    recompute = cost_model.prefill_time(tokens + 1, context) - cost_model.prefill_time(1, context + tokens)
    return tokens * cost_model.model.kv_bytes_per_token / recompute / 1e9
