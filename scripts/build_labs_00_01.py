"""Write labs 00 (welcome) and 01 (two phases): the solution notebooks in ``labs/solutions/``
and their learner copies in ``labs/`` (stubs made by ``scripts/make_labs.py``'s
``learner_copy``, so ``make_labs.py --check`` agrees). Both are written without outputs.

    python scripts/build_labs_00_01.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from make_labs import learner_copy, strip_outputs  # noqa: E402

SETUP = r"""
import torch

from pdlab import checks, env
from pdlab import model as M
from pdlab import tokenizer
from pdlab import viz_engine as ve

info = env.report()
FAST = env.FAST                        # CI and quick runs: small workloads
DEVICE = "cuda" if info["gpu"] else "cpu"
if DEVICE == "cpu":
    # the tiny model is far too small for intra-op threads to pay; on a busy CPU they cost 10x
    torch.set_num_threads(1)
print("the real engine runs on:", DEVICE)
"""


class Lab:
    def __init__(self):
        self.cells = []

    def md(self, text):
        self.cells.append(new_markdown_cell(text.strip("\n")))

    def code(self, text):
        self.cells.append(new_code_cell(text.strip("\n")))

    def notebook(self):
        return new_notebook(cells=self.cells, metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"}})


# =============================================================================================
def lab00() -> Lab:
    lab = Lab()
    lab.md(r"""
# Lab 00 — Welcome: one request through a real serving engine

**Time:** about 20 minutes of teaching and 10 minutes of exercises.
**Prerequisites:** Python; no GPU needed (what changes with one is explained below).

**Questions you will be able to answer**

1. What does this machine measure, and which numbers in these labs are *simulated* instead?
2. What happens, step by step, when a language model answers a prompt: why is the first step
   different from all the others?
3. What are the moving parts of a serving engine (request, sequence, batch, KV blocks,
   scheduler, worker, cluster, router, link, executor, cost model)?
""")
    lab.md(r"""
## Setup: what is this machine?

Every lab starts with an environment report. It matters for how you read the numbers:

- **With a GPU**, the engine's step times are measured on it (CUDA events), and the Numba
  kernels of lab 02 run on it.
- **Without a GPU**, the engine runs on the CPU: its step times are real but they are *CPU wall
  clock*, useful for shapes and ratios, not for GPU speed. GPU numbers (H100, H200, ...) then come
  from the **cost model**, a roofline simulator that is labelled *simulated* wherever it is used.
  The Numba kernels run on Numba's **CUDA simulator** (one CPU thread per GPU thread): correct,
  but slow, so only tiny shapes.
""")
    lab.code(SETUP)
    lab.md(r"""
## 1. One request, token by token

`pdlab` ships a tiny trained model (6 million parameters, a Llama-style decoder that writes
children's stories one **byte** at a time; `data/tiny/README.md` says how it was made). We send
it one prompt through the real paged engine, `ModelExecutor`: the same code the serving
benchmarks use.

The first **step** reads the whole prompt at once: that is **prefill**. It computes the keys and
values of every prompt token (the **KV cache**) and samples the first new token. Every later
step is a **decode**: it feeds in only the newest token, reads the whole KV cache, and samples
one more.
""")
    lab.code(r"""
from pdlab.generate import generate
from pdlab.kv import BlockManager
from pdlab.model_executor import ModelExecutor

model = M.load_tiny(device=DEVICE)
prompt = "Once upon a time"
prompt_ids = tokenizer.encode(prompt)            # BOS + one id per byte
new_tokens = 24 if FAST else 60
ex = ModelExecutor(model, num_blocks=16, block_size=16, device=DEVICE)   # the KV cache: 16 blocks of 16 slots
blocks = BlockManager(ex.num_blocks, ex.block_size)                       # hands out those blocks
out_ids, step_s = generate(ex, prompt_ids, new_tokens, block_manager=blocks)

print(prompt + tokenizer.decode(out_ids))
print()
print("step  phase    tokens in  token out       ms")
for i, (tok, s) in enumerate(zip(out_ids, step_s)):
    phase, n_in = ("prefill", len(prompt_ids)) if i == 0 else ("decode", 1)
    if i < 6 or i == len(out_ids) - 1:
        print(f"{i:4d}  {phase:8s} {n_in:9d}  {tokenizer.decode([tok])!r:9s} {1e3 * s:8.2f}")
    elif i == 6:
        print("   ...")
""")
    lab.md(r"""
### Explore: the steps of one request

The orange bar is the prefill, the blue ones are decodes (measured on this machine). Move the
slider to replay the request. Look for: one prefill step over many tokens costs about as much
as a few decode steps over one token each, because a step pays a fixed price (reading every
weight of the model, launching the work) whatever the number of tokens.
""")
    lab.code(r"""
import ipywidgets as widgets
from IPython.display import display

fig = ve.step_times_figure(step_s, len(prompt_ids), DEVICE, widget=True)
steps = widgets.IntSlider(value=len(step_s), min=1, max=len(step_s), description="steps shown",
                          continuous_update=False)

def on_steps(change):
    ve.update_step_times(fig, step_s, change["new"])

steps.observe(on_steps, names="value")
display(widgets.VBox([steps, fig]))
""")
    lab.code(r"""
# the slider drives the figure (this is how the labs' widgets are tested)
steps.value = 5
assert len(fig.data[1].y) == 4
steps.value = len(step_s)
""")
    lab.md(r"""
## 2. The vocabulary of the kit

| name | what it is | where |
|---|---|---|
| `Request` | what arrives: id, arrival time, prompt (ids or just a length), max new tokens | `pdlab/request.py` |
| `Sequence` | a request's runtime state: status, tokens computed, **block table**, output tokens and their times | `pdlab/request.py` |
| `Batch` | what one iteration runs: prefill chunks `(seq, n_tokens)` and decodes; knows its phase mix | `pdlab/request.py` |
| `BlockManager` | the paged KV cache's bookkeeping: fixed-size blocks, block tables, prefix cache | `pdlab/kv.py` |
| `Scheduler` | picks the next `Batch`: aggregated, chunked, prefill-only or decode-only policy | `pdlab/schedulers.py` |
| `Worker` | one replica: a scheduler + its block manager + an executor | `pdlab/cluster.py` |
| `Cluster` | workers, the event loop and its clock | `pdlab/cluster.py` |
| `Router` | sends each new request to a worker (round-robin, least-loaded) | `pdlab/cluster.py` |
| `Link` | the pipe KV blocks cross between a prefill and a decode worker (bandwidth, latency) | `pdlab/cluster.py` |
| `Executor` | runs a batch: `run(batch) -> StepResult(seconds, tokens)`: `ModelExecutor` (real) or `CostModelExecutor` (simulated) | `pdlab/model_executor.py`, `pdlab/executors.py` |
| `CostModel` | a roofline: the seconds a batch takes on a GPU preset for a model preset | `pdlab/costmodel.py` |

Here are the first four by hand: a request, its sequence, KV blocks for its prompt, and the
batch that prefills it.
""")
    lab.code(r"""
from pdlab.kv import BlockManager
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
""")
    lab.md(r"""
The rest of the vocabulary works together in `run_serving`: requests go through a router to
workers whose schedulers build batches for their executors; the event loop advances its clock
by whatever each step took. With `ModelExecutor` the clock is **measured**; with the default
`CostModelExecutor` it is **simulated**: nothing is computed, so a laptop can play an H100
serving Llama-3-8B. Same scheduler code, two clocks.
""")
    lab.code(r"""
from pdlab.cluster import ServingConfig, run_serving
from pdlab.model_executor import factory

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
""")
    lab.md(r"""
### Exercise 0.1 — how many KV blocks does a request hold?

A request with a prompt of `prompt_len` tokens generates `new_tokens` tokens. When its last
token comes out, how many blocks of `block_size` slots does its KV cache hold? Careful: a token
gets KV only when it is fed *into* the model, and the last sampled token never is.
""")
    lab.code(r"""
def kv_blocks(prompt_len, new_tokens, block_size):
    # Ex 0.1: blocks held when the last of `new_tokens` tokens has been sampled
    # BEGIN SOLUTION
    return -(-(prompt_len + new_tokens - 1) // block_size)
    # END SOLUTION
""")
    lab.code(r"""
checks.check_kv_blocks(kv_blocks);
# the engine agrees: the request of section 1 still holds its blocks in the BlockManager
print(f"section 1: {len(prompt_ids)} prompt + {len(out_ids)} new tokens -> the engine holds {blocks.num_used} "
      f"blocks of {ex.block_size}; expected {checks.reference_kv_blocks(len(prompt_ids), len(out_ids), ex.block_size)}")
""")
    lab.md(r"""
## 3. The map of the labs

| lab | topic | you will |
|---|---|---|
| **00** | welcome (this one) | run a request through the engine; learn the vocabulary |
| **01** | the two phases | measure prefill vs decode; arithmetic intensity; the roofline |
| **02** | kernels | write paged attention in Numba CUDA: slots, online softmax, decode traffic |
| **03** | the KV cache | paging, capacity, preemption by recompute |
| **04** | interference | watch one long prompt freeze every stream in aggregated serving |
| **05** | chunked prefill | trade time-to-first-token against inter-token latency with the token budget |
| **06** | disaggregation | split prefill and decode onto separate GPUs; P:D ratio, link bandwidth, goodput, when it loses |

## Key points

- **Prefill** processes the whole prompt in one step and produces the first token; **decode**
  produces one token per step, reading the whole KV cache every time.
- A serving engine is a loop: a **scheduler** picks a **batch**, an **executor** runs it, the
  clock advances by the step time. pdlab runs the same loop on two clocks: **measured** (the
  real model) and **simulated** (the cost model).
- Every number in these labs says where it comes from: *measured on <device>* or *simulated
  (cost model: <model> on <gpu>)*.

## Going further

1. Run `pdlab generate "Tom and Lily" --max-new-tokens 200` in a terminal. Does the time per
   decode step change as the story gets longer? Why might it on a GPU and not here (or the other
   way round)?
2. In section 2, the simulated run of four 5-17-token prompts on an H100 takes longer per step
   than the tiny model on this CPU. Why is that not a contradiction?
3. The tokenizer is byte-level: one token per character. What would a real tokenizer (about 4
   characters per token) change for prefill, for decode, and for the KV cache?
""")
    return lab


# =============================================================================================
def lab01() -> Lab:
    lab = Lab()
    lab.md(r"""
# Lab 01 — Two phases: prefill is compute-bound, decode is memory-bound

**Time:** about 30 minutes of teaching and 20 minutes of exercises.
**Prerequisites:** lab 00; what a matrix multiply costs (2 FLOPs per multiply-add).

**Questions you will be able to answer**

1. Why does a prefill step get slower with every prompt token while a decode step barely
   notices its batch growing?
2. What is **arithmetic intensity**, and why is it about 1 FLOP per byte per sequence for decode?
3. Where is the **ridge point** of a GPU, and how large a batch would decode need to reach it?
4. What do the FLOPs and bytes of one decode step add up to, for a real model?
""")
    lab.code(SETUP)
    lab.md(r"""
## 1. Measure the two phases

We time single engine steps with the real engine (`ModelExecutor`, the tiny model, paged KV
cache) on this machine, using the helpers `pdlab calibrate` uses:

- **prefill**: one prompt of `n` tokens, for growing `n`;
- **decode**: one step of `b` sequences that each hold 128 tokens of context, for growing `b`.
""")
    lab.code(r"""
from pdlab.calibrate import BatchFactory, measure_decode, measure_prefill
from pdlab.model_executor import ModelExecutor

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
""")
    lab.code(r"""
ve.phase_scaling_figure(lengths, prefill_s, batches, decode_s, DEVICE, context=context)
""")
    lab.md(r"""
Read the dashed lines: the **cost per token**. For decode it falls almost as `1/b`: the step
costs about the same whether it carries 1 or 16 sequences, because its time goes into reading
the weights (and, here, into fixed per-step work), not into arithmetic. Prefill's per-token cost
flattens out once the prompt is long enough to keep the arithmetic units busy; after that, more
tokens simply means proportionally more time.

On a laptop CPU the effects are muted (a CPU has little bandwidth headroom over its arithmetic).
On a GPU they are stark: an H200 has about 990 TFLOP/s of bf16 tensor arithmetic but "only"
4.8 TB/s of memory bandwidth.

## 2. Arithmetic intensity and the roofline

**Arithmetic intensity** = FLOPs / bytes moved. A linear layer with `P` weights (2 bytes each
in bf16) applied to `t` tokens does `2 t P` FLOPs and reads `2 P` bytes of weights: intensity
`t` FLOP/byte. Decode has `t` = batch size (often 1-64); prefill has `t` = prompt tokens
(hundreds to thousands).

A GPU reaches its peak FLOP/s only above its **ridge point** = peak FLOP/s / bandwidth; below
it, it waits for memory: attainable = min(peak, bandwidth x intensity). That is the **roofline**.
""")
    lab.code(r"""
from pdlab.costmodel import GPUS, MODELS, arithmetic_intensity, ridge_point

gpu, spec = GPUS["h200"], MODELS["llama-3-8b"]
print(f"{gpu.name}: {gpu.tflops:g} TFLOP/s, {gpu.hbm_tbps:g} TB/s -> ridge {ridge_point(gpu):.0f} FLOP/byte")
for t in (1, 16, 64, 256, 2048):
    ai = arithmetic_intensity(spec, t)
    print(f"  {t:5d} tokens per step: intensity {ai:7.0f} FLOP/B -> {'compute' if ai >= ridge_point(gpu) else 'memory'}-bound")
ve.roofline_figure(gpu, spec, decode_batch=16, prefill_tokens=1024)
""")
    lab.md(r"""
### Explore: models, GPUs, batch and prompt

Pick a model and a GPU preset, then move the decode batch and the prompt length. The times
next to the points are **simulated** by the cost model (default efficiencies: 60% of tensor
peak, 80% of bandwidth; `pdlab calibrate` fits them to a real GPU). Look for: how far the
decode point sits left of the ridge, how its step time hardly changes from batch 1 to 64, and
how the T4's ridge is much lower than the H200's.
""")
    lab.code(r"""
import ipywidgets as widgets
from IPython.display import display

roof = ve.roofline_figure(gpu, spec, decode_batch=16, prefill_tokens=1024, widget=True)
model_dd = widgets.Dropdown(options=list(MODELS), value="llama-3-8b", description="model")
gpu_dd = widgets.Dropdown(options=list(GPUS), value="h200", description="GPU")
batch_sl = widgets.IntSlider(value=16, min=1, max=512, description="decode batch", continuous_update=False)
prompt_sl = widgets.IntSlider(value=1024, min=16, max=8192, step=16, description="prompt tokens",
                              continuous_update=False)
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
""")
    lab.code(r"""
# the controls drive the figure
before = roof.data[1].x[0]
batch_sl.value = 256
assert roof.data[1].x[0] > before and "256" in readout.value
batch_sl.value = 16
""")
    lab.md(r"""
### Exercise 1.1 — the FLOPs and bytes of one decode step

Write `decode_step_cost(model, batch, context)` returning `(flops, bytes)` for one decode step of
`batch` sequences that each attend to `context` tokens, for a `pdlab.costmodel.ModelSpec`
(`layers`, `hidden`, `heads`, `head_dim`, `vocab`, `layer_params`, `dtype_bytes`,
`kv_bytes_per_token`):

- **FLOPs**: 2 per weight per token through every layer (`layers * layer_params`) and the LM head
  (`vocab * hidden`), plus attention: `QK^T` and `PV` cost `4 * heads * head_dim` FLOPs per layer
  per context token per sequence.
- **bytes**: every layer's weights and the LM head are read once per step (ignore the embedding
  lookup: it reads only `batch` rows), plus the K and V of every context token of every sequence.
""")
    lab.code(r"""
def decode_step_cost(model, batch, context):
    # Ex 1.1: return (flops, bytes) of one decode step
    # BEGIN SOLUTION
    m = model
    weights = m.layers * m.layer_params + m.vocab * m.hidden
    flops = 2 * batch * weights + 4 * m.layers * m.heads * m.head_dim * batch * context
    nbytes = weights * m.dtype_bytes + batch * context * m.kv_bytes_per_token
    return flops, nbytes
    # END SOLUTION
""")
    lab.code(r"""
checks.check_decode_step_cost(decode_step_cost);
""")
    lab.md(r"""
With the reference answer, here is the whole decode step's intensity, KV reads included, as the
batch grows (llama-3-8b, 1024 tokens of context each, H200 ridge about 206 FLOP/byte):
""")
    lab.code(r"""
for b in (1, 8, 64, 256, 1024):
    fl, by = checks.reference_decode_step_cost(spec, b, 1024)
    print(f"batch {b:5d}: {fl / 1e9:9.1f} GFLOP, {by / 1e9:6.2f} GB -> {fl / by:6.1f} FLOP/B "
          f"(ridge {ridge_point(gpu):.0f})")
""")
    lab.md(r"""
The intensity climbs with the batch while the weights dominate the bytes, then stalls: every
sequence brings its own KV cache, read for only ~2 FLOPs per byte. Decode stays memory-bound
however large the batch, which is why serving engines batch decodes as widely as memory allows
and why the KV cache's size matters so much (lab 03).

## Key points

- A **prefill** step does `2 x params` FLOPs per prompt token and reads the weights once:
  hundreds of tokens per step make it **compute-bound**.
- A **decode** step does the same per sequence but carries one token per sequence: intensity
  about equal to the batch size, far below a GPU's ridge (~200 FLOP/byte on an H200), so it is
  **memory-bound**: its time is the time to read the weights and the KV cache.
- Batching decodes is nearly free until the batch is large; attention over long contexts keeps
  decode memory-bound at any batch size.
- Measured (this machine) and simulated (cost model) numbers are labelled as such.

## Going further

1. Run `pdlab calibrate` (on a GPU if you have one). Which efficiency factors did it fit, and how
   do they compare with the defaults used by the sliders?
2. For the H200 and llama-3-8b, at what batch would the *linear layers alone* of a decode step
   cross the ridge? Why is that batch out of reach in practice? (Hint: KV memory per sequence.)
3. FP8 weights halve the bytes. Where do decode and prefill move on the roofline?
4. Your CPU measurements: did the prefill cost per token really flatten? Where is this machine's
   "ridge"?
""")
    return lab


def write(lab: Lab, name: str) -> None:
    sol = ROOT / "labs" / "solutions" / name
    sol.parent.mkdir(parents=True, exist_ok=True)
    sol.write_text(nbformat.writes(strip_outputs(lab.notebook())) + "\n")
    learner = ROOT / "labs" / name
    learner.write_text(nbformat.writes(learner_copy(sol)) + "\n")
    print(f"wrote {sol.relative_to(ROOT)} and {learner.relative_to(ROOT)}")


def main():
    write(lab00(), "00_welcome.ipynb")
    write(lab01(), "01_two_phases.ipynb")


if __name__ == "__main__":
    main()
