"""What the cost model says about single steps, no simulation: instant figures for sliders.

    piggyback_bars    step time: decodes alone, a chunk alone, a chunk + decodes
    kv_capacity       how many sequences fit in the KV cache vs context length, per model
    decode_throughput decode tokens/s and step time vs batch size, the KV cache's limit marked
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..sim.costmodel import StepShape
from .style import DECODE, PALETTE, PREFILL, STALL, fig as _fig, hline, sim_label, subtitle as _subtitle, vline


def piggyback_bars(cost_model, chunk: int = 512, decodes: int = 32, context: int = 1024,
                   widget: bool = False) -> go.Figure:
    """Cost-model step times: ``decodes`` decodes alone, a ``chunk``-token prefill alone, and the
    chunk with the decodes riding along. The last bar is barely taller than the second: decodes
    piggybacked on a compute-bound chunk are nearly free."""
    rows = piggyback_times(cost_model, chunk, decodes, context)
    f = _fig(widget, title=_subtitle(f"Piggybacking: {decodes} decodes on a {chunk}-token chunk",
                                     sim_label(cost_model.model.name, cost_model.gpu.name, cost_model.tp)),
             yaxis_title="step time (ms)")
    labels = list(rows)
    y = [rows[k] * 1e3 for k in labels]
    f.add_bar(x=labels, y=y, marker_color=[DECODE, PREFILL, "#8c564b"], text=[f"{v:.1f} ms" for v in y],
              textposition="outside", showlegend=False)
    f.update_yaxes(range=[0, max(y) * 1.2])
    return f


def piggyback_times(cost_model, chunk: int = 512, decodes: int = 32, context: int = 1024) -> dict[str, float]:
    """Seconds of the three steps ``piggyback_bars`` draws (``CostModel.time_for``)."""
    d, p = StepShape.decode(decodes, context), StepShape.prefill(chunk)
    alone_d, alone_p, both = (cost_model.time_for(s) for s in (d, p, p + d))
    return {f"{decodes} decodes": alone_d, f"{chunk} prefill": alone_p,
            f"{chunk} prefill + {decodes} decodes": both}


def kv_capacity(cost_models: dict[str, object], contexts=(512, 1024, 2048, 4096, 8192, 16384, 32768),
                widget: bool = False, max_num_seqs: int | None = None) -> go.Figure:
    """How many sequences of a given context length fit in the KV cache (the cap on the decode
    batch), one line per label (a ``CostModel`` each)."""
    f = _fig(widget, title="How memory caps the decode batch", xaxis_title="context length (tokens), log scale",
             yaxis_title="sequences that fit in the KV cache (log scale)")
    f.update_xaxes(type="log")
    f.update_yaxes(type="log")
    ctx = np.asarray(contexts, dtype=float)
    for i, (label, cm) in enumerate(cost_models.items()):
        cap = cm.kv_capacity_tokens()
        f.add_scatter(x=ctx, y=np.maximum(np.floor(cap / ctx), 0.5), mode="lines+markers",
                      name=f"{label} ({cap / 1e3:.0f}k tokens)", line=dict(color=PALETTE[i % len(PALETTE)]))
    if max_num_seqs:
        hline(f, max_num_seqs, f"max_num_seqs = {max_num_seqs} (the scheduler's own cap)", log=True, dash="dot")
    return f


def decode_throughput(cost_model, context: int = 2048, max_batch: int = 512, widget: bool = False) -> go.Figure:
    """Decode tokens/s and step time vs batch size for sequences of ``context`` tokens, with the
    batch the KV cache can hold marked: past it, more throughput needs more memory, not more
    compute."""
    cm = cost_model
    cap = cm.kv_capacity_tokens() // context
    b = np.unique(np.geomspace(1, max_batch, 40).astype(int))
    step = np.array([cm.decode_time(int(x), context) for x in b])
    base = make_subplots(specs=[[{"secondary_y": True}]])
    f = _fig(widget, base, title=_subtitle(f"Decode: bigger batches, more tokens/s ({context}-token contexts)",
                                           sim_label(cm.model.name, cm.gpu.name, cm.tp)),
             xaxis_title="decode batch (sequences), log scale")
    f.update_xaxes(type="log")
    f.add_trace(go.Scatter(x=b, y=b / step, mode="lines", name="tokens/s", line=dict(color=DECODE, width=3)),
                secondary_y=False)
    f.add_trace(go.Scatter(x=b, y=step * 1e3, mode="lines", name="step time (ms) = ITL",
                           line=dict(color="#7f7f7f", dash="dot")), secondary_y=True)
    f.update_yaxes(title_text="decode tokens/s", secondary_y=False, rangemode="tozero")
    f.update_yaxes(title_text="step time (ms)", secondary_y=True, rangemode="tozero", showgrid=False)
    if 1 <= cap <= max_batch:
        vline(f, cap, f"KV cache full: {cap} sequences", log=True, color=STALL)
    return f
