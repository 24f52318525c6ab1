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
# # Lab 01 — Two phases: prefill is compute-bound, decode is memory-bound
#
# **Time:** about 30 minutes of teaching and 20 minutes of exercises.
# **Prerequisites:** lab 00; what a matrix multiply costs (2 FLOPs per multiply-add).
#
# **Questions you will be able to answer**
#
# 1. Why does a prefill step get slower with every prompt token while a decode step barely
#    notices its batch growing?
# 2. What is **arithmetic intensity**, and why is it about 1 FLOP per byte per sequence for decode?
# 3. Where is the **ridge point** of a GPU, and how large a batch would decode need to reach it?
# 4. What do the FLOPs and bytes of one decode step add up to, for a real model?

# %%
import torch

from pdlab.lab import checks, env
from pdlab.lab import results as measured
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
# ## 1. Measure the two phases
#
# We time single engine steps with the real engine (`ModelExecutor`, the tiny model, paged KV
# cache) on this machine, using the helpers `pdlab calibrate` uses:
#
# - **prefill**: one prompt of `n` tokens, for growing `n`;
# - **decode**: one step of `b` sequences that each hold 128 tokens of context, for growing `b`.

# %%
from pdlab.engine.grid import BatchFactory, measure_decode, measure_prefill
from pdlab.engine.executor import ModelExecutor

model = M.load_tiny(device=DEVICE)
lengths = [16, 64, 256] if FAST else [16, 32, 64, 128, 256, 512, 1024]
batches = [1, 4, 16] if FAST else [1, 2, 4, 8, 16, 32, 64]
context = 128
ex = ModelExecutor(model, num_blocks=(max(batches) * context + max(lengths)) // 16 + 8, block_size=16, device=DEVICE)
f = BatchFactory(ex.num_blocks, ex.block_size, model.cfg.vocab_size)
prefill_s = measure_prefill(ex, f, lengths)
decode_s = measure_decode(ex, f, batches, context)

print(f"measured on {DEVICE}")
print("prefill:  tokens   step ms   ms/token")
for n, s in zip(lengths, prefill_s):
    print(f"          {n:6d} {1e3 * s:9.2f} {1e3 * s / n:10.3f}")
print("decode:   batch    step ms   ms/token")
for b, s in zip(batches, decode_s):
    print(f"          {b:6d} {1e3 * s:9.2f} {1e3 * s / b:10.3f}")

# %%
ve.phase_scaling_figure(lengths, prefill_s, batches, decode_s, DEVICE, context=context)

# %% [markdown]
# Read the dashed lines: the **cost per token**. For decode it falls almost as `1/b`: the step
# costs about the same whether it carries 1 or 16 sequences, because its time goes into reading
# the weights (and, here, into fixed per-step work), not into arithmetic. Prefill's per-token cost
# flattens out once the prompt is long enough to keep the arithmetic units busy; after that, more
# tokens simply means proportionally more time.
#
# On a laptop CPU the effects are muted (a CPU has little bandwidth headroom over its arithmetic).
# On a GPU they are stark: an H200 has about 990 TFLOP/s of bf16 tensor arithmetic but "only"
# 4.8 TB/s of memory bandwidth.
#
# ### The same engine on a GPU, at a real model's shape
#
# `bench/engine_steps.py` times this engine (decode steps replayed from CUDA graphs, the Numba
# attention kernels) with the Llama-3.2-1B shape on a GPU, beside its **roofline**: the bytes a
# step must read (all the weights once, plus every sequence's K/V) over the GPU's measured copy
# bandwidth, and beside a plain-torch step written for the benchmark (dense KV cache, SDPA, one
# CUDA graph). The numbers below are that committed run's, not this machine's.

# %%
steps_file = measured.engine_steps_run()
if steps_file is None:
    print("no committed bench/engine_steps.py run yet")
else:
    steps = measured.load(steps_file)
    print(f"measured on an {steps['gpu']} (bench/results/{steps_file}), copy {steps['copy_tbps']:.2f} TB/s")
    print("decode: batch context  step ms  roofline ms  x roofline  torch peer ms")
    for r in steps["decode"]:
        print(f"        {r['batch']:5d} {r['context']:7d} {r['step_ms']:8.2f} {r['roofline_ms']:12.2f} "
              f"{r['step_ms'] / r['roofline_ms']:11.2f} {r.get('peer_ms', float('nan')):14.2f}")

# %%
ve.engine_steps_figure(steps) if steps_file else None

# %% [markdown]
# How to read it: if a decode step is bound by memory, its time follows the roofline line, which
# rises with batch x context (more K/V to read) from a floor set by the weights (read once per
# step whatever the batch). The gap between the measured line and the roofline is what a step
# spends beyond moving bytes: kernels too small to reach full bandwidth, the ~1 us per kernel a
# replayed CUDA graph still costs, and the host's preparation of the step. Without CUDA graphs
# (`eager_ms` in the file) that gap is Python launching ~200 kernels one by one, and the curve goes
# flat: the time then says nothing about the hardware.
#
# ## 2. Arithmetic intensity and the roofline
#
# **Arithmetic intensity** = FLOPs / bytes moved. A linear layer with `P` weights (2 bytes each
# in bf16) applied to `t` tokens does `2 t P` FLOPs and reads `2 P` bytes of weights: intensity
# `t` FLOP/byte. Decode has `t` = batch size (often 1-64); prefill has `t` = prompt tokens
# (hundreds to thousands).
#
# A GPU reaches its peak FLOP/s only above its **ridge point** = peak FLOP/s / bandwidth; below
# it, it waits for memory: attainable = min(peak, bandwidth x intensity). That is the **roofline**.

# %%
from pdlab.hardware import GPUS
from pdlab.models import MODELS, arithmetic_intensity
from pdlab.sim import ridge_point

gpu, spec = GPUS["h200"], MODELS["llama-3-8b"]
print(f"{gpu.name}: {gpu.tflops:g} TFLOP/s, {gpu.hbm_tbps:g} TB/s -> ridge {ridge_point(gpu):.0f} FLOP/byte")
for t in (1, 16, 64, 256, 2048):
    ai = arithmetic_intensity(spec, t)
    print(f"  {t:5d} tokens per step: intensity {ai:7.0f} FLOP/B -> {'compute' if ai >= ridge_point(gpu) else 'memory'}-bound")
ve.roofline_figure(gpu, spec, decode_batch=16, prefill_tokens=1024)

# %% [markdown]
# ### Explore: models, GPUs, batch and prompt
#
# Pick a model and a GPU preset, then move the decode batch and the prompt length. The times
# next to the points are **simulated** by the cost model (default efficiencies: 60% of tensor
# peak, 80% of bandwidth; `pdlab calibrate` fits them to a real GPU). Look for: how far the
# decode point sits left of the ridge, how its step time hardly changes from batch 1 to 64, and
# how the T4's ridge is much lower than the H200's.

# %%
import ipywidgets as widgets
from IPython.display import display

roof = ve.roofline_figure(gpu, spec, decode_batch=16, prefill_tokens=1024, widget=True)
model_dd = widgets.Dropdown(options=list(MODELS), value="llama-3-8b", description="model")
gpu_dd = widgets.Dropdown(options=list(GPUS), value="h200", description="GPU")
wide = {"style": {"description_width": "initial"}, "continuous_update": False}   # labels in full
batch_sl = widgets.IntSlider(value=16, min=1, max=512, description="decode batch", **wide)
prompt_sl = widgets.IntSlider(value=1024, min=16, max=8192, step=16, description="prompt tokens", **wide)
readout = widgets.HTML()

def redraw(_=None):
    pts = ve.update_roofline(roof, GPUS[gpu_dd.value], MODELS[model_dd.value], batch_sl.value, prompt_sl.value)
    readout.value = "<br>".join(
        f"{p['label']}: {p['intensity']:.0f} FLOP/B, {p['bound']}-bound, "
        f"{1e3 * p['step_s']:.2f} ms per step (simulated, {model_dd.value} on {gpu_dd.value})" for p in pts)

for w in (model_dd, gpu_dd, batch_sl, prompt_sl):
    w.observe(redraw, names="value")
redraw()
display(widgets.VBox([widgets.HBox([model_dd, gpu_dd]), widgets.HBox([batch_sl, prompt_sl]), readout, roof]))

# %%
# the controls drive the figure
before = roof.data[1].x[0]
batch_sl.value = 256
assert roof.data[1].x[0] > before and "256" in readout.value
batch_sl.value = 16


# %% [markdown]
# ### Exercise 1.1 — the FLOPs and bytes of one decode step
#
# Write `decode_step_cost(model, batch, context)` returning `(flops, bytes)` for one decode step of
# `batch` sequences that each attend to `context` tokens, for a `pdlab.models.ModelSpec`
# (`layers`, `hidden`, `heads`, `head_dim`, `vocab`, `layer_params`, `dtype_bytes`,
# `kv_bytes_per_token`):
#
# - **FLOPs**: 2 per weight per token through every layer (`layers * layer_params`) and the LM head
#   (`vocab * hidden`), plus attention: `QK^T` and `PV` cost `4 * heads * head_dim` FLOPs per layer
#   per context token per sequence.
# - **bytes**: every layer's weights and the LM head are read once per step (ignore the embedding
#   lookup: it reads only `batch` rows), plus the K and V of every context token of every sequence.

# %%
def decode_step_cost(model, batch, context):
    # Ex 1.1: return (flops, bytes) of one decode step
    # BEGIN SOLUTION
    m = model
    weights = m.layers * m.layer_params + m.vocab * m.hidden
    flops = 2 * batch * weights + 4 * m.layers * m.heads * m.head_dim * batch * context
    nbytes = weights * m.dtype_bytes + batch * context * m.kv_bytes_per_token
    return flops, nbytes
    # END SOLUTION


# %%
checks.check_decode_step_cost(decode_step_cost);

# %% [markdown]
# With the reference answer, here is the whole decode step's intensity, KV reads included, as the
# batch grows (llama-3-8b, 1024 tokens of context each, H200 ridge about 206 FLOP/byte):

# %%
for b in (1, 8, 64, 256, 1024):
    fl, by = checks.reference_decode_step_cost(spec, b, 1024)
    print(f"batch {b:5d}: {fl / 1e9:9.1f} GFLOP, {by / 1e9:6.2f} GB -> {fl / by:6.1f} FLOP/B "
          f"(ridge {ridge_point(gpu):.0f})")

# %% [markdown]
# The intensity climbs with the batch while the weights dominate the bytes, then levels off:
# every sequence brings its own KV cache, and attention reads it for only about **4 FLOPs per
# byte** (llama-3-8b: `4 x 32 x 128` FLOPs per context token and layer over the `2 x 8 x 128 x 2`
# bytes of its K and V; grouped-query attention shares each KV head among 4 query heads, without
# it this would be 1). So the two parts of a decode step behave differently:
#
# - the **linear layers** have an intensity equal to the batch: they cross the H200's ridge at a
#   batch of about **207**, and a step of short sequences (128 tokens of context) crosses it at
#   about **267**;
# - **attention over the KV cache** stays at ~4 FLOP/byte whatever the batch, so long contexts pull
#   the whole step back: at 1,024 tokens each it levels off near **116 FLOP/byte** and never reaches
#   the ridge.
#
# The cell below computes these numbers. This is why serving engines batch decodes as widely as
# memory allows, and why the KV cache's size matters so much (lab 03).

# %%
r = ridge_point(gpu)
print(f"attention over the KV cache: {checks.kv_intensity(spec):.1f} FLOP/byte at any batch")
for context in (0, 128, 1024):
    b = checks.decode_ridge_batch(spec, r, context)
    what = "linear layers alone" if context == 0 else f"whole step, {context} tokens of context"
    if b is None:
        fl, by = checks.reference_decode_step_cost(spec, 1 << 20, context)
        print(f"{what:38s}: never crosses the ridge ({r:.0f}); levels off at {fl / by:.0f} FLOP/byte")
    else:
        print(f"{what:38s}: crosses the ridge ({r:.0f} FLOP/byte) at a batch of {b}")
assert checks.kv_intensity(spec) == 4.0 and checks.decode_ridge_batch(spec, r, 1024) is None

# %% [markdown]
#
# ## Key points
#
# - A **prefill** step does `2 x params` FLOPs per prompt token and reads the weights once:
#   hundreds of tokens per step make it **compute-bound**.
# - A **decode** step does the same per sequence but carries one token per sequence: its linear
#   layers' intensity equals the batch size, at usual batches far below a GPU's ridge (~200
#   FLOP/byte on an H200), so it is **memory-bound**: its time is the time to read the weights and
#   the KV cache.
# - Batching decodes is nearly free until the batch nears the ridge (~200 sequences on an H200 for
#   the linear layers); attention over the KV cache (~4 FLOP/byte with llama-3-8b's grouped-query
#   attention) stays memory-bound at any batch, so long contexts keep the whole step memory-bound.
# - Measured (this machine) and simulated (cost model) numbers are labelled as such.
#
# ## Going further
#
# 1. Run `pdlab calibrate` (on a GPU if you have one). Which efficiency factors did it fit, and how
#    do they compare with the defaults used by the sliders?
# 2. How many sequences of 1,024 tokens fit in an H200's KV cache next to llama-3-8b's weights,
#    and is that more or less than the batch at which the linear layers cross the ridge? What
#    changes for a model without grouped-query attention? (Hint: KV bytes per token, lab 03.)
# 3. FP8 weights halve the bytes. Where do decode and prefill move on the roofline?
# 4. Your CPU measurements: did the prefill cost per token really flatten? Where is this machine's
#    "ridge"?
