"""Plotly figure builders. Every figure a lab or report shows is built here (and unit-tested);
notebooks only call these. Builders take a ``RunResult`` (or its summary, or plain numbers) and
return a ``go.Figure``; pass ``widget=True`` for a ``go.FigureWidget`` that sliders can update in
place, or build a fresh figure and copy it into a widget with ``refresh(widget, figure)``.

    style     one layout and colour set, clock labels, SLO lines, ``refresh``
    runs      what a run did: iteration timelines, token rasters, KV occupancy
    latency   distributions and SLOs: CDFs, percentile bars, SLO curves, goodput, the TTFT/ITL frontier
    costs     single-step cost-model figures: piggybacking, KV capacity, decode throughput
    engine    labs 00-01: the real engine's step times and the roofline
    kernels   lab 02: the attention kernels
    diagnosis pdlab diagnose and plan: the symptom table, lengths, ITL around long prompts, the Pareto front
    disagg    lab 06: measured KV transfers and latencies next to the simulator's
    prefix    lab 07: prefix reuse, routers, per-replica load, the host tier's break-even

Every figure names its clock: "simulated (cost model: <model> on <gpu>)" or "measured on <device>".
"""

from . import prefix
from .costs import decode_throughput, kv_capacity, piggyback_bars, piggyback_times
from .disagg import side_by_side, transfer_times
from .latency import (cdf, cdf_points, frontier, goodput_bars, metric_arrays, percentile_bars, slo_curves,
                      sweep_lines, value_bars)
from .runs import batch_timeline, kv_occupancy, raster_points, token_raster
from .style import (DECODE, LAYOUT, MODE_COLORS, PALETTE, PREFILL, STALL, bare, clock_label, color_for,
                    empty_widget, hline, palette, refresh, sim_label, vline)

__all__ = ["DECODE", "LAYOUT", "MODE_COLORS", "PALETTE", "PREFILL", "STALL", "bare", "batch_timeline", "cdf",
           "cdf_points", "clock_label", "color_for", "decode_throughput", "empty_widget", "frontier",
           "goodput_bars", "hline", "kv_capacity", "kv_occupancy", "metric_arrays", "palette",
           "percentile_bars", "piggyback_bars", "piggyback_times", "prefix", "raster_points", "refresh",
           "side_by_side", "sim_label", "slo_curves", "sweep_lines", "token_raster", "transfer_times", "value_bars",
           "vline"]
