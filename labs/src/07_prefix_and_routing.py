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
# # Lab 07 — Prefix reuse and KV-aware routing
#
# **Time:** about 30 minutes of teaching and 15 minutes of exercises.
# **Prerequisites:** lab 03 (KV cache) and lab 05 (chunked prefill).
#
# **Questions you will be able to answer**
#
# 1. Why does a long conversation get more expensive with every turn, and what does a prefix cache save?
# 2. Why does a router that ignores the caches throw that saving away, and what does a KV-aware router weigh?
# 3. What goes wrong with too much affinity, and what with too little?
# 4. When does keeping evicted KV in host memory pay, and when is recomputing it cheaper?
#
# Every number is **simulated** by the cost model (Llama-3-8B on H100 replicas, chunked prefill with
# a 512-token budget, prefix cache on) and printed with its clock.

# %%
import json

from pdlab import viz
from pdlab.lab import checks, env
from pdlab.lab import routing as rt
from pdlab.paths import ROOT
from pdlab.run import cost_model_for, sim_clock
from pdlab.sessions import make_sessions

info = env.report()            # seeds every random source; says what hardware backs the numbers
FAST = env.FAST                # CI (PDLAB_FAST=1): fewer requests, same lessons
CLOCK = sim_clock(rt.LAB07)    # every number below is simulated by the cost model
print("numbers in this lab:", CLOCK)

N = 400 if FAST else 1500      # Mooncake requests per run

# %% [markdown]
# ## 1. A conversation grows with every turn
#
# A chat turn sends the whole conversation so far: the system prompt, every earlier question and
# answer, then the new question. Without a cache each turn prefills all of it again, so the prefill
# work of a session grows with the square of its length. A **prefix cache** keeps the KV of blocks
# already computed (named by a hash of their content and everything before them) and computes only
# the new part. One session of the `agent-sessions` preset (2048-token shared system prompt):

# %%
sessions = make_sessions(200, 1.0, "agent-sessions", seed=0)
by_session = {}
for r in sessions:
    by_session.setdefault(r.session_id, []).append(r)
longest = max(by_session.values(), key=len)
viz.prefix.conversation_cost(longest).show()
tok = viz.prefix.conversation_tokens(longest)
print(f"{len(longest)} turns: {tok['without_cache'].sum()} prefill tokens without a cache, "
      f"{tok['with_cache'].sum()} with the history cached (token counts, no clock)")
assert tok["with_cache"].sum() < 0.5 * tok["without_cache"].sum()

# %% [markdown]
# *What to look for:* the orange bars climb turn after turn; the blue ones stay at the size of the
# newest message. But the saving exists only on the replica that holds the history.
#
# ## 2. Routers on the Mooncake conversation trace
#
# The shipped Mooncake (FAST'25) trace names each prompt's 512-token blocks with `hash_ids`: equal ids,
# equal content. pdlab maps them onto its 16-token blocks and replays them on 4 replicas behind each router:
#
# - **round-robin** and **least-loaded** ignore the caches;
# - **session** sticks a session to one replica (the trace has no session ids: it falls back to least-loaded);
# - **kv-aware** is Dynamo's KV router: for each replica
#   `cost = overlap_weight × prefill_blocks + decode_blocks`, where prefill_blocks are the prompt's
#   blocks that replica does not hold plus the prefill already queued there, and decode_blocks the
#   KV it holds; the lowest cost wins. It learns what each replica holds from **KV events** (blocks
#   stored / removed), never by reading a replica's memory.

# %%
runs = rt.compare_routers(N)
runs["kv-aware, weight 0"] = rt.run(N, router="kv-aware", overlap_weight=0.0)   # its load term alone
viz.prefix.router_bars(runs).show()
print(f"first {N} requests of the Mooncake trace, 4 replicas   [{CLOCK}]")
for name, s in runs.items():
    print(f"{name:>18}: hit rate {s['prefix_hit_rate']:.3f} (unbounded cache {s['prefix_hit_rate_upper_bound']:.3f}), "
          f"TTFT p50 {s['ttft_s']['p50']:.2f} s, p90 {s['ttft_s']['p90']:.2f} s, {s['throughput_tok_s']:.0f} tok/s")
assert runs["kv-aware"]["prefix_hit_rate"] >= runs["round-robin"]["prefix_hit_rate"]
assert runs["kv-aware"]["ttft_s"]["p90"] < 0.7 * runs["round-robin"]["ttft_s"]["p90"]

# %% [markdown]
# The same comparison on the first 3000 requests, from the committed benchmark
# (`bench/prefix_routing.py`, `bench/results/prefix-routing-cpu-2026-12-07.json`):

# %%
bench = json.loads((ROOT / "bench" / "results" / "prefix-routing-cpu-2026-12-07.json").read_text())
print(bench["trace"], f"[{bench['clock']}]")
for r in bench["sections"]["routers"] + bench["sections"]["weights"][:1]:
    print(f"{r['name']:>28}: hit rate {r['hit_rate']:.3f}, TTFT p50 {r['ttft_p50_s']:.2f} s, "
          f"p90 {r['ttft_p90_s']:.2f} s, {r['throughput_tok_s']:.0f} tok/s")

# %% [markdown]
# *What to look for:* on these requests every router gets about the same hit rate, yet kv-aware cuts
# the TTFT tail: its cost counts load in blocks, the prefill queued on each replica plus the KV it
# holds, where least-loaded counts requests (a 30k-token Mooncake prompt is a hundred times the work
# of a 300-token one). With overlap weight 0 only the KV held counts, and the tail grows back part of
# the way. The hit rate stays far below the unbounded-cache bound for every router: 4 replicas of
# ~420k tokens of KV each cannot keep conversations that come back minutes later (section 5 adds host
# memory). Throughput is the same for all routers: the trace's arrivals set it.
#
# ### Exercise 7.1 — a replica's cost by hand
#
# Write `kv_cost(prompt_blocks, device_hit, host_hit, queued, active, overlap_weight, load_weight)`:
# the blocks this replica would have to compute are `new = max(0, prompt_blocks - device_hit -
# 0.75 * host_hit)` (a block in host memory counts three quarters of one on the GPU: it must still be
# copied back); the cost is `overlap_weight * (new + load_weight * queued) + load_weight * active`.
# With `load_weight = 1` that is Dynamo's cost; `load_weight = 0` ignores load altogether.

# %%
def kv_cost(prompt_blocks, device_hit, host_hit, queued, active, overlap_weight, load_weight):
    # Ex 7.1: the kv-aware router's cost of one replica
    # BEGIN SOLUTION
    new = max(0.0, prompt_blocks - device_hit - 0.75 * host_hit)
    return overlap_weight * (new + load_weight * queued) + load_weight * active
    # END SOLUTION


# %%
checks.check_kv_cost(kv_cost);

# %%
# a 100-block prompt; replica A holds 90 of its blocks but is busy, B holds none and is idle
a = checks.reference_kv_cost(100, 90, 0, queued=200, active=6000)
b = checks.reference_kv_cost(100, 0, 0, queued=0, active=1000)
print(f"cost on A {a:.0f}, on B {b:.0f}: the router picks {'A' if a < b else 'B'}")
assert b < a                   # the load term can outweigh a cache hit

# %% [markdown]
# ## 3. Affinity against load: explore the weights
#
# Agent sessions (every session shares a 2048-token system prompt, 8 turns each) on kv-aware replicas.
# Each move of a slider runs one simulation and adds a point to the sweep. Raise the **overlap
# weight** and the router follows the caches; set the **load weight** to 0 and it follows nothing else.

# %%
dash = rt.RoutingDashboard(n=300 if FAST else 600)
dash

# %%
n_before = len(dash.figures["sweep"].data[0].x)
dash.controls["overlap_weight"].value = 4.0
assert len(dash.figures["sweep"].data[0].x) == n_before + 1
s0 = rt.run(dash.n, "agent-sessions", router="kv-aware", overlap_weight=0.0)
s4 = rt.run(dash.n, "agent-sessions", router="kv-aware", overlap_weight=4.0)
print(f"overlap weight 0: hit rate {s0['prefix_hit_rate']:.3f}; weight 4: {s4['prefix_hit_rate']:.3f}   [{CLOCK}]")
assert s4["prefix_hit_rate"] > s0["prefix_hit_rate"]

# %% [markdown]
# *What to look for:* at weight 0 the router balances load only and loses the sessions' histories;
# as the weight grows the hit rate climbs toward the unbounded-cache bound. With load weight 0 the
# busiest replica takes every request.
#
# ## 4. The hot spot
#
# One prefix that every request shares (a popular system prompt, a shared document), 40 requests a
# second. Pure affinity (load weight 0) sends every request to the first replica that cached it, which
# cannot keep up; the load term spreads them and each replica computes the prefix once.

# %%
hot = {f"load weight {lw:g}": rt.run_hot_spot(load_weight=lw) for lw in (0.0, 1.0)}
for name, s in hot.items():
    viz.prefix.replica_load(s).show()
    share = max(s["replica_load"]["requests"]) / sum(s["replica_load"]["requests"])
    print(f"{name}: busiest replica took {100 * share:.0f}% of requests, TTFT p90 {s['ttft_s']['p90']:.2f} s   [{CLOCK}]")
pile, spread = hot["load weight 0"], hot["load weight 1"]
assert max(pile["replica_load"]["requests"]) == sum(pile["replica_load"]["requests"])
assert spread["ttft_s"]["p90"] < pile["ttft_s"]["p90"] / 10

# %% [markdown]
# ## 5. A host-memory tier: reload or recompute?
#
# A replica's GPU holds a few hundred thousand tokens of KV; its host memory holds far more. With
# `--offload-gb`, prefix blocks evicted from the GPU go to host memory (LRU) and come back over PCIe
# when a prompt starts with them, charged to the step that uses them. Copying pays only while it is
# faster than recomputing (Mooncake's condition): a prefill of `t` tokens costs about `2 × params × t`
# FLOPs, a copy `t × KV bytes per token / bandwidth`.

# %%
cm = cost_model_for(rt.LAB07)
viz.prefix.offload_breakeven(cm, tokens=4096, context=0).show()
even = viz.prefix.breakeven_gbps(cm, 4096)
print(f"reloading 4096 tokens of Llama-3-8B KV beats recomputing them above {even:.1f} GB/s   [{CLOCK}]")
assert 1 < even < 50           # PCIe 5 (50 GB/s) is on the right side of it

# %%
tier = {"kv-aware": runs["kv-aware"], "kv-aware + 100 GB host": rt.run(N, router="kv-aware", offload_gb=100.0)}
viz.prefix.ttft_split_bars(tier).show()
viz.prefix.router_bars(tier).show()
off = tier["kv-aware + 100 GB host"]
print(f"host tier: GPU hits {off['prefix_hit_rate_device']:.3f} + host hits {off['prefix_hit_rate_host']:.3f}; "
      f"TTFT p50 {off['ttft_s']['p50']:.2f} s vs {runs['kv-aware']['ttft_s']['p50']:.2f} s   [{CLOCK}]")
assert off["prefix_hit_rate_host"] > 0
assert off["prefill_tokens_computed"] < runs["kv-aware"]["prefill_tokens_computed"]

# %% [markdown]
# *What to look for:* the transfer slice of TTFT is small next to the compute it replaces; on a slow
# link (try `offload_link="2"`, 2 GB/s) the router's replicas decline the reloads and recompute.
#
# ## Key points
#
# - Every turn of a conversation resends its history: a prefix cache turns that into a lookup, but only
#   on the replica that holds it.
# - A KV-aware router weighs the blocks a replica would have to compute against the load it already has
#   (Dynamo: `overlap_weight × prefill_blocks + decode_blocks`), learning cache contents from KV events.
# - Too little affinity loses the caches; too much piles a popular prefix onto one replica. The load term
#   is what prevents the hot spot.
# - Host memory extends the cache when copying back beats recomputing; the unbounded-cache bound says how
#   much reuse there is to win at all.
#
# ## Going further
#
# 1. Run kv-aware without KV events (`rt.run(N, router="kv-aware", kv_events=False)`): the router predicts
#    caches from its own decisions with a TTL. How much hit rate does it lose, and with `router_ttl=10`?
# 2. `router_temperature=0.5` samples replicas instead of taking the cheapest: when would you want that?
# 3. In a disaggregated cluster, `disagg_threshold=512` prefills short uncached prompts on the decode worker
#    (Dynamo's conditional disaggregation). Which requests of the Mooncake trace qualify?
# 4. Why is the hit rate with 8 replicas lower than with 4, on the same requests?
