# ---
# jupyter:
#   jupytext:
#     notebook_metadata_filter: kernelspec,-jupytext.text_representation
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lab 06 — Disaggregation: prefill and decode on separate GPUs
#
# **Time:** about 30 minutes of teaching and 15 minutes of exercises.
# **Prerequisites:** labs 04 (interference) and 05 (chunked prefill).
#
# **Questions you will be able to answer**
#
# 1. What does splitting prefill and decode onto separate GPUs remove, and what does it add?
# 2. How do the prefill:decode (P:D) ratio and the KV link change goodput per GPU under SLOs?
# 3. When does disaggregation lose to aggregated or chunked serving on the same GPUs?
#
# Every number is **simulated** by the cost model (Llama-3-8B on H100s unless you change it).

# %%
import numpy as np

from pdlab import SLO, ServingConfig, analysis, make_requests, run_serving, viz
from pdlab.hardware import GPUS
from pdlab.lab import checks, env
from pdlab.lab import dashboards, experiments as ex
from pdlab.models import MODELS
from pdlab.sim import CostModel
from pdlab.workload import Lengths

info = env.report()            # seeds every random source; says what hardware backs the numbers
FAST = env.FAST                # CI (PDLAB_FAST=1): small workloads, same lessons
MODEL, GPU = "llama-3-8b", "h100"
CLOCK = viz.sim_label(MODEL, GPU)   # every number below is simulated by the cost model
print("numbers in this lab:", CLOCK)

N = 300 if FAST else 1000
SLOS = [SLO("ttft", 90, 0.5), SLO("itl", 99, 0.05)]   # interactive chat targets
print("SLOs:", ", ".join(map(str, SLOS)))

# %% [markdown]
# ## 1. Two pools and a link
#
# **Disaggregated** serving (DistServe, Splitwise, NVIDIA Dynamo) runs prompts on a **prefill
# pool** and streams on a **decode pool**. The prefill worker computes the prompt's KV and the
# first token; the KV then crosses a **link** (NVLink inside a node, InfiniBand or Ethernet
# between nodes) into the decode worker's cache, and decoding continues there. No decode
# iteration ever waits behind a prompt: the interference of lab 04 is gone by construction.

# %%
dis = ex.simulate("chat-long", N, 12.0, mode="disaggregated", prefill_gpus=1, decode_gpus=1, model=MODEL, gpu=GPU)
agg = ex.simulate("chat-long", N, 12.0, mode="aggregated", num_gpus=2, model=MODEL, gpu=GPU)
mid = dis.sequences[N // 2].arrival
viz.batch_timeline(dis, t_range=(mid, mid + 1.0)).show()
decode_prefill_tokens = sum(s[3] for s in dis.steps if dis.roles[s[0]] == "decode")
print(f"prefill tokens computed on the decode worker: {decode_prefill_tokens}; "
      f"longest stall: disaggregated {analysis.max_gaps(dis).max() * 1e3:.0f} ms, "
      f"aggregated (2 GPUs) {analysis.max_gaps(agg).max() * 1e3:.0f} ms   [{CLOCK}]")
assert decode_prefill_tokens == 0
assert analysis.max_gaps(dis).max() < analysis.max_gaps(agg).max() / 3


# %% [markdown]
# *What to look for:* the prefill worker (top) runs only orange bars with gaps between them; the
# decode worker (bottom) runs only blue ones, back to back.
#
# ### Exercise 6.1 — the price of the link
#
# Every request's KV crosses the link once: `prompt_tokens x kv_bytes_per_token` bytes (lab 03).
# Write `kv_transfer_s(m, prompt_tokens, link_gbps, latency_s)`: the seconds that takes on a link
# of `link_gbps` GB/s (1 GB = 1e9 bytes) with a fixed `latency_s`.

# %%
def kv_transfer_s(m, prompt_tokens, link_gbps, latency_s):
    # Ex 6.1: seconds to move one prompt's KV (m is a ModelSpec)
    # BEGIN SOLUTION
    return latency_s + prompt_tokens * m.kv_bytes_per_token / (link_gbps * 1e9)
    # END SOLUTION


# %%
checks.check_kv_transfer_s(kv_transfer_s);

# %%
from pdlab.hardware import LINK_LATENCY_S, LINKS_GBPS

cm = CostModel.from_names(GPU, MODEL)
prefill_4k = cm.prefill_time(4096)
print(f"a 4096-token prompt of {MODEL}: {4096 * cm.model.kv_bytes_per_token / 1e9:.2f} GB of KV; "
      f"its prefill takes {prefill_4k * 1e3:.0f} ms on one {GPU}   [{CLOCK}]")
for link, gbps in LINKS_GBPS.items():
    t = cm.kv_transfer_time(4096, gbps, LINK_LATENCY_S[link])
    print(f"  {link:>9} ({gbps:6.1f} GB/s): {t * 1e3:7.1f} ms  ({t / prefill_4k:5.1f}x the prefill)")
assert cm.kv_transfer_time(4096, LINKS_GBPS["eth-25g"]) > prefill_4k > cm.kv_transfer_time(4096, LINKS_GBPS["nvlink"])

# %% [markdown]
# ## 2. Goodput per GPU: the ratio matters
#
# **Goodput** is the highest request rate at which every SLO still holds; divided by the GPUs
# used it is what you pay for. Compare four setups of **3 GPUs** on a long-prompt workload
# (arXiv summarisation: prompts of thousands of tokens): aggregated and chunked replicas, and
# disaggregated with 2 prefill + 1 decode or 1 prefill + 2 decode GPUs. First the latencies
# as the load grows, then the goodput search (progress bars: each search runs about a dozen
# simulations per setup).

# %%
reqs = make_requests(N, 4.0, "arxiv", seed=0)
setups = {
    "aggregated": ServingConfig(mode="aggregated", num_gpus=3, model=MODEL, gpu=GPU),
    "chunked": ServingConfig(mode="chunked", num_gpus=3, chunk_size=512, model=MODEL, gpu=GPU),
    "disaggregated 2:1": ServingConfig(mode="disaggregated", prefill_gpus=2, decode_gpus=1, model=MODEL, gpu=GPU),
    "disaggregated 1:2": ServingConfig(mode="disaggregated", prefill_gpus=1, decode_gpus=2, model=MODEL, gpu=GPU),
}
rates = [3.0, 6.0, 12.0, 18.0, 24.0] if FAST else [3.0, 6.0, 9.0, 12.0, 18.0, 24.0, 30.0]
sweep = ex.sweep_rates(reqs, rates, setups, SLOS)
viz.slo_curves(rates, sweep, SLOS, per_gpu={k: c.gpus for k, c in setups.items()}, clock=CLOCK).show()

# %%
goodput = {k: ex.goodput(reqs, c, SLOS, start=6.0, label=k) / c.gpus for k, c in setups.items()}
viz.goodput_bars(goodput, clock=CLOCK, slos=SLOS).show()
print(f"[{CLOCK}]")
for k, g in goodput.items():
    print(f"{k:>18}: {g:5.2f} requests/s per GPU within the SLOs")
assert goodput["disaggregated 2:1"] > goodput["aggregated"]
assert goodput["disaggregated 2:1"] > 1.5 * goodput["disaggregated 1:2"]

# %% [markdown]
# *What to look for:* aggregated loses on ITL first (stalls); chunked and disaggregated hold the
# ITL SLO much longer. With long prompts most of the work is prefill, so 2 prefill GPUs for one
# decode GPU is the right shape, and 1:2 starves the prefill pool (TTFT explodes first). A ratio
# is a bet on the workload's prompt/answer mix.
#
# ## 3. Explore
#
# Pick the P:D split, the link, the workload and the SLOs. The other two modes always get the
# same number of GPUs. *goodput per GPU* runs the three searches (a few seconds).

# %%
dash = dashboards.DisaggDashboard(rate=12.0)   # 100 requests x 3 modes per change
dash

# %% [markdown]
# *What to look for:* with *ShareGPT* or *arXiv* and a slow link, disaggregated TTFT stays low
# (the first token comes from the prefill worker) while the status line's KV volume says what
# the link carries; 1:2 vs 2:1 flips which SLO breaks first; with *short prompts, long answers*
# there is little prefill to isolate.

# %%
before = list(dash.figures["ttft"].data[2].y)
dash.controls["split"].value = "2:1"
assert list(dash.figures["ttft"].data[2].y) != before

# %% [markdown]
# ## 4. When disaggregation loses
#
# Users of disaggregated stacks regularly report them slower than aggregated serving
# (dynamo#402, sglang#6411). Three reasons you can reproduce here.
#
# **A slow link.** The KV transfer sits between the first and the second token, so TTFT does
# not see it and an ITL p99 over thousands of gaps barely does, but the user sees the stream
# pause right after the first word. Same arXiv requests at 8 requests/s on 1 + 1 GPUs, per link:

# %%
pause = {}
print(f"[{CLOCK}]")
for label, link in ex.progress(ex.LINK_OPTIONS, "links"):
    r = run_serving(make_requests(N, 8.0, "arxiv", seed=0),
                    ServingConfig(mode="disaggregated", link=link, model=MODEL, gpu=GPU))
    pause[link] = float(np.percentile(analysis.first_gaps(r), 90)) * 1e3
    met = r.summary(SLOS)["slo_attainment"]["all_met"]
    print(f"{label:>26}: pause after the first token p90 {pause[link]:7.0f} ms; SLOs {'met' if met else 'missed'}")
viz.value_bars(pause, "Pause between the first and second token (p90), by KV link",
               "ms (log scale)", clock=CLOCK, fmt="{:.0f}", log_y=True,
               colors={k: "#2ca02c" for k in pause}).show()
assert pause["eth-25g"] > 10 * pause["nvlink"]

# %% [markdown]
# *What to look for:* on 25 GbE the link saturates and the pause grows to most of a second,
# while the SLO report still says *met*: write an SLO on time-to-second-token (or E2E) if your
# KV crosses a network.
#
# **Low traffic.** At 1 request/s nothing interferes with anything: aggregated already meets the
# SLOs, and the disaggregated prefill GPU sits idle most of the time.

# %%
low = make_requests(N // 2, 1.0, "arxiv", seed=0)
busy = {}
print(f"[{CLOCK}]")
for label, cfg in {"aggregated": ServingConfig(mode="aggregated", num_gpus=2, model=MODEL, gpu=GPU),
                   "disaggregated": ServingConfig(mode="disaggregated", model=MODEL, gpu=GPU)}.items():
    r = run_serving(low, cfg)
    s = r.summary(SLOS)
    for w, b in analysis.busy_share(r).items():
        busy[f"{label}: {w}"] = b
    print(f"{label:>14}: SLOs {'met' if s['slo_attainment']['all_met'] else 'missed'}, "
          f"TTFT p90 {s['ttft_s']['p90'] * 1e3:.0f} ms, ITL p99 {s['itl_s']['p99'] * 1e3:.1f} ms")
viz.value_bars(busy, "Share of the time each GPU is busy at 1 request/s", "busy share", clock=CLOCK,
               fmt="{:.0%}").show()
assert busy["disaggregated: prefill0"] < 0.25

# %% [markdown]
# **Short prompts, long answers.** When almost all the work is decode, the prefill pool has
# little to do, and one decode GPU carries every stream that two chunked GPUs would share.
# 64-token prompts, 512-token answers, 16 requests/s on 2 GPUs:

# %%
short = make_requests(N, 16.0, Lengths("fixed", a=64, b=512), seed=0)
pair = {"chunked": ServingConfig(mode="chunked", num_gpus=2, chunk_size=512, model=MODEL, gpu=GPU),
        "disaggregated": ServingConfig(mode="disaggregated", prefill_gpus=1, decode_gpus=1, model=MODEL, gpu=GPU)}
e2e, tpot = {}, {}
print(f"[{CLOCK}]")
for label, cfg in pair.items():
    r = run_serving(short, cfg)
    s = r.summary(SLOS)
    e2e[label], tpot[label] = s["e2e_s"]["p90"], s["tpot_s"]["p50"]
    shares = ", ".join(f"{w} {b:.0%}" for w, b in analysis.busy_share(r).items())
    print(f"{label:>14}: SLOs {'met' if s['slo_attainment']['all_met'] else 'missed'}, TPOT p50 "
          f"{tpot[label] * 1e3:.1f} ms, E2E p90 {e2e[label]:.2f} s; busy: {shares}")
viz.value_bars(e2e, "Time to the whole answer (E2E p90), 64-token prompts, 512-token answers", "seconds",
               clock=CLOCK + "; 2 GPUs each; 16 requests/s", fmt="{:.2f} s").show()
assert e2e["disaggregated"] > e2e["chunked"] and tpot["disaggregated"] > tpot["chunked"]

# %% [markdown]
# *What to look for:* both setups meet the SLOs, but disaggregated answers arrive later: its single
# decode GPU runs twice the batch, while the prefill GPU is busy about a tenth of the time.

# %% [markdown]
# ## 5. Measured: worker processes and a real KV transfer
#
# Everything above was simulated. `pdlab serve-disagg` runs the same schedulers for real: each
# worker is its own process holding the tiny model and a paged KV cache, the prompt is prefilled
# in one, and its KV blocks cross to the other through `torch.distributed` (NCCL between GPUs,
# gloo here), per layer while the prefill still runs, or per block afterwards. The numbers below
# were **measured on a CPU with the gloo backend** (two worker processes on one host, a loopback
# link, a machine shared with other jobs) by `bench/disagg_nccl.py`, and committed; they are read
# from that file, not recomputed. Beside them, the **simulator's** view of the same things.

# %%
from pdlab.lab import results
from pdlab.serving.link import Link

measured = results.load("disagg-cpu-gloo-2026-12-07.json")
MEASURED = measured["clock"]
sweep, check = measured["transfer_vs_prompt"], measured["link_model_check"]
print("measured:", MEASURED, "| load average", measured["load_average_1min"])
lines, predicted = {}, {}
for label in ("per-layer after prefill", "per-block"):
    by_len = sweep[label]["by_prompt_len"]
    lens = [int(n) for n in by_len]
    lines[label] = (lens, [v["seconds_median"] for v in by_len.values()])
    fit = check[label]["fitted_to_transfers"]
    link = Link("fitted", fit["gbps"], fit["latency_s"])
    predicted[label] = (lens, [(lambda a, b: b - a)(*link.send(0.0, v["bytes"])) for v in by_len.values()])
    print(f"{label:>24}: Link fitted to the transfers {fit['gbps']:.2f} GB/s + {fit['latency_s'] * 1e3:.2f} ms, "
          f"median error {fit['median_abs_rel_error']:.0%}; with the send benchmark's bandwidth "
          f"{check[label]['from_send_bench']['median_abs_rel_error']:.0%}")
overlap = sweep["per-layer overlapped"]["by_prompt_len"]
lines["per-layer overlapped: pause after the prefill"] = ([int(n) for n in overlap],
                                                          [max(v["exposed_s_median"], 1e-5) for v in overlap.values()])
viz.transfer_times(lines, predicted, MEASURED, "simulated Link (fitted to the measured transfers)").show()
longest = str(max(int(n) for n in overlap))
assert overlap[longest]["exposed_s_median"] <= sweep["per-layer after prefill"]["by_prompt_len"][longest]["seconds_median"]

# %% [markdown]
# *What to look for:* the wire time grows with the prompt (its KV), per-block pays one message
# per block where per-layer pays one per layer, and when the KV leaves layer by layer during the
# prefill almost nothing is left to wait for once the prefill ends (the lowest line, drawn at
# 0.01 ms where it is zero). The simulator's `Link` (a latency plus bytes over a bandwidth) is the
# dashed line: its error is printed above.
#
# The same schedulers on the same processes, serving the same requests at the same rate: 1P1D
# against aggregated and chunked on one worker and on two independent replicas, measured, next
# to what the cost model predicts for them (its generic `cpu` preset, not calibrated to this
# machine: compare the shapes, not the values).

# %%
lat = measured["latency"]["prompt-heavy"]
rate = min(lat["rates"], key=float)
row = lat["rates"][rate]
sim_setups = {"disaggregated 1P1D (2 workers)": dict(mode="disaggregated"),
              "aggregated x1": dict(mode="aggregated", num_gpus=1), "chunked x1": dict(mode="chunked", num_gpus=1, chunk_size=256),
              "aggregated x2 (replicas)": dict(mode="aggregated", num_gpus=2),
              "chunked x2 (replicas)": dict(mode="chunked", num_gpus=2, chunk_size=256)}
wl = make_requests(24, float(rate), Lengths("fixed", a=lat["input_len"], b=lat["output_len"]), seed=1)
SIM_CPU = viz.sim_label("tiny", "cpu")
sim = {k: run_serving(wl, ServingConfig(model="tiny", gpu="cpu", link=check["per-layer after prefill"]["fitted_to_transfers"]["gbps"],
                                        num_blocks=1024, **kw)).summary()
       for k, kw in sim_setups.items()}
for metric, q in (("ttft", 50), ("itl", 99)):
    viz.side_by_side({k: v[f"{metric}_p{q}_s"] for k, v in row.items()}, {k: s[f"{metric}_s"][f"p{q}"] for k, s in sim.items()},
                     f"{metric.upper()} p{q}, prompt-heavy ({lat['input_len']} + {lat['output_len']} tokens) at {rate} requests/s",
                     "ms", MEASURED, SIM_CPU).show()
print(f"[{MEASURED}] vs [{SIM_CPU}]")
for k, v in row.items():
    print(f"{k:>32}: measured TTFT p50 {v['ttft_p50_s'] * 1e3:6.0f} ms, ITL p99 {v['itl_p99_s'] * 1e3:6.0f} ms | "
          f"simulated {sim[k]['ttft_s']['p50'] * 1e3:6.0f} / {sim[k]['itl_s']['p99'] * 1e3:6.0f} ms")
assert all(v["completed"] == 24 for v in row.values())

# %% [markdown]
# *What to look for:* measured, the aggregated worker's ITL p99 is a whole prefill (a stream
# waits for every prompt), while 1P1D keeps prompts off the decode worker. The simulated bars
# barely differ: the generic `cpu` preset thinks this tiny model's steps take a few milliseconds,
# so at this rate nothing interferes; the real steps on a shared CPU take tens to hundreds. A
# simulation describes a machine only once it is calibrated to it (`pdlab calibrate`). And on
# this CPU every process competes for the same two cores, so two busy workers slow each other
# down in a way two GPUs would not: the GPU run is one command away (`docs/DISAGG.md`).

# %% [markdown]
# ## Key points
#
# - Disaggregation removes prefill-decode interference by construction: no decode waits for a prompt.
# - It adds a KV transfer per request (GBs per long prompt) that lands between the first and second
#   token, and it splits the GPUs into two pools that must be sized for the workload.
# - Judge it by goodput per GPU under your SLOs, at your traffic, against chunked serving on the same GPUs.
# - It loses with a slow link, at low traffic (idle pools), and when there is little prefill to isolate.
#
# ## Going further
#
# 1. Which P:D ratio maximises goodput per GPU for `sharegpt`? For `mooncake-conv`? Why do they differ?
# 2. Llama-2-7B has 4x the KV per token of Llama-3-8B (lab 03): how does that change the link verdict?
# 3. Add an SLO on E2E (`SLO("e2e", 90, 5.0)`): does it catch the slow link?
# 4. DistServe also places prefill and decode with different tensor parallelism: what would
#    `tp=2` on the prefill pool buy for 8k-token prompts?
