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
# # Lab 04 — Interference: one long prompt freezes every stream
#
# **Time:** about 20 minutes of teaching and 15 minutes of exercises.
# **Prerequisites:** lab 01 (prefill vs decode); lab 03 (the KV cache) helps.
#
# **Questions you will be able to answer**
#
# 1. Why does one long prompt freeze every running stream in aggregated serving?
# 2. Which metric shows it — TTFT, TPOT or ITL — and at which percentile?
# 3. How do the long prompt's length and the arrival rate change the damage?
#
# Every number is **simulated** by the cost model (Llama-3-8B on one H100 unless you change it).

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

N = 200 if FAST else 600       # requests per simulated run
RATE = 6.0                     # requests/s on one GPU
STALL = 0.1                    # a gap between two tokens longer than this is a visible freeze

# %% [markdown]
# ## 1. The scene
#
# **Aggregated** serving (continuous batching with prefill-only iterations, as vLLM v0 schedules
# them; Orca, which introduced iteration-level batching, mixes prefill and decode in one
# iteration instead, closer to lab 05's chunked mode): one
# GPU runs every request; when a prompt arrives it is prefilled *whole*, in an iteration of its
# own, and only then do the running streams decode their next token. The workload is pdlab's
# `chat-long` mix: short chats (prompts around 256 tokens, answers around 128) and, 5% of the
# time, an 8192-token retrieval prompt.

# %%
agg = ex.simulate("chat-long", N, RATE, mode="aggregated", model=MODEL, gpu=GPU)
window = analysis.stall_window(agg, span=3.0)      # 3 s around a long prompt's arrival
viz.token_raster(agg, max_requests=60, t_range=window, stall_s=STALL).show()

# %% [markdown]
# Each row is a request, each dot a token. The orange band is the prefill of the long prompt:
# for its whole duration **no stream emits a token** (red: gaps longer than 100 ms). The batch
# timeline shows why: one wide, all-orange iteration with no decode tokens in it.

# %%
viz.batch_timeline(agg, t_range=(window[0] + 0.7, window[0] + 1.7)).show()
long_steps = [s for s in agg.steps if s[3] >= 4096]          # (worker, start, end, prefill, decode, kv)
worst = max(long_steps, key=lambda s: s[2] - s[1])
print(f"the longest prefill iteration: {worst[3]} prompt tokens, {(worst[2] - worst[1]) * 1e3:.0f} ms, "
      f"{worst[4]} decode tokens in it   [{CLOCK}]")
assert worst[4] == 0 and worst[2] - worst[1] > STALL

# %% [markdown]
# ## 2. Which metric sees it?
#
# - **TTFT** (arrival to first token) of the *chats* that arrive during the long prefill grows:
#   they queue behind it.
# - **TPOT** (a request's mean time per output token) barely moves: one 230 ms gap spread over
#   128 tokens is 2 ms.
# - **ITL** (every gap between two tokens) holds the stall, but only as one gap per stream per
#   long prompt: the p99 may hide it and the tail shows it.
#
# Compare with **chunked prefill** (lab 05) on the same requests: the long prompt is cut into
# 512-token pieces that share iterations with the decodes.

# %%
chunked = ex.simulate("chat-long", N, RATE, mode="chunked", chunk_size=512, model=MODEL, gpu=GPU)
results = {"aggregated": agg, "chunked": chunked}
summaries = {k: r.summary() for k, r in results.items()}
for metric in ("ttft", "tpot", "itl"):
    viz.percentile_bars(summaries, metric, clock=CLOCK).show()
viz.cdf(viz.metric_arrays(results, "itl"), "itl", clock=CLOCK, log_x=True, tail=True, slo=STALL,
        slo_text="freeze").show()

# %% [markdown]
# *What to look for:* the tail plot draws the share of gaps **longer** than x: chunked stops
# around 20 ms, aggregated keeps a tail out to the long prefill's duration. The p99 bars differ
# less than the tail does: a stall is rare per gap but common per user.

# %%
itl_p99_aggregated = summaries["aggregated"]["itl_s"]["p99"]
itl_p99_chunked = summaries["chunked"]["itl_s"]["p99"]
frozen = {k: float(np.mean(analysis.max_gaps(r) > STALL)) for k, r in results.items()}
print(f"ITL p99: aggregated {itl_p99_aggregated * 1e3:.1f} ms, chunked {itl_p99_chunked * 1e3:.1f} ms; "
      f"streams that froze > {STALL * 1e3:.0f} ms: aggregated {frozen['aggregated']:.0%}, "
      f"chunked {frozen['chunked']:.0%}   [{CLOCK}]")
assert itl_p99_aggregated > itl_p99_chunked
assert frozen["aggregated"] > 0.05 and frozen["chunked"] < frozen["aggregated"] / 2

# %% [markdown]
# ### Exercise 4.1 — how many users saw their stream freeze?
#
# Write `frozen_share(result, threshold_s)`: among finished requests
# (`s.status is Status.FINISHED` for `s` in `result.sequences`), the share whose **longest gap**
# between two consecutive tokens (`s.token_times`) is longer than `threshold_s`. A one-token
# answer has no gap (count it as not frozen).

# %%
from pdlab.request import Status


def frozen_share(result, threshold_s):
    # Ex 4.1: share of finished requests whose longest inter-token gap exceeds threshold_s
    # BEGIN SOLUTION
    frozen = total = 0
    for s in result.sequences:
        if s.status is not Status.FINISHED:
            continue
        total += 1
        t = np.asarray(s.token_times)
        if t.size > 1 and np.diff(t).max() > threshold_s:
            frozen += 1
    return frozen / total if total else 0.0
    # END SOLUTION


# %%
checks.check_frozen_share(frozen_share);

# %% [markdown]
# ## 3. How big, how often?
#
# A stall lasts at least as long as the long prompt's prefill, which grows a little faster than
# linearly (attention is quadratic in the prompt). The *longest* stalls last longer still: when
# long prompts arrive close together, prefill priority runs them back to back, and every stream
# waits for all of them (the lines under the figure count the prefill tokens inside each longest
# stall). How many users a stall hits depends on how many streams are running, so on the rate.
# Two sweeps (same requests, one knob at a time); in the rate sweep, aggregated's ITL and TPOT
# tails climb with the load while chunked's stay nearly flat, and TTFT p99 is mostly the long
# prompts' own prefill in both:

# %%
lengths = [2048, 4096, 8192, 16384]
stall_ms, frozen_by_len, ttft99, inside = [], [], [], []
for L in ex.progress(lengths, "long-prompt sizes"):
    r = ex.simulate(Lengths("mix", a=256, b=128, long_len=L, long_share=0.05), N, RATE,
                    mode="aggregated", model=MODEL, gpu=GPU)
    g = analysis.max_gaps(r)
    stall_ms.append(float(g.max()) * 1e3)
    inside.append(analysis.longest_stall(r))
    frozen_by_len.append(float(np.mean(g > STALL)) * 100)
    ttft99.append(r.summary()["ttft_s"]["p99"] * 1e3)
viz.sweep_lines(lengths, {"longest stall (ms)": stall_ms, "TTFT p99 (ms)": ttft99},
                "Aggregated: the longer the long prompt, the longer every stream freezes",
                "long prompt (tokens), log scale", "ms (log scale)", clock=CLOCK, log_x=True, log_y=True,
                hlines={f"{STALL * 1e3:.0f} ms": STALL * 1e3}).show()
cm = CostModel.from_names(GPU, MODEL)
print(f"streams frozen > {STALL * 1e3:.0f} ms: "
      + ", ".join(f"{L} tokens {v:.1f}%" for L, v in zip(lengths, frozen_by_len)) + f"  [{CLOCK}]")
for L, st in zip(lengths, inside):
    print(f"  {L:5d}-token prompts: longest stall {st['gap_s'] * 1e3:5.0f} ms = {st['prefill_iterations']} "
          f"prefill iterations, {st['prefill_tokens']:,} prompt tokens back to back "
          f"(one {L}-token prefill alone: {cm.prefill_time(L) * 1e3:.0f} ms)")
assert stall_ms[-1] > 4 * stall_ms[0]
# the longest stall lasts at least one long prefill, and holds at least that prompt's tokens
assert all(st["gap_s"] >= cm.prefill_time(L) and st["prefill_tokens"] >= L for L, st in zip(lengths, inside))

# %%
rates = [2.0, 4.0, 8.0, 12.0]
curves = {"aggregated": [], "chunked": []}
latency = {f"{m} {k}": [] for m in curves for k in ("TTFT p99", "TPOT p99", "ITL p99")}
for rate in ex.progress(rates, "rates"):
    for mode in curves:
        r = ex.simulate("chat-long", N, rate, mode=mode, model=MODEL, gpu=GPU,
                        **({"chunk_size": 512} if mode == "chunked" else {}))
        curves[mode].append(float(np.mean(analysis.max_gaps(r) > STALL)) * 100)
        s = r.summary()
        for k in ("TTFT p99", "TPOT p99", "ITL p99"):
            latency[f"{mode} {k}"].append(s[k.split()[0].lower() + "_s"]["p99"] * 1e3)
viz.sweep_lines(rates, curves, f"Share of streams that froze > {STALL * 1e3:.0f} ms vs load",
                "requests/s", "% of requests", clock=CLOCK).show()
viz.sweep_lines(rates, latency, "Latency percentiles vs load", "requests/s", "ms (log scale)",
                clock=CLOCK, log_y=True).show()
assert curves["aggregated"][-1] > curves["aggregated"][0]
assert max(curves["chunked"]) < min(curves["aggregated"][1:])
assert latency["aggregated ITL p99"][-1] > latency["chunked ITL p99"][-1]   # at the highest load

# %% [markdown]
# ## 4. Explore
#
# Change the rate, the long prompt's length and its share; switch the mode to `chunked` to
# preview lab 05. The second figure is the CDF of each request's longest gap: the dashed line
# is the 100 ms freeze threshold.

# %%
dash = dashboards.InterferenceDashboard(rate=RATE)   # 150 requests: fast enough to drag
dash

# %% [markdown]
# *What to look for:* a 32k-token prompt freezes streams for about a second; raise the share
# to 0.2 and almost every user sees a freeze, while TPOT hardly changes. In `chunked` mode the red
# marks disappear and the orange band becomes a series of thin stripes.

# %%
before = np.array(dash.figures["raster"].data[1].x)
dash.controls["long_len"].value = 16384
assert not np.array_equal(before, dash.figures["raster"].data[1].x)

# %% [markdown]
# ## Key points
#
# - Aggregated serving runs a whole prompt in an iteration of its own: every stream waits for it.
# - A stall lasts at least the long prefill's time (hundreds of ms for 8k tokens on an H100) and
#   hits every running stream at once; long prompts that arrive together are prefilled back to
#   back, and the freezes add up.
# - TPOT hides it; ITL holds it, in the tail; "share of streams that froze" says it in user terms.
# - Longer prompts make longer freezes; more load makes more users see them.
#
# ## Going further
#
# 1. Why does TTFT p99 also grow with the long prompt, for the *short* chats?
# 2. With `max_batched_tokens` (the `chunk_size` of aggregated mode) a prompt is still never split:
#    what would that limit protect, and what not?
# 3. A bursty arrival process (`make_requests(..., burstiness=4)`) at the same mean rate: more
#    or fewer frozen streams? Why?
# 4. Which SLO would you write so that it catches this problem? (Hint: which metric keeps one
#    long pause as a pause rather than averaging it away, and which percentile still sees a
#    pause that hits one gap in a hundred?)
