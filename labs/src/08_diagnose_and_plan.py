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
# # Lab 08 — Diagnosis and planning: which phase is hurting us?
#
# **Time:** about 35 minutes of teaching and 20 minutes of exercises.
# **Prerequisites:** labs 04 (interference), 05 (chunked prefill) and 06 (disaggregation).
#
# **Questions you will be able to answer**
#
# 1. Given someone's traffic, which phase is hurting, and which numbers say so?
# 2. Which serving shape should you predict for code completion, chat and agent traffic?
# 3. When does disaggregation win and when does it lose, as the SLO mix changes?
#
# Do not begin with "how many GPUs do we need?": begin with "which phase is hurting us?".
# `pdlab diagnose` answers the design questions for a trace and maps the evidence to the symptom
# table; `pdlab plan` then searches the serving shapes for the best goodput per GPU. Every number
# here is **simulated** by the cost model (Llama-3-8B on H100s).

# %%
from pdlab import SLO, ServingConfig, viz
from pdlab import plan as P
from pdlab.diagnose import observe, render, report
from pdlab.lab import checks, env, mystery
from pdlab.lab.diagnose_dashboard import DiagnoseDashboard
from pdlab.viz import diagnosis as vd
from pdlab.workload import with_rate

info = env.report()            # seeds every random source; says what hardware backs the numbers
FAST = env.FAST                # CI (PDLAB_FAST=1): small workloads, same lessons
MODEL, GPU = "llama-3-8b", "h100"
CLOCK = viz.sim_label(MODEL, GPU)   # every number below is simulated by the cost model
print("numbers in this lab:", CLOCK)

N = 200 if FAST else 600
SLOS = [SLO("ttft", 90, 0.5), SLO("tpot", 90, 0.05)]   # interactive chat targets
print("SLOs:", ", ".join(map(str, SLOS)))

# %% [markdown]
# ## 1. Three mystery traces
#
# Three services send traffic to the same two H100s (aggregated serving, as vLLM v0 ran it). The
# traces are generated with stated parameters (`pdlab.lab.mystery`):

# %%
RATES = {"code_completion": 6.0, "chat": 8.0, "agent": 3.0}   # requests per second
traces = {k: f(N, RATES[k], seed=0) for k, f in mystery.TRACES.items()}
for k, p in mystery.PARAMS.items():
    print(f"{k:>15} at {RATES[k]:g} req/s: {p}")

deploy = ServingConfig(mode="aggregated", num_gpus=2, model=MODEL, gpu=GPU)
obs = {k: observe.simulate(r, deploy) for k, r in traces.items()}
reps = {k: report(o, deploy, SLOS) for k, o in obs.items()}
print(render.text(reps["code_completion"]))

# %% [markdown]
# *What to look for:* each row of the table states its test and threshold and the value it read;
# the verdict names the first thing to inspect. Now the three side by side:

# %%
print(f"[{CLOCK}; 2 GPUs aggregated]")
for k, rep in reps.items():
    ev, d = rep["evidence"], rep["diagnosis"]
    print(f"{k:>15}: {ev['phases']['verdict']:>12} (prefill {ev['phases']['prefill_share']:.0%} of GPU-s); "
          f"fires: {', '.join(d['ranked']) or 'nothing'}")
vd.symptom_bars(reps["chat"]["diagnosis"], CLOCK + "; chat, 2 GPUs aggregated").show()
fired = {k: rep["diagnosis"]["ranked"] for k, rep in reps.items()}
share = {k: rep["evidence"]["phases"]["prefill_share"] for k, rep in reps.items()}
assert reps["code_completion"]["evidence"]["phases"]["token_ratio_in_out"] > 50
assert share["code_completion"] > max(share["chat"], share["agent"])
assert "phase interference" in fired["chat"]
assert "missed prefix reuse" in fired["agent"]

# %% [markdown]
# *What to look for:* code completion sends over a hundred prompt tokens per answer token and
# spends the largest share of GPU time in prefill, yet decode still takes most of it: at a small
# decode batch every step reads all the weights for a few tokens (lab 01's roofline). Chat
# streams stutter whenever a long prompt is prefilled (interference). The agent re-sends its whole
# conversation every turn, so most prompt blocks are reusable, and a cache that is off reuses none.
#
# ## 2. The design questions, filled in
#
# The seed's checklist of design questions, answered by `diagnose` for each trace:

# %%
for i, item in enumerate(reps["chat"]["checklist"]):
    print(f"Q{i + 1}. {item['question']}")
    for k, rep in reps.items():
        print(f"    {k:>15}: {rep['checklist'][i]['answer']}")
vd.length_histograms(reps["code_completion"]["evidence"]["lengths"], CLOCK + "; code completion").show()
assert all(len(r["checklist"]) == 7 for r in reps.values())

# %% [markdown]
# ### Exercise 8.1 — counting SLO attainment as DistServe does
#
# `plan` counts a request as good only when it meets **both** SLOs at once, and asks that the
# share of good requests reach the SLOs' percentile (90%). Write `attainment(ttft, tpot,
# ttft_slo, tpot_slo)`: the share of requests with TTFT within its target **and** TPOT within its
# target. A one-token answer has TPOT NaN (no pace to miss); a request never served has TTFT inf.

# %%
import numpy as np


def attainment(ttft, tpot, ttft_slo, tpot_slo):
    # Ex 8.1: share of requests meeting both SLOs at once
    # BEGIN SOLUTION
    ttft, tpot = np.asarray(ttft, dtype=float), np.asarray(tpot, dtype=float)
    return float(((ttft <= ttft_slo) & (np.isnan(tpot) | (tpot <= tpot_slo))).mean())
    # END SOLUTION


# %%
checks.check_attainment(attainment);

# %%
o = obs["chat"]
both = checks.reference_attainment(o.ttft, o.tpot, 0.5, 0.05)
alone = {m: float(np.mean(np.nan_to_num(getattr(o, m), nan=0.0) <= t)) for m, t in (("ttft", 0.5), ("tpot", 0.05))}
print(f"chat on 2 GPUs: {alone['ttft']:.0%} within TTFT, {alone['tpot']:.0%} within TPOT, "
      f"{both:.0%} within both   [{CLOCK}]")
assert both <= min(alone.values())

# %% [markdown]
# ## 3. Predict, then plan
#
# Before you run the next cell, write down for each trace which shape you expect to win on 4 GPUs:
# aggregated, chunked (which token budget?) or disaggregated (which P:D split?). Then `plan`
# searches every configuration (a coarse bracket of each, then the ones that could still win,
# refined) for the best goodput per GPU under the SLOs. The agent trace is planned with the prefix
# cache on: the diagnosis said so.

# %%
space = dict(num_gpus=4, model=MODEL, gpu=GPU, chunks=(512, 2048), routers=("least-loaded",))
plans = {}
for k, reqs in traces.items():
    plans[k] = P.plan(reqs, P.Space(**space, prefix_cache=(k == "agent")), SLOS, jobs=1)
print(f"[{CLOCK}; 4 GPUs]")
for k, r in plans.items():
    b = r["best"]
    ups = ", ".join(f"{u['label']} {u['goodput_rps_per_gpu']:.2f}" for u in r["runner_ups"][:2])
    print(f"{k:>15}: best {b['label']} at {b['goodput_rps_per_gpu']:.2f} req/s per GPU "
          f"(binds: {b['binding']}); then {ups or '-'}")
vd.pareto(plans["chat"]).show()
assert all(r["met"] for r in plans.values())

# %% [markdown]
# *What to look for:* the Pareto view (AIConfigurator's) puts every simulated point of every
# configuration at its throughput per GPU against the token rate each user sees; the front is what
# you can buy. Was your prediction right? The binding SLO says what to relax or buy for.
#
# ## 4. When disaggregation wins, and when it loses: the SLO mix decides
#
# The same chat traffic on 4 GPUs, aggregated replicas against the best disaggregated split,
# under two SLO mixes: a tight TTFT with a loose ITL, and a loose TTFT with a tight ITL.

# %%
mixes = {"tight TTFT, loose ITL": [SLO("ttft", 90, 0.3), SLO("itl", 99, 0.2)],
         "loose TTFT, tight ITL": [SLO("ttft", 90, 3.0), SLO("itl", 99, 0.03)]}
chat = mystery.chat(200, 1.0, seed=0)
best = {}
for mix, slos in mixes.items():
    r = P.plan(chat, P.Space(num_gpus=4, model=MODEL, gpu=GPU, modes=("aggregated", "disaggregated"), tps=(1,),
                             routers=("least-loaded",)), slos, count="percentile", jobs=1)
    for c in r["candidates"]:
        best.setdefault((mix, c["mode"]), c)
bars = {f"{m} / {mix}": best[(mix, m)]["goodput_rps_per_gpu"] for mix in mixes for m in ("aggregated", "disaggregated")}
viz.value_bars(bars, "Goodput per GPU by SLO mix: chat on 4 GPUs", "requests/s per GPU", clock=CLOCK,
               fmt="{:.1f}").show()
print(f"[{CLOCK}; 4 GPUs]")
for (mix, m), c in best.items():
    print(f"{mix:>22} {m:>13}: {c['label']:<26} {c['goodput_rps_per_gpu']:6.2f} req/s per GPU, binds {c['binding']}")
a, b = list(mixes)
assert best[(a, "aggregated")]["goodput_rps_per_gpu"] > best[(a, "disaggregated")]["goodput_rps_per_gpu"]
assert best[(b, "disaggregated")]["goodput_rps_per_gpu"] > 2 * best[(b, "aggregated")]["goodput_rps_per_gpu"]

# %% [markdown]
# *Why:* with a tight TTFT and a loose ITL, every GPU of an aggregated deployment prefills the
# moment a prompt arrives (prefill priority) and the stutter it causes is allowed; a disaggregated
# deployment has only its prefill pool for prompts, so TTFT binds sooner and the decode GPU idles.
# With a loose TTFT and a tight ITL, the stall every prompt puts into every aggregated stream
# breaks the ITL SLO at a low rate, while the disaggregated decode pool never runs a prompt.
# Disaggregation buys decode smoothness with prefill capacity: it wins when ITL (or TPOT) binds.
#
# ## 5. Explore
#
# Move the rate: the symptom table redraws. Which row fires first as the load grows, for each
# trace and serving shape? (2 GPUs; 150 requests per change.)

# %%
dash = DiagnoseDashboard(n=100 if FAST else 150, rate=4.0)
dash

# %%
before = list(dash.figures["symptoms"].data[0].y)
dash.controls["rate"].value = 12.0
assert list(dash.figures["symptoms"].data[0].y) != before

# %% [markdown]
# ## Key points
#
# - Start from the traffic, not the GPU count: lengths, prefill vs decode work, reuse, what a long
#   prompt does to the streams, and which SLO binds tell you which phase is hurting.
# - Each symptom has a test with a threshold and a first thing to change: prefill capacity,
#   the decode batch, KV memory, chunking or disaggregation, prefix caching.
# - Plan by goodput per GPU under your SLOs, counted per request (both SLOs at once); check the
#   binding SLO and the Pareto front, not just the winner.
# - Disaggregation trades prefill capacity for decode smoothness: it wins when ITL/TPOT binds and
#   loses when TTFT binds.
#
# ## Going further
#
# 1. Diagnose `data/traces/mooncake_conv.jsonl` with and without `--prefix-cache`
#    (`pdlab diagnose data/traces/mooncake_conv.jsonl --num-requests 500 --rate 2`): which row moves?
# 2. Plan the agent trace with the prefix cache off: how much goodput does reuse buy?
# 3. Run `pdlab plan --count percentile` on the chat trace: why can the per-percentile count give a
#    higher goodput than DistServe's per-request count?
# 4. Feed `pdlab diagnose` a `vllm bench serve --save-result --save-detailed` JSON from your own
#    server: which rows can it still test without iteration logs?
