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
# # Lab 00 — Welcome: one request through a real serving engine
#
# **Time:** about 20 minutes of teaching and 10 minutes of exercises.
# **Prerequisites:** Python; no GPU needed (what changes with one is explained below).
#
# **Questions you will be able to answer**
#
# 1. What does this machine measure, and which numbers in these labs are *simulated* instead?
# 2. What happens, step by step, when a language model answers a prompt: why is the first step
#    different from all the others?
# 3. What are the moving parts of a serving engine (request, sequence, batch, KV blocks,
#    scheduler, worker, cluster, router, link, executor, cost model)?

# %% [markdown]
# ## Setup: what is this machine?
#
# Every lab starts with an environment report. It matters for how you read the numbers:
#
# - **With a GPU**, the engine's step times are measured on it (CUDA events), and the Numba
#   kernels of lab 02 run on it.
# - **Without a GPU**, the engine runs on the CPU: its step times are real but they are *CPU wall
#   clock*, useful for shapes and ratios, not for GPU speed. GPU numbers (H100, H200, ...) then come
#   from the **cost model**, a roofline simulator that is labelled *simulated* wherever it is used.
#   The Numba kernels run on Numba's **CUDA simulator** (one CPU thread per GPU thread): correct,
#   but slow, so only tiny shapes.

# %%
import torch

from pdlab.lab import checks, env
from pdlab.engine import model as M
from pdlab.engine import tokenizer
from pdlab.viz import engine as ve

info = env.report()
FAST = env.FAST                        # CI and quick runs: small workloads
DEVICE = "cuda" if info["gpu"] else "cpu"
if DEVICE == "cpu":
    # the tiny model is far too small for intra-op threads to pay; on a busy CPU they cost 10x
    torch.set_num_threads(1)
print("the real engine runs on:", DEVICE)

# %% [markdown]
# ## 1. One request, token by token
#
# `pdlab` ships a tiny trained model (6 million parameters, a Llama-style decoder that writes
# children's stories one **byte** at a time; `data/tiny/README.md` says how it was made). We send
# it one prompt through the real paged engine, `ModelExecutor`: the same code the serving
# benchmarks use.
#
# The first **step** reads the whole prompt at once: that is **prefill**. It computes the keys and
# values of every prompt token (the **KV cache**) and samples the first new token. Every later
# step is a **decode**: it feeds in only the newest token, reads the whole KV cache, and samples
# one more.

# %%
from pdlab.engine.generate import generate
from pdlab.serving.kv import BlockManager
from pdlab.engine.executor import ModelExecutor

model = M.load_tiny(device=DEVICE)
prompt = "Once upon a time"
prompt_ids = tokenizer.encode(prompt)            # BOS + one id per byte
new_tokens = 24 if FAST else 60
ex = ModelExecutor(model, num_blocks=16, block_size=16, device=DEVICE)   # the KV cache: 16 blocks of 16 slots
blocks = BlockManager(ex.num_blocks, ex.block_size)                       # hands out those blocks
held = []                                                                 # blocks in use at each step
out_ids, step_s = generate(ex, prompt_ids, new_tokens, block_manager=blocks, blocks_held=held)

print(prompt + tokenizer.decode(out_ids))
print()
print("step  phase    tokens in  token out       ms")
for i, (tok, s) in enumerate(zip(out_ids, step_s)):
    phase, n_in = ("prefill", len(prompt_ids)) if i == 0 else ("decode", 1)
    if i < 6 or i == len(out_ids) - 1:
        print(f"{i:4d}  {phase:8s} {n_in:9d}  {tokenizer.decode([tok])!r:9s} {1e3 * s:8.2f}")
    elif i == 6:
        print("   ...")

# %% [markdown]
# ### Explore: the steps of one request
#
# The orange bar is the prefill, the blue ones are decodes (measured on this machine). The
# slider starts at the prefill alone: move it right to replay the request step by step. Look for: one prefill step over many tokens costs about as much
# as a few decode steps over one token each, because a step pays a fixed price (reading every
# weight of the model, launching the work) whatever the number of tokens.

# %%
import ipywidgets as widgets
from IPython.display import display

fig = ve.step_times_figure(step_s, len(prompt_ids), DEVICE, widget=True)
steps = widgets.IntSlider(value=1, min=1, max=len(step_s), description="steps shown",
                          style={"description_width": "initial"}, continuous_update=False)

def on_steps(change):
    ve.update_step_times(fig, step_s, change["new"])

steps.observe(on_steps, names="value")
ve.update_step_times(fig, step_s, steps.value)
display(widgets.VBox([steps, fig]))

# %%
# the slider drives the figure (this is how the labs' widgets are tested)
steps.value = 5
assert len(fig.data[1].y) == 4
steps.value = len(step_s)

# %% [markdown]
# ## 2. The vocabulary of the kit
#
# | name | what it is | where |
# |---|---|---|
# | `Request` | what arrives: id, arrival time, prompt (ids or just a length), max new tokens | `pdlab/request.py` |
# | `Sequence` | a request's runtime state: status, tokens computed, **block table**, output tokens and their times | `pdlab/request.py` |
# | `Batch` | what one iteration runs: prefill chunks `(seq, n_tokens)` and decodes; knows its phase mix | `pdlab/request.py` |
# | `BlockManager` | the paged KV cache's bookkeeping: fixed-size blocks, block tables, prefix cache | `pdlab/serving/kv.py` |
# | `Scheduler` | picks the next `Batch`: aggregated, chunked, prefill-only or decode-only policy | `pdlab/serving/scheduler.py`, `pdlab/serving/policies.py` |
# | `Worker` | one replica: a scheduler + its block manager + an executor | `pdlab/serving/worker.py` |
# | `Cluster` | workers and the event loop (virtual time jumps by what the executor says a step took) | `pdlab/serving/cluster.py` |
# | `Router` | sends each new request to a worker (round-robin, least-loaded) | `pdlab/serving/router.py` |
# | `Link` | the pipe KV blocks cross between a prefill and a decode worker (bandwidth, latency) | `pdlab/serving/link.py` |
# | `Executor` | runs a batch: `run(batch) -> StepResult(seconds, tokens)`: `ModelExecutor` (real) or `CostModelExecutor` (simulated) | `pdlab/engine/executor.py`, `pdlab/sim/executor.py` |
# | `CostModel` | a roofline: the seconds a batch takes on a GPU preset for a model preset | `pdlab/sim/costmodel.py` |
#
# Here are the first four by hand: a request, its sequence, KV blocks for its prompt, and the
# batch that prefills it.

# %%
from pdlab.serving.kv import BlockManager
from pdlab.request import Batch, Request, Sequence

req = Request(id=0, arrival=0.0, prompt_len=len(prompt_ids), max_new_tokens=8, prompt_ids=tuple(prompt_ids))
seq = Sequence(req)
bm = BlockManager(num_blocks=8, block_size=4)     # 8 blocks of 4 token slots
bm.allocate(seq, seq.num_tokens)                  # room for the prompt's KV
batch = Batch()
batch.add_prefill(seq, seq.num_tokens)
print(seq)
print("block table:", seq.block_table, f"({len(seq.block_table)} blocks of 4 for {seq.num_tokens} tokens)")
print("batch phase:", batch.phase, "| sequences that sample a token:", [s.id for s in batch.sampling()])
result = ModelExecutor(model, num_blocks=8, block_size=4, device=DEVICE).run(batch)
print("executor:", result.tokens, f"({tokenizer.decode(result.tokens)!r}) in {1e3 * result.seconds:.2f} ms, measured on {DEVICE}")

# %% [markdown]
# The rest of the vocabulary works together in `run_serving`: requests go through a router to
# workers whose schedulers build batches for their executors; the event loop advances its clock
# by whatever each step took. With `ModelExecutor` the clock is **measured**; with the default
# `CostModelExecutor` it is **simulated**: nothing is computed, so a laptop can play an H100
# serving Llama-3-8B. Same scheduler code, two clocks.

# %%
from pdlab import ServingConfig, run_serving
from pdlab.engine.executor import factory

stories = ["Once upon a time", "Tom and Lily went to", "One rainy day, Mia", "Sam felt"]
reqs = [Request(i, 0.01 * i, len(ids), 12, tuple(ids))
        for i, ids in enumerate(tokenizer.encode(s) for s in stories)]

real = run_serving(reqs, ServingConfig(mode="chunked", model="tiny", gpu="cpu", num_blocks=64, chunk_size=32),
                   executor_factory=factory(model, device=DEVICE))
for s in real.sequences:
    print(f"request {s.id}: {tokenizer.decode(s.request.prompt_ids)!r} -> {tokenizer.decode(s.output_ids)!r}")
ttft = real.summary()["ttft_s"]["p50"]
print(f"\nmeasured on {DEVICE}: median time to first token {1e3 * ttft:.1f} ms, {len(real.steps)} steps")

sim = run_serving([Request(r.id, r.arrival, r.prompt_len, r.max_new_tokens) for r in reqs],
                  ServingConfig(mode="chunked", model="llama-3-8b", gpu="h100", chunk_size=32))
print(f"simulated (cost model: llama-3-8b on h100): median time to first token "
      f"{1e3 * sim.summary()['ttft_s']['p50']:.1f} ms, {len(sim.steps)} steps, no tokens computed")


# %% [markdown]
# ### Exercise 0.1 — how many KV blocks does a request hold?
#
# A request with a prompt of `prompt_len` tokens generates `new_tokens` tokens. When its last
# token comes out, how many blocks of `block_size` slots does its KV cache hold? Careful: a token
# gets KV only when it is fed *into* the model, and the last sampled token never is.

# %%
def kv_blocks(prompt_len, new_tokens, block_size):
    # Ex 0.1: blocks held when the last of `new_tokens` tokens has been sampled
    # BEGIN SOLUTION
    return -(-(prompt_len + new_tokens - 1) // block_size)
    # END SOLUTION


# %%
checks.check_kv_blocks(kv_blocks);
# the engine agrees: at its last step the request of section 1 held this many blocks
print(f"section 1: {len(prompt_ids)} prompt + {len(out_ids)} new tokens -> the engine held {held[-1]} "
      f"blocks of {ex.block_size}; expected {checks.reference_kv_blocks(len(prompt_ids), len(out_ids), ex.block_size)}")

# %% [markdown]
# ## 3. The map of the labs
#
# | lab | topic | you will |
# |---|---|---|
# | **00** | welcome (this one) | run a request through the engine; learn the vocabulary |
# | **01** | the two phases | measure prefill vs decode; arithmetic intensity; the roofline |
# | **02** | kernels | write paged attention in Numba CUDA: slots, online softmax, decode traffic |
# | **03** | the KV cache | paging, capacity, preemption by recompute |
# | **04** | interference | watch one long prompt freeze every stream in aggregated serving |
# | **05** | chunked prefill | trade time-to-first-token against inter-token latency with the token budget |
# | **06** | disaggregation | split prefill and decode onto separate GPUs; P:D ratio, link bandwidth, goodput, when it loses |
#
# ## Key points
#
# - **Prefill** processes the whole prompt in one step and produces the first token; **decode**
#   produces one token per step, reading the whole KV cache every time.
# - A serving engine is a loop: a **scheduler** picks a **batch**, an **executor** runs it, the
#   clock advances by the step time. pdlab runs the same loop on two clocks: **measured** (the
#   real model) and **simulated** (the cost model).
# - Every number in these labs says where it comes from: *measured on <device>* or *simulated
#   (cost model: <model> on <gpu>)*.
#
# ## Going further
#
# 1. Run `pdlab generate "Tom and Lily" --max-new-tokens 200` in a terminal. Does the time per
#    decode step change as the story gets longer? Why might it on a GPU and not here (or the other
#    way round)?
# 2. In section 2, the simulated run of four 5-17-token prompts on an H100 takes longer per step
#    than the tiny model on this CPU. Why is that not a contradiction?
# 3. The tokenizer is byte-level: one token per character. What would a real tokenizer (about 4
#    characters per token) change for prefill, for decode, and for the KV cache?
