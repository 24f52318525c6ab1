"""Figures for lab 02 (attention kernels): the decode kernel's thread map, the roofline with the
kernels' measured points, and the decode-time explorer. Every figure names where its numbers
come from: "measured on an NVIDIA H200" (bench/results/kernels-h200-*.json) or "live, this
machine"."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .style import LAYOUT

# datasheet ceilings (REFERENCES.md): H200 SXM, dense
H200_FP32_TFLOPS = 67.0
H200_TENSOR_TFLOPS = 989.0
NUMBA, SDPA, LIVE = "#1f77b4", "#7f7f7f", "#d62728"


# ---------------------------------------------------------------------------------------------
# Counting: what a decode step and a prefill move and compute (attention only)
def decode_traffic(batch, context, num_heads=32, num_kv_heads=8, head_dim=128, bytes_per_el=2) -> dict:
    """Bytes of K and V read and FLOPs done by one decode step of attention. Each sequence has
    its own KV, so both grow with batch * context and their ratio does not move."""
    bytes_ = 2 * batch * context * num_kv_heads * head_dim * bytes_per_el      # K and V, once
    flops = 4 * batch * context * num_heads * head_dim                         # q.k and p*v, 2 FLOPs per FMA
    return dict(bytes=bytes_, flops=flops, intensity=flops / bytes_)


def prefill_traffic(tokens, context=None, num_heads=32, num_kv_heads=8, head_dim=128, bytes_per_el=2) -> dict:
    """Causal prefill of ``tokens`` new tokens whose context (including them) is ``context``."""
    context = context or tokens
    visible = tokens * (context - tokens) + tokens * (tokens + 1) // 2         # (query, key) pairs
    flops = 4 * num_heads * head_dim * visible
    bytes_ = bytes_per_el * head_dim * (2 * tokens * num_heads + 2 * context * num_kv_heads)  # q, out, K, V
    return dict(bytes=bytes_, flops=flops, intensity=flops / bytes_)


def measured_points(results: dict) -> list[dict]:
    """Roofline points (label, intensity FLOP/B, TFLOP/s, kind) from the benchmark JSON."""
    s = results["shapes"]
    h, hkv, d = s["num_heads"], s["num_kv_heads"], s["head_dim"]
    pts = []
    for r in results["decode"]:
        t = decode_traffic(r["batch"], r["context"], h, hkv, d)
        for who, ms in (("Numba", r["ms"]), ("SDPA", r["sdpa_ms"])):
            pts.append(dict(label=f"decode {who} {r['batch']}x{r['context']}", intensity=t["intensity"],
                            tflops=t["flops"] / (ms * 1e-3) / 1e12, kind=who))
    for r in results["prefill"]:
        t = prefill_traffic(r["tokens"], r["context"], h, hkv, d)
        pts.append(dict(label=f"prefill Numba {r['tokens']}/{r['context']}", intensity=t["intensity"],
                        tflops=r["tflops"], kind="Numba"))
        if "sdpa_tflops" in r:
            pts.append(dict(label=f"prefill SDPA {r['tokens']}", intensity=t["intensity"],
                            tflops=r["sdpa_tflops"], kind="SDPA"))
    return pts


def roofline_figure(results: dict, live: list[dict] | None = None) -> go.Figure:
    """Log-log roofline: the measured copy bandwidth as the memory roof, the fp32 CUDA-core and
    bf16 tensor-core peaks (datasheet) as compute roofs; the kernels' measured points; ``live``
    points (dicts with label, intensity, tflops) from this machine."""
    bw = results["copy_tbps"]                                   # TB/s = TFLOP/s per FLOP/byte
    x = np.logspace(-1, 4, 200)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=np.minimum(bw * x, H200_FP32_TFLOPS), mode="lines", name="fp32 CUDA-core roof",
                             line=dict(color=NUMBA, dash="dash")))
    fig.add_trace(go.Scatter(x=x, y=np.minimum(bw * x, H200_TENSOR_TFLOPS), mode="lines",
                             name="bf16 tensor-core roof", line=dict(color=SDPA, dash="dot")))
    for kind, color, symbol in (("Numba", NUMBA, "circle"), ("SDPA", SDPA, "diamond")):
        pts = [p for p in measured_points(results) if p["kind"] == kind]
        fig.add_trace(go.Scatter(x=[p["intensity"] for p in pts], y=[p["tflops"] for p in pts],
                                 mode="markers", name=f"{kind} (measured, H200)", text=[p["label"] for p in pts],
                                 hovertemplate="%{text}<br>%{x:.1f} FLOP/B, %{y:.2f} TFLOP/s<extra></extra>",
                                 marker=dict(color=color, size=11, symbol=symbol)))
    if live:
        fig.add_trace(go.Scatter(x=[p["intensity"] for p in live], y=[p["tflops"] for p in live],
                                 mode="markers", name="live, this machine", text=[p["label"] for p in live],
                                 hovertemplate="%{text}<br>%{x:.1f} FLOP/B, %{y:.4f} TFLOP/s<extra></extra>",
                                 marker=dict(color=LIVE, size=12, symbol="x")))
    fig.update_xaxes(type="log", title="arithmetic intensity (FLOP per byte moved)")
    fig.update_yaxes(type="log", title="TFLOP/s")
    fig.update_layout(**LAYOUT)
    fig.update_layout(title_text=f"Attention on the roofline: measured on an {results['gpu']} "
                                 f"(copy {bw:.2f} TB/s), {results['date']}")
    return fig


# ---------------------------------------------------------------------------------------------
def thread_map(head_dim=128, threads=128, unroll=2, lane_dims=16, vec=8) -> np.ndarray:
    """[tokens in one step, head_dim] -> the thread id that loads that K element in the decode
    kernel (``pdlab/kernels/decode_kernel.py``): LPR = head_dim / lane_dims lanes per token
    row, each owning ``vec`` dims in each of the lane_dims / vec slices of the row (so the LPR
    lanes' loads are contiguous); threads / LPR rows; each thread takes `unroll` rows, NG apart."""
    lpr = head_dim // lane_dims
    nv = lane_dims // vec
    ng = threads // lpr
    out = np.zeros((ng * unroll, head_dim), dtype=int)
    for tid in range(threads):
        row, d0 = tid // lpr, (tid % lpr) * vec
        for u in range(unroll):
            for v in range(nv):
                out[u * ng + row, v * (head_dim // nv) + d0:v * (head_dim // nv) + d0 + vec] = tid
    return out


def thread_map_figure(head_dim=128, threads=128, unroll=2, lane_dims=16) -> go.Figure:
    z = thread_map(head_dim, threads, unroll, lane_dims)
    warp = z // 32
    text = [[f"thread {t} (warp {t // 32}, lane {t % 32})" for t in row] for row in z]
    fig = go.Figure(go.Heatmap(z=warp, text=text, colorscale="Viridis", hovertemplate="token %{y}, dim %{x}: %{text}<extra></extra>",
                               colorbar=dict(title="warp")))
    fig.update_xaxes(title=f"head dimension d ({lane_dims} per thread: {lane_dims // 8} 16-byte loads)")
    fig.update_yaxes(title="token of this step (one KV head)", autorange="reversed")
    fig.update_layout(**LAYOUT)
    fig.update_layout(title_text=f"Decode kernel: who loads which K element ({threads} threads, "
                                 f"head_dim {head_dim}, {unroll} tokens per thread per step)")
    return fig


def fragment_figure() -> go.Figure:
    """The three operands of one ``mma.sync.m16n8k16`` side by side, each element coloured by the
    lane of the warp that holds it and labelled with its register (from
    ``pdlab.kernels.fragments``, the layouts the kernel and its simulator use)."""
    from plotly.subplots import make_subplots

    from ..kernels import fragments as fr

    titles = ("A = Q tile [16 queries x 16 dims]: a0..a3", "B = K^T tile [16 dims x 8 keys]: b0, b1",
              "C = S tile [16 queries x 8 keys], fp32: c0..c3")
    fig = make_subplots(rows=1, cols=3, column_widths=[16, 8, 8], subplot_titles=titles, horizontal_spacing=0.06)
    for col, (which, reg) in enumerate((("A", "a"), ("B", "b"), ("C", "c")), start=1):
        lanes, regs = fr.owners(which), fr.registers(which)
        text = [[f"{reg}{r}" for r in row] for row in regs]
        fig.add_trace(go.Heatmap(z=lanes, text=text, texttemplate="%{text}", colorscale="Turbo", zmin=0, zmax=31,
                                 showscale=col == 3, colorbar=dict(title="lane"),
                                 hovertemplate="row %{y}, col %{x}: lane %{z}, register %{text}<extra></extra>"),
                      row=1, col=col)
        fig.update_yaxes(autorange="reversed", row=1, col=col)
    fig.update_layout(**LAYOUT)
    fig.update_layout(title_text="One warp's tensor-core tile: which lane holds which element (colour), "
                                 "in which register (label)", height=420)
    return fig


# ---------------------------------------------------------------------------------------------
CONTEXTS = [2 ** k for k in range(8, 18)]   # 256 .. 131072 tokens


def numba_decode_tbps(results: dict) -> float:
    """Mean measured bandwidth of the Numba decode kernel over the benchmark's shapes."""
    return float(np.mean([r["tbps"] for r in results["decode"]]))


def decode_time_figure(results: dict, batch: int = 16, context: int = 4096, widget: bool = False) -> go.Figure:
    """Predicted attention time of one decode step vs context length, if it moved its KV bytes at
    the measured Numba bandwidth or at the copy bandwidth; a marker at (``context``, time)."""
    fig = go.FigureWidget() if widget else go.Figure()
    for name, color, dash in (("at the Numba kernel's bandwidth", NUMBA, None), ("at copy bandwidth", SDPA, "dot")):
        fig.add_trace(go.Scatter(x=CONTEXTS, y=[0.0] * len(CONTEXTS), mode="lines", name=name,
                                 line=dict(color=color, dash=dash)))
    fig.add_trace(go.Scatter(x=[context], y=[0.0], mode="markers", name="this setting",
                             marker=dict(color=LIVE, size=13)))
    fig.update_xaxes(type="log", title="context length (tokens per sequence)")
    fig.update_yaxes(type="log", title="attention time per decode step (us, one layer)")
    fig.update_layout(**LAYOUT)
    update_decode_time(fig, results, batch, context)
    return fig


def update_decode_time(fig, results: dict, batch: int, context: int) -> None:
    """Recompute the curves for ``batch`` and move the marker to ``context`` (in place)."""
    s = results["shapes"]
    bws = (numba_decode_tbps(results), results["copy_tbps"])

    def us(ctx, bw):
        return decode_traffic(batch, ctx, s["num_heads"], s["num_kv_heads"], s["head_dim"])["bytes"] / (bw * 1e12) * 1e6

    t = decode_traffic(batch, context, s["num_heads"], s["num_kv_heads"], s["head_dim"])
    with fig.batch_update():
        for i, bw in enumerate(bws):
            fig.data[i].y = [us(c, bw) for c in CONTEXTS]
        fig.data[2].x = [context]
        fig.data[2].y = [us(context, bws[0])]
        fig.layout.title.text = (f"batch {batch} x context {context}: {t['bytes'] / 1e6:.1f} MB of KV, "
                                 f"{t['flops'] / 1e9:.2f} GFLOP, {t['intensity']:.1f} FLOP/B "
                                 f"-> {us(context, bws[0]):.1f} us (H200-measured bandwidths)")


def decode_explorer(results: dict, batch: int = 16, context: int = 4096):
    """Sliders over batch size and context length driving ``decode_time_figure`` (a FigureWidget).
    Returns (box, fig, sliders) so a test can move a slider and read ``fig.data``."""
    import ipywidgets as w

    fig = decode_time_figure(results, batch, context, widget=True)
    sliders = dict(
        batch=w.IntSlider(value=batch, min=1, max=256, step=1, description="batch", continuous_update=False),
        context=w.SelectionSlider(options=CONTEXTS, value=context, description="context", continuous_update=False),
    )

    def on_change(_change):
        update_decode_time(fig, results, sliders["batch"].value, sliders["context"].value)

    for s in sliders.values():
        s.observe(on_change, names="value")
    return w.VBox([w.HBox(list(sliders.values())), fig]), fig, sliders
