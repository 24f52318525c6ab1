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
# # Lab 03 — The KV cache: paging, capacity and preemption
#
# **Time:** about 25 minutes of teaching and 15 minutes of exercises.
# **Prerequisites:** lab 01 (prefill vs decode, the roofline); lab 02 section 2 (block tables) helps.
#
# **Questions you will be able to answer**
#
# 1. How many bytes does one token's K and V take, and why does grouped-query attention matter?
# 2. How does the size of the KV cache cap the decode batch, and with it decode throughput?
# 3. What do paging and block tables buy over one contiguous buffer per sequence?
# 4. What happens when the cache is full: what is *preemption by recompute* and what does it cost?
#
# Every number in this lab is **simulated** by pdlab's roofline cost model (datasheet numbers,
# default efficiencies); the figures say which model and GPU.

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

N = 160 if FAST else 500       # requests per simulated run


# %% [markdown]
# ## 1. Bytes per token
#
# Decode reads, at every step, the K and V of every earlier token of every sequence in the batch.
# Those tensors live in the **KV cache**. Per token and per layer a model stores one K and one V
# vector for each **KV head**, `head_dim = hidden / heads` numbers each, in `kv_dtype_bytes`
# bytes (2 for bf16; usually the weights' `dtype_bytes`, but an engine may store the cache in
# another precision). Models with grouped-query attention (GQA: Llama-3, Mistral) keep fewer KV heads
# than query heads (8 vs 32), so their cache is 4x smaller than a multi-head model of the same
# width (Llama-2-7B keeps all 32).
#
# ### Exercise 3.1 — KV bytes per token
#
# Write `kv_bytes_per_token(m)` for a `ModelSpec` `m` (fields `layers`, `hidden`, `heads`,
# `kv_heads`, `kv_dtype_bytes`): the bytes of K **and** V that one token occupies over all layers.

# %%
def kv_bytes_per_token(m):
    # Ex 3.1: bytes of K and V for one token, all layers (m is a pdlab.models.ModelSpec)
    # BEGIN SOLUTION
    head_dim = m.hidden // m.heads
    return 2 * m.layers * m.kv_heads * head_dim * m.kv_dtype_bytes
    # END SOLUTION


# %%
checks.check_kv_bytes_per_token(kv_bytes_per_token);

# %% [markdown]
# The presets, with the package's reference (`ModelSpec.kv_bytes_per_token`), and what a
# 4096-token conversation holds:

# %%
print(f"{'model':>14} {'KV heads':>9} {'KiB/token':>10} {'GB per 4k-token sequence':>25}")
for name, m in MODELS.items():
    kv = m.kv_bytes_per_token
    print(f"{name:>14} {m.kv_heads:>9} {kv / 1024:>10.0f} {kv * 4096 / 1e9:>25.2f}")
# the teaching claim, checked: same width, 4x fewer KV heads, 4x less cache
assert MODELS["llama-2-7b"].kv_bytes_per_token == 4 * MODELS["llama-3-8b"].kv_bytes_per_token

# %% [markdown]
# ## 2. Memory caps the decode batch
#
# A GPU holds the weights, some workspace, and then KV: `CostModel.kv_capacity_tokens()` is what
# is left (90% of memory, minus weights, minus 1 GB), counted in tokens. Divide by the context
# length and you get the **most sequences that can decode together**. Decode is memory-bound
# (lab 01): every step reads all the weights once, whatever the batch, so a bigger batch is
# nearly free throughput, until the cache is full.

# %%
models = ["llama-3.2-1b", "llama-3-8b", "llama-2-7b", "opt-13b"]
viz.kv_capacity({m: CostModel.from_names(GPU, m) for m in models}, max_num_seqs=256).show()


# %% [markdown]
# *What to look for:* each line falls as 1/context. On an H100, Llama-3-8B holds about 100
# sequences of 4k tokens; the multi-head Llama-2-7B only a quarter of that, and OPT-13B about a dozen.
#
# ### Exercise 3.2 — the largest decode batch
#
# Write `max_decode_batch(cost_model, context)`: how many sequences of `context` tokens fit in
# the KV cache of `cost_model` (a `CostModel`; use its `kv_capacity_tokens()`).

# %%
def max_decode_batch(cost_model, context):
    # Ex 3.2: sequences of `context` tokens whose KV fits in the cache
    # BEGIN SOLUTION
    return cost_model.kv_capacity_tokens() // context
    # END SOLUTION


# %%
checks.check_max_decode_batch(max_decode_batch);

# %% [markdown]
# Now the throughput side: decode tokens/s against the batch for 2048-token contexts. The step
# time (= the inter-token latency every stream sees) barely moves while the batch grows, until
# attention's KV reads start to dominate; the red line is where the cache is full.

# %%
cm = CostModel.from_names(GPU, MODEL)
viz.decode_throughput(cm, context=2048, max_batch=1024).show()
cap = cm.kv_capacity_tokens() // 2048
t1, tcap = cm.decode_time(1, 2048), cm.decode_time(cap, 2048)
print(f"batch 1: {1 / t1:,.0f} tokens/s ({t1 * 1e3:.1f} ms/step); batch {cap}: {cap / tcap:,.0f} tokens/s "
      f"({tcap * 1e3:.1f} ms/step)   [{CLOCK}]")
assert cap / tcap > 20 / t1, "a full cache should give >20x the tokens/s of batch 1"

# %% [markdown]
# ## 3. Paging: block tables instead of one buffer per sequence
#
# A sequence's final length is unknown when it starts. Reserving a contiguous buffer of the
# maximum length for each sequence wastes most of the memory. A **paged** cache cuts memory
# into fixed blocks (here 16 tokens) and gives each sequence a **block table**, a list of block
# ids that grows as it generates. `pdlab.serving.kv.BlockManager` does the bookkeeping
# (`can_allocate`, `allocate`, `free`), nano-vllm style:

# %%
from pdlab.serving.kv import BlockManager
from pdlab.request import Request, Sequence

bm = BlockManager(num_blocks=10, block_size=4)
a = Sequence(Request(0, 0.0, prompt_len=6, max_new_tokens=4))
b = Sequence(Request(1, 0.0, prompt_len=9, max_new_tokens=4))
bm.allocate(a, 6)            # 6 tokens -> 2 blocks of 4
bm.allocate(b, 9)            # 9 tokens -> 3 blocks
print("a:", a.block_table, " b:", b.block_table, " free blocks:", bm.num_free)
a.num_computed = 6
bm.allocate(a, 3)            # a generates 3 more tokens: 9 tokens need a 3rd block
print("a after 3 more tokens:", a.block_table, " free:", bm.num_free)
bm.free(b)                   # b finishes: its blocks go back to the pool, in any order
print("after b finishes, free:", bm.num_free)
bm.check()                   # every block is free, used or cached, exactly once
assert bm.num_free == 10 - len(a.block_table)

# %% [markdown]
# How much memory does paging save on real conversation lengths? Compare three ways to hold the
# KV of 2,000 ShareGPT-like sequences: reserve the model's maximum length (8192) for each, reserve
# the prompt plus the request's `max_tokens` limit (2048 here, a common API default; the answer is
# usually much shorter), or page in 16-token blocks (waste: at most 15 slots per sequence).

# %%
reqs = make_requests(2000, 1.0, "sharegpt", seed=0)
used = np.array([r.prompt_len + r.max_new_tokens for r in reqs])
prompt = np.array([r.prompt_len for r in reqs])
ways = {
    "contiguous, max length 8192": np.full(used.size, 8192),
    "contiguous, prompt + 2048": prompt + 2048,      # the answer's room, reserved up front
    "paged, 16-token blocks": -(-used // 16) * 16,
}
for name, reserved in ways.items():
    print(f"{name:>30}: {used.sum() / np.maximum(reserved, used).sum():6.1%} of reserved slots hold real tokens")
eff = {k: used.sum() / np.maximum(v, used).sum() for k, v in ways.items()}
assert eff["paged, 16-token blocks"] > 0.98 > eff["contiguous, prompt + 2048"] + 0.2

# %% [markdown]
# ## 4. When the cache is full: preemption by recompute
#
# The scheduler admits a prompt only if its blocks fit (keeping a small watermark free), but
# running sequences keep growing one token at a time. When a decode needs a new block and none
# is free, pdlab (like vLLM) **preempts** the most recently admitted sequence: it drops that
# sequence's KV and puts it back at the front of the queue. Nothing is lost; its prompt and the
# tokens it already generated are **recomputed** later as a prefill. The cost: wasted compute,
# and a long pause in that stream.
#
# Same traffic, two cache sizes (a small cache stands in for a bigger model, longer contexts or
# a smaller GPU):

# %%
small, large = 700, 20000      # KV blocks of 16 tokens per GPU
runs = {}
for blocks in ex.progress((small, large), "cache sizes"):
    runs[blocks] = ex.simulate("chat-long", N, 8.0, mode="chunked", chunk_size=512, model=MODEL, gpu=GPU,
                               num_blocks=blocks)
    s = runs[blocks].summary()
    print(f"{blocks:>6} blocks ({blocks * 16:>7,} tokens): {s['preemptions']:>4} preemptions, "
          f"TPOT p99 {s['tpot_s']['p99'] * 1e3:6.1f} ms, ITL max {max(analysis.max_gaps(runs[blocks])) * 1e3:6.0f} ms, "
          f"{s['throughput_tok_s']:,.0f} tokens/s   [{CLOCK}]")
viz.kv_occupancy(runs[small]).show()
s_small, s_large = runs[small].summary(), runs[large].summary()
assert s_small["preemptions"] > 0 and s_large["preemptions"] == 0
assert s_small["tpot_s"]["p99"] > s_large["tpot_s"]["p99"]

# %% [markdown]
# *What to look for:* the small cache climbs to 100% and saw-tooths: each drop is a preempted
# sequence giving its blocks back, each climb its recompute. Its p99 TPOT is worse although
# nothing was dropped.
#
# ### Explore
#
# Move the KV blocks slider down until preemptions appear, then raise the rate. The raster
# (bottom) marks in red every stream that stalled more than 100 ms.

# %%
dash = dashboards.KVCacheDashboard(rate=8.0, num_blocks=1200)   # 150 requests: fast enough to drag
dash

# %% [markdown]
# *What to look for:* the preemption count in the status line jumps once occupancy reaches
# 100%; with a bigger model (the model dropdown, same block count) each block is not bigger in
# tokens, but the real cache would hold fewer of them: check with `max_decode_batch`.

# %%
# the dashboard responds to its controls (this is also what the tests do)
before = dash.status_line.value
dash.controls["num_blocks"].value = 500
assert dash.status_line.value != before

# %% [markdown]
# ## Key points
#
# - KV bytes per token = 2 x layers x KV heads x head dim x bytes per value: GQA divides it by
#   heads / KV heads.
# - Memory, not compute, caps the decode batch; and decode throughput grows with the batch.
# - Paging wastes at most one partial block per sequence; contiguous reservation wastes most of memory.
# - A full cache does not drop requests: it preempts and recomputes, paid in latency and compute.
#
# ## Going further
#
# 1. Quantising the KV cache to 8 bits halves `kv_dtype_bytes`: what happens to the largest batch
#    and to the decode step time? (`dataclasses.replace(MODELS["llama-3-8b"], kv_dtype_bytes=1)`)
# 2. Why preempt the *most recently admitted* sequence rather than the longest one?
# 3. vLLM can also *swap* KV to CPU memory instead of recomputing: when would that be cheaper?
#    (compare PCIe time for the KV with the prefill time of the same tokens)
# 4. Prefix caching (lab 07) keeps blocks of finished sequences: why does paging make it possible?
