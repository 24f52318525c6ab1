"""Write the solution notebooks of labs 03-06 (``labs/solutions/NN_*.ipynb``) from the cell
sources below; ``python scripts/make_labs.py`` then writes the learner copies.

    python scripts/build_labs_03_06.py && python scripts/make_labs.py

One source of truth: edit the cells here, never the notebooks. Cells are written without outputs
and with stable ids, so a rebuild without changes leaves the files byte-identical. Lines between
``# BEGIN SOLUTION`` and ``# END SOLUTION`` become a ``NotImplementedError`` stub in the learner
copy; every later cell must therefore work without the learner's answer (check cells go through
``checks.attempt``, which prints TODO for a stub).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

SOLUTIONS = Path(__file__).resolve().parent.parent / "labs" / "solutions"


def md(text: str):
    return new_markdown_cell(textwrap.dedent(text).strip("\n"))


def code(text: str, tags: list[str] | None = None):
    c = new_code_cell(textwrap.dedent(text).strip("\n"))
    if tags:
        c.metadata["tags"] = tags
    return c


SETUP = '''
import numpy as np

from pdlab import checks, env, viz
from pdlab import widgets as pw
from pdlab.cluster import ServingConfig, run_serving
from pdlab.costmodel import GPUS, MODELS, CostModel
from pdlab.metrics import SLO
from pdlab.workload import make_requests

info = env.report()            # seeds every random source; says what hardware backs the numbers
FAST = env.FAST                # CI (PDLAB_FAST=1): small workloads, same lessons
MODEL, GPU = "llama-3-8b", "h100"
CLOCK = viz.sim_label(MODEL, GPU)   # every number below is simulated by the cost model
print("numbers in this lab:", CLOCK)
'''


# ================================================================================================
# Lab 03: the KV cache
# ================================================================================================
LAB03 = [
    md('''
    # Lab 03 — The KV cache: paging, capacity and preemption

    **Time:** about 25 minutes of teaching and 15 minutes of exercises.
    **Prerequisites:** lab 01 (prefill vs decode, the roofline); lab 02 section 2 (block tables) helps.

    **Questions you will be able to answer**

    1. How many bytes does one token's K and V take, and why does grouped-query attention matter?
    2. How does the size of the KV cache cap the decode batch, and with it decode throughput?
    3. What do paging and block tables buy over one contiguous buffer per sequence?
    4. What happens when the cache is full: what is *preemption by recompute* and what does it cost?

    Every number in this lab is **simulated** by pdlab's roofline cost model (datasheet numbers,
    default efficiencies); the figures say which model and GPU.
    '''),
    code(SETUP + '''
N = 160 if FAST else 500       # requests per simulated run
'''),
    md('''
    ## 1. Bytes per token

    Decode reads, at every step, the K and V of every earlier token of every sequence in the batch.
    Those tensors live in the **KV cache**. Per token and per layer a model stores one K and one V
    vector for each **KV head**, `head_dim = hidden / heads` numbers each, in `kv_dtype_bytes`
    bytes (2 for bf16; usually the weights' `dtype_bytes`, but an engine may store the cache in
    another precision). Models with grouped-query attention (GQA: Llama-3, Mistral) keep fewer KV heads
    than query heads (8 vs 32), so their cache is 4x smaller than a multi-head model of the same
    width (Llama-2-7B keeps all 32).

    ### Exercise 3.1 — KV bytes per token

    Write `kv_bytes_per_token(m)` for a `ModelSpec` `m` (fields `layers`, `hidden`, `heads`,
    `kv_heads`, `kv_dtype_bytes`): the bytes of K **and** V that one token occupies over all layers.
    '''),
    code('''
def kv_bytes_per_token(m):
    # Ex 3.1: bytes of K and V for one token, all layers (m is a pdlab.costmodel.ModelSpec)
    # BEGIN SOLUTION
    head_dim = m.hidden // m.heads
    return 2 * m.layers * m.kv_heads * head_dim * m.kv_dtype_bytes
    # END SOLUTION
'''),
    code('''
checks.check_kv_bytes_per_token(kv_bytes_per_token);
'''),
    md('''
    The presets, with the package's reference (`ModelSpec.kv_bytes_per_token`), and what a
    4096-token conversation holds:
    '''),
    code('''
print(f"{'model':>14} {'KV heads':>9} {'KiB/token':>10} {'GB per 4k-token sequence':>25}")
for name, m in MODELS.items():
    kv = m.kv_bytes_per_token
    print(f"{name:>14} {m.kv_heads:>9} {kv / 1024:>10.0f} {kv * 4096 / 1e9:>25.2f}")
# the teaching claim, checked: same width, 4x fewer KV heads, 4x less cache
assert MODELS["llama-2-7b"].kv_bytes_per_token == 4 * MODELS["llama-3-8b"].kv_bytes_per_token
'''),
    md('''
    ## 2. Memory caps the decode batch

    A GPU holds the weights, some workspace, and then KV: `CostModel.kv_capacity_tokens()` is what
    is left (90% of memory, minus weights, minus 1 GB), counted in tokens. Divide by the context
    length and you get the **most sequences that can decode together**. Decode is memory-bound
    (lab 01): every step reads all the weights once, whatever the batch, so a bigger batch is
    nearly free throughput, until the cache is full.
    '''),
    code('''
models = ["llama-3.2-1b", "llama-3-8b", "llama-2-7b", "opt-13b"]
viz.kv_capacity({m: CostModel.from_names(GPU, m) for m in models}, max_num_seqs=256).show()
'''),
    md('''
    *What to look for:* each line falls as 1/context. On an H100, Llama-3-8B holds about 100
    sequences of 4k tokens; the multi-head Llama-2-7B only a quarter of that, and OPT-13B about a dozen.

    ### Exercise 3.2 — the largest decode batch

    Write `max_decode_batch(cost_model, context)`: how many sequences of `context` tokens fit in
    the KV cache of `cost_model` (a `CostModel`; use its `kv_capacity_tokens()`).
    '''),
    code('''
def max_decode_batch(cost_model, context):
    # Ex 3.2: sequences of `context` tokens whose KV fits in the cache
    # BEGIN SOLUTION
    return cost_model.kv_capacity_tokens() // context
    # END SOLUTION
'''),
    code('''
checks.check_max_decode_batch(max_decode_batch);
'''),
    md('''
    Now the throughput side: decode tokens/s against the batch for 2048-token contexts. The step
    time (= the inter-token latency every stream sees) barely moves while the batch grows, until
    attention's KV reads start to dominate; the red line is where the cache is full.
    '''),
    code('''
cm = CostModel.from_names(GPU, MODEL)
viz.decode_throughput(cm, context=2048, max_batch=1024).show()
cap = cm.kv_capacity_tokens() // 2048
t1, tcap = cm.decode_time(1, 2048), cm.decode_time(cap, 2048)
print(f"batch 1: {1 / t1:,.0f} tokens/s ({t1 * 1e3:.1f} ms/step); batch {cap}: {cap / tcap:,.0f} tokens/s "
      f"({tcap * 1e3:.1f} ms/step)   [{CLOCK}]")
assert cap / tcap > 20 / t1, "a full cache should give >20x the tokens/s of batch 1"
'''),
    md('''
    ## 3. Paging: block tables instead of one buffer per sequence

    A sequence's final length is unknown when it starts. Reserving a contiguous buffer of the
    maximum length for each sequence wastes most of the memory. A **paged** cache cuts memory
    into fixed blocks (here 16 tokens) and gives each sequence a **block table**, a list of block
    ids that grows as it generates. `pdlab.kv.BlockManager` does the bookkeeping
    (`can_allocate`, `allocate`, `free`), nano-vllm style:
    '''),
    code('''
from pdlab.kv import BlockManager
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
'''),
    md('''
    How much memory does paging save on real conversation lengths? Compare three ways to hold the
    KV of 2,000 ShareGPT-like sequences: reserve the model's maximum length (8192) for each, reserve
    the prompt plus the request's `max_tokens` limit (2048 here, a common API default; the answer is
    usually much shorter), or page in 16-token blocks (waste: at most 15 slots per sequence).
    '''),
    code('''
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
'''),
    md('''
    ## 4. When the cache is full: preemption by recompute

    The scheduler admits a prompt only if its blocks fit (keeping a small watermark free), but
    running sequences keep growing one token at a time. When a decode needs a new block and none
    is free, pdlab (like vLLM) **preempts** the most recently admitted sequence: it drops that
    sequence's KV and puts it back at the front of the queue. Nothing is lost; its prompt and the
    tokens it already generated are **recomputed** later as a prefill. The cost: wasted compute,
    and a long pause in that stream.

    Same traffic, two cache sizes (a small cache stands in for a bigger model, longer contexts or
    a smaller GPU):
    '''),
    code('''
small, large = 700, 20000      # KV blocks of 16 tokens per GPU
runs = {}
for blocks in pw.progress((small, large), "cache sizes"):
    runs[blocks] = pw.simulate("chat-long", N, 8.0, mode="chunked", chunk_size=512, model=MODEL, gpu=GPU,
                               num_blocks=blocks)
    s = runs[blocks].summary()
    print(f"{blocks:>6} blocks ({blocks * 16:>7,} tokens): {s['preemptions']:>4} preemptions, "
          f"TPOT p99 {s['tpot_s']['p99'] * 1e3:6.1f} ms, ITL max {max(viz.max_gaps(runs[blocks])) * 1e3:6.0f} ms, "
          f"{s['throughput_tok_s']:,.0f} tokens/s   [{CLOCK}]")
viz.kv_occupancy(runs[small]).show()
s_small, s_large = runs[small].summary(), runs[large].summary()
assert s_small["preemptions"] > 0 and s_large["preemptions"] == 0
assert s_small["tpot_s"]["p99"] > s_large["tpot_s"]["p99"]
'''),
    md('''
    *What to look for:* the small cache climbs to 100% and saw-tooths: each drop is a preempted
    sequence giving its blocks back, each climb its recompute. Its p99 TPOT is worse although
    nothing was dropped.

    ### Explore

    Move the KV blocks slider down until preemptions appear, then raise the rate. The raster
    (bottom) marks in red every stream that stalled more than 100 ms.
    '''),
    code('''
dash = pw.KVCacheDashboard(rate=8.0, num_blocks=1200)   # 150 requests: fast enough to drag
dash
'''),
    md('''
    *What to look for:* the preemption count in the status line jumps once occupancy reaches
    100%; with a bigger model (the model dropdown, same block count) each block is not bigger in
    tokens, but the real cache would hold fewer of them: check with `max_decode_batch`.
    '''),
    code('''
# the dashboard responds to its controls (this is also what the tests do)
before = dash.status_line.value
dash.controls["num_blocks"].value = 500
assert dash.status_line.value != before
'''),
    md('''
    ## Key points

    - KV bytes per token = 2 x layers x KV heads x head dim x bytes per value: GQA divides it by
      heads / KV heads.
    - Memory, not compute, caps the decode batch; and decode throughput grows with the batch.
    - Paging wastes at most one partial block per sequence; contiguous reservation wastes most of memory.
    - A full cache does not drop requests: it preempts and recomputes, paid in latency and compute.

    ## Going further

    1. Quantising the KV cache to 8 bits halves `kv_dtype_bytes`: what happens to the largest batch
       and to the decode step time? (`dataclasses.replace(MODELS["llama-3-8b"], kv_dtype_bytes=1)`)
    2. Why preempt the *most recently admitted* sequence rather than the longest one?
    3. vLLM can also *swap* KV to CPU memory instead of recomputing: when would that be cheaper?
       (compare PCIe time for the KV with the prefill time of the same tokens)
    4. Prefix caching (lab 07) keeps blocks of finished sequences: why does paging make it possible?
    '''),
]


# ================================================================================================
# Lab 04: interference
# ================================================================================================
LAB04 = [
    md('''
    # Lab 04 — Interference: one long prompt freezes every stream

    **Time:** about 20 minutes of teaching and 15 minutes of exercises.
    **Prerequisites:** lab 01 (prefill vs decode); lab 03 (the KV cache) helps.

    **Questions you will be able to answer**

    1. Why does one long prompt freeze every running stream in aggregated serving?
    2. Which metric shows it — TTFT, TPOT or ITL — and at which percentile?
    3. How do the long prompt's length and the arrival rate change the damage?

    Every number is **simulated** by the cost model (Llama-3-8B on one H100 unless you change it).
    '''),
    code(SETUP + '''
N = 200 if FAST else 600       # requests per simulated run
RATE = 6.0                     # requests/s on one GPU
STALL = 0.1                    # a gap between two tokens longer than this is a visible freeze
'''),
    md('''
    ## 1. The scene

    **Aggregated** serving (continuous batching with prefill priority, vLLM v0 / Orca style): one
    GPU runs every request; when a prompt arrives it is prefilled *whole*, in an iteration of its
    own, and only then do the running streams decode their next token. The workload is pdlab's
    `chat-long` mix: short chats (prompts around 256 tokens, answers around 128) and, 5% of the
    time, an 8192-token retrieval prompt.
    '''),
    code('''
agg = pw.simulate("chat-long", N, RATE, mode="aggregated", model=MODEL, gpu=GPU)
window = viz.stall_window(agg, span=3.0)      # 3 s around a long prompt's arrival
viz.token_raster(agg, max_requests=60, t_range=window, stall_s=STALL).show()
'''),
    md('''
    Each row is a request, each dot a token. The orange band is the prefill of the long prompt:
    for its whole duration **no stream emits a token** (red: gaps longer than 100 ms). The batch
    timeline shows why: one wide, all-orange iteration with no decode tokens in it.
    '''),
    code('''
viz.batch_timeline(agg, t_range=(window[0] + 0.7, window[0] + 1.7)).show()
long_steps = [s for s in agg.steps if s[3] >= 4096]          # (worker, start, end, prefill, decode, kv)
worst = max(long_steps, key=lambda s: s[2] - s[1])
print(f"the longest prefill iteration: {worst[3]} prompt tokens, {(worst[2] - worst[1]) * 1e3:.0f} ms, "
      f"{worst[4]} decode tokens in it   [{CLOCK}]")
assert worst[4] == 0 and worst[2] - worst[1] > STALL
'''),
    md('''
    ## 2. Which metric sees it?

    - **TTFT** (arrival to first token) of the *chats* that arrive during the long prefill grows:
      they queue behind it.
    - **TPOT** (a request's mean time per output token) barely moves: one 230 ms gap spread over
      128 tokens is 2 ms.
    - **ITL** (every gap between two tokens) holds the stall, but only as one gap per stream per
      long prompt: the p99 may hide it and the tail shows it.

    Compare with **chunked prefill** (lab 05) on the same requests: the long prompt is cut into
    512-token pieces that share iterations with the decodes.
    '''),
    code('''
chunked = pw.simulate("chat-long", N, RATE, mode="chunked", chunk_size=512, model=MODEL, gpu=GPU)
results = {"aggregated": agg, "chunked": chunked}
summaries = {k: r.summary() for k, r in results.items()}
for metric in ("ttft", "tpot", "itl"):
    viz.percentile_bars(summaries, metric, clock=CLOCK).show()
viz.cdf(viz.metric_arrays(results, "itl"), "itl", clock=CLOCK, log_x=True, tail=True, slo=STALL,
        slo_text="freeze").show()
'''),
    md('''
    *What to look for:* the tail plot draws the share of gaps **longer** than x: chunked stops
    around 20 ms, aggregated keeps a tail out to the long prefill's duration. The p99 bars differ
    less than the tail does: a stall is rare per gap but common per user.
    '''),
    code('''
itl_p99_aggregated = summaries["aggregated"]["itl_s"]["p99"]
itl_p99_chunked = summaries["chunked"]["itl_s"]["p99"]
frozen = {k: float(np.mean(viz.max_gaps(r) > STALL)) for k, r in results.items()}
print(f"ITL p99: aggregated {itl_p99_aggregated * 1e3:.1f} ms, chunked {itl_p99_chunked * 1e3:.1f} ms; "
      f"streams that froze > {STALL * 1e3:.0f} ms: aggregated {frozen['aggregated']:.0%}, "
      f"chunked {frozen['chunked']:.0%}   [{CLOCK}]")
assert itl_p99_aggregated > itl_p99_chunked
assert frozen["aggregated"] > 0.05 and frozen["chunked"] < frozen["aggregated"] / 2
'''),
    md('''
    ### Exercise 4.1 — how many users saw their stream freeze?

    Write `frozen_share(result, threshold_s)`: among finished requests
    (`s.status is Status.FINISHED` for `s` in `result.sequences`), the share whose **longest gap**
    between two consecutive tokens (`s.token_times`) is longer than `threshold_s`. A one-token
    answer has no gap (count it as not frozen).
    '''),
    code('''
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
'''),
    code('''
checks.check_frozen_share(frozen_share);
'''),
    md('''
    ## 3. How big, how often?

    The stall lasts as long as the long prompt's prefill, which grows a little faster than
    linearly (attention is quadratic in the prompt). How many users it hits depends on how many
    streams are running, so on the rate. Two sweeps (same requests, one knob at a time); in the
    rate sweep, aggregated's ITL and TPOT tails climb with the load while chunked's stay nearly
    flat, and TTFT p99 is mostly the long prompts' own prefill in both:
    '''),
    code('''
lengths = [2048, 4096, 8192, 16384]
stall_ms, frozen_by_len, ttft99 = [], [], []
for L in pw.progress(lengths, "long-prompt sizes"):
    r = pw.simulate(pw.Lengths("mix", a=256, b=128, long_len=L, long_share=0.05), N, RATE,
                    mode="aggregated", model=MODEL, gpu=GPU)
    g = viz.max_gaps(r)
    stall_ms.append(float(g.max()) * 1e3)
    frozen_by_len.append(float(np.mean(g > STALL)) * 100)
    ttft99.append(r.summary()["ttft_s"]["p99"] * 1e3)
viz.sweep_lines(lengths, {"longest stall (ms)": stall_ms, "TTFT p99 (ms)": ttft99},
                "Aggregated: the longer the long prompt, the longer every stream freezes",
                "long prompt (tokens), log scale", "ms (log scale)", clock=CLOCK, log_x=True, log_y=True,
                hlines={f"{STALL * 1e3:.0f} ms": STALL * 1e3}).show()
print("streams frozen > 100 ms (%):", dict(zip(lengths, np.round(frozen_by_len, 1))), f"  [{CLOCK}]")
assert stall_ms[-1] > 4 * stall_ms[0]
'''),
    code('''
rates = [2.0, 4.0, 8.0, 12.0]
curves = {"aggregated": [], "chunked": []}
latency = {f"{m} {k}": [] for m in curves for k in ("TTFT p99", "TPOT p99", "ITL p99")}
for rate in pw.progress(rates, "rates"):
    for mode in curves:
        r = pw.simulate("chat-long", N, rate, mode=mode, model=MODEL, gpu=GPU,
                        **({"chunk_size": 512} if mode == "chunked" else {}))
        curves[mode].append(float(np.mean(viz.max_gaps(r) > STALL)) * 100)
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
'''),
    md('''
    ## 4. Explore

    Change the rate, the long prompt's length and its share; switch the mode to `chunked` to
    preview lab 05. The second figure is the CDF of each request's longest gap: the dashed line
    is the 100 ms freeze threshold.
    '''),
    code('''
dash = pw.InterferenceDashboard(rate=RATE)   # 150 requests: fast enough to drag
dash
'''),
    md('''
    *What to look for:* a 32k-token prompt freezes streams for about a second; raise the share
    to 0.2 and almost every user sees a freeze, while TPOT hardly changes. In `chunked` mode the red
    marks disappear and the orange band becomes a series of thin stripes.
    '''),
    code('''
before = np.array(dash.figures["raster"].data[1].x)
dash.controls["long_len"].value = 16384
assert not np.array_equal(before, dash.figures["raster"].data[1].x)
'''),
    md('''
    ## Key points

    - Aggregated serving runs a whole prompt in an iteration of its own: every stream waits for it.
    - The stall equals the long prefill's time (hundreds of ms for 8k tokens on an H100) and hits
      every running stream at once.
    - TPOT hides it; ITL holds it, in the tail; "share of streams that froze" says it in user terms.
    - Longer prompts make longer freezes; more load makes more users see them.

    ## Going further

    1. Why does TTFT p99 also grow with the long prompt, for the *short* chats?
    2. With `max_batched_tokens` (the `chunk_size` of aggregated mode) a prompt is still never split:
       what would that limit protect, and what not?
    3. A bursty arrival process (`make_requests(..., burstiness=4)`) at the same mean rate: more
       or fewer frozen streams? Why?
    4. Which SLO would you write so that it catches this problem? (hint: `SLO("itl", 99.9, 0.1)`
       vs `SLO("tpot", 99, 0.05)`)
    '''),
]


# ================================================================================================
# Lab 05: chunked prefill
# ================================================================================================
LAB05 = [
    md('''
    # Lab 05 — Chunked prefill: the token budget

    **Time:** about 25 minutes of teaching and 15 minutes of exercises.
    **Prerequisites:** lab 04 (interference).

    **Questions you will be able to answer**

    1. What does a per-iteration token budget change, and why do decodes that ride along with a
       prefill chunk cost almost nothing?
    2. What do you trade when you pick the budget: TTFT against ITL?
    3. How do you pick the budget that meets an ITL SLO at the lowest TTFT?

    Every number is **simulated** by the cost model (Llama-3-8B on one H100 unless you change it).
    '''),
    code(SETUP + '''
N = 200 if FAST else 600
RATE = 6.0
'''),
    md('''
    ## 1. The token budget

    Sarathi-Serve's **stall-free batching**: every iteration runs at most `chunk_size` tokens.
    Decodes go first (one token each), then the prompts being prefilled continue, chunk by chunk,
    then new prompts fill what is left. A long prompt is spread over many iterations and the
    streams keep flowing. The same window as lab 04, aggregated then chunked with a 512-token budget:
    '''),
    code('''
agg = pw.simulate("chat-long", N, RATE, mode="aggregated", model=MODEL, gpu=GPU)
chunked = pw.simulate("chat-long", N, RATE, mode="chunked", chunk_size=512, model=MODEL, gpu=GPU)
window = viz.stall_window(agg, span=3.0)
zoom = (window[0] + 0.7, window[0] + 1.7)
viz.batch_timeline(agg, t_range=zoom).show()
viz.batch_timeline(chunked, t_range=zoom).show()
'''),
    md('''
    *What to look for:* the single wide orange iteration of aggregated mode becomes a row of
    narrow bars, each with blue at its foot: the decodes that ran in the same iteration as a chunk.
    '''),
    code('''
in_window = [s for s in chunked.steps if zoom[0] <= s[1] <= zoom[1]]
assert max(s[3] + s[4] for s in chunked.steps) <= 512          # the budget holds
assert any(s[3] > 0 and s[4] > 0 for s in in_window)          # decodes ride along with chunks
assert viz.max_gaps(chunked).max() < viz.max_gaps(agg).max() / 3
'''),
    md('''
    ## 2. Piggybacking: why the decodes are nearly free

    A 512-token chunk is compute-bound: the GPU streams the weights once and is busy with
    matrix math. A decode step is memory-bound: it streams the same weights for a handful of
    tokens. Put the decodes *into* the chunk's iteration and they share the weight read; only
    their attention over the KV cache is extra. Sarathi-Serve measured it (Yi-34B on two A100s):
    1024 prefill tokens alone took 217.2 ms, 1021 prefill + 3 decodes 217.6 ms, while a step of
    4 decodes alone took 68 ms. The cost model reproduces the shape:
    '''),
    code('''
cm = CostModel.from_names(GPU, MODEL)
viz.piggyback_bars(cm, chunk=512, decodes=32, context=1024).show()
t = viz.piggyback_times(cm, chunk=512, decodes=32, context=1024)
alone_d, alone_p, both = t.values()
print(f"32 decodes alone {alone_d * 1e3:.1f} ms; riding on the chunk they add {(both - alone_p) * 1e3:.1f} ms   [{CLOCK}]")
assert both - alone_p < 0.5 * alone_d
'''),
    md('''
    ### Explore

    More decodes, longer contexts: when are they no longer free? (Their attention reads the KV
    cache, which grows with `decodes x context`.)
    '''),
    code('''
pig = pw.PiggybackDashboard()
pig
'''),
    code('''
before = pig.figures["steps"].data[0].y
pig.controls["decodes"].value = 128
assert list(pig.figures["steps"].data[0].y) != list(before)
'''),
    md('''
    ## 3. The trade-off: TTFT against ITL

    A small budget keeps every iteration short (good ITL) but spreads a prompt over many
    iterations, each paying a fixed overhead and re-reading the weights (worse TTFT). A large
    budget does the opposite; an unlimited one is aggregated serving again. Sweep the budget on the
    same requests and plot each budget as one point: TTFT p90 against ITL p99.9 (the tail, where
    the long-prompt stalls live; see *Going further* for p99).
    '''),
    code('''
reqs = pw.chat_long(N, RATE)
points = pw.sweep_chunks(reqs, model=MODEL, gpu=GPU)            # one run per budget (progress bar)
agg_point = pw.point(agg)
ITL_SLO = 0.05
viz.frontier(points, slo_itl=ITL_SLO, extra={"aggregated": agg_point}, clock=CLOCK).show()
by = {p["chunk"]: p for p in points}
print(f"[{CLOCK}]")
for p in points:
    print(f"budget {p['chunk']:>5}: TTFT p90 {p['ttft'] * 1e3:7.1f} ms, ITL p99.9 {p['itl'] * 1e3:6.1f} ms")
assert by[256]["itl"] < by[8192]["itl"]          # small budgets: smooth streams
assert by[64]["ttft"] > by[2048]["ttft"]         # ... and slow first tokens
'''),
    md('''
    *What to look for:* an L-shaped frontier. Budgets of 64-128 tokens buy little ITL and cost a
    lot of TTFT; past 1-2k tokens the ITL tail climbs toward aggregated's. The knee is where most
    deployments sit (vLLM suggests about 2048 batched tokens for good ITL; Sarathi-Serve uses 512
    for strict SLOs).

    ### Exercise 5.1 — pick the budget

    Write `pick_budget(points, itl_slo)`: among `points` (dicts with `chunk`, `ttft`, `itl`, in
    seconds) keep those with `itl <= itl_slo` and return the `chunk` of the one with the lowest
    `ttft`; `None` if no point meets the SLO.
    '''),
    code('''
def pick_budget(points, itl_slo):
    # Ex 5.1: the budget meeting itl <= itl_slo with the lowest TTFT (None if none does)
    # BEGIN SOLUTION
    ok = [p for p in points if p["itl"] <= itl_slo]
    if not ok:
        return None
    return min(ok, key=lambda p: p["ttft"])["chunk"]
    # END SOLUTION
'''),
    code('''
checks.check_pick_budget(pick_budget);
'''),
    code('''
best = checks.reference_pick_budget(points, ITL_SLO)     # the package's answer, used below
print(f"ITL p99.9 <= {ITL_SLO * 1e3:g} ms at the lowest TTFT: budget {best}   [{CLOCK}]")
assert best is not None and by[best]["itl"] <= ITL_SLO
assert agg_point["itl"] > ITL_SLO                # aggregated cannot meet it at any budget
'''),
    md('''
    ## 4. Explore the budget

    Each move of the budget slider runs one simulation and adds its point to the frontier (circled:
    the current budget); *sweep all budgets* fills in the rest. Change the rate or the ITL SLO and
    watch which budget wins.
    '''),
    code('''
dash = pw.ChunkedDashboard(rate=RATE)   # 150 requests per point: fast enough to drag
dash
'''),
    md('''
    *What to look for:* at a higher rate the whole frontier moves right (queueing adds to TTFT)
    and the best budget for the same SLO changes; on an L4 every chunk is slower, so the same ITL
    SLO forces a smaller budget.
    '''),
    code('''
n_before = len(dash.figures["frontier"].data[0].x)
dash.controls["chunk"].value = 2048
assert len(dash.figures["frontier"].data[0].x) == n_before + 1
'''),
    md('''
    ## Key points

    - A token budget bounds every iteration, so no stream waits longer than one budget's worth of compute.
    - Decodes riding on a compute-bound chunk share its weight read: nearly free.
    - Budget = a dial between TTFT (large) and ITL (small); the frontier shows the exchange rate.
    - Pick the budget from your ITL SLO first, then take the lowest TTFT that meets it.

    ## Going further

    1. Plot ITL **p99** instead of p99.9 (`pw.sweep_chunks(reqs, itl_pct=99)`): it is not monotone
       in the budget. Count the gaps a long prompt causes at budget 1024 vs 8192 to explain why.
    2. Why does TTFT p90 rise again at very small budgets even at low load?
    3. Chunked prefill keeps interference small but not zero: which cost-model term grows when
       many decodes with long contexts ride on every chunk?
    4. Does the best budget depend on the GPU? Try `gpu="l4"` and `gpu="h200"` in `sweep_chunks`.
    '''),
]


# ================================================================================================
# Lab 06: disaggregation
# ================================================================================================
LAB06 = [
    md('''
    # Lab 06 — Disaggregation: prefill and decode on separate GPUs

    **Time:** about 30 minutes of teaching and 15 minutes of exercises.
    **Prerequisites:** labs 04 (interference) and 05 (chunked prefill).

    **Questions you will be able to answer**

    1. What does splitting prefill and decode onto separate GPUs remove, and what does it add?
    2. How do the prefill:decode (P:D) ratio and the KV link change goodput per GPU under SLOs?
    3. When does disaggregation lose to aggregated or chunked serving on the same GPUs?

    Every number is **simulated** by the cost model (Llama-3-8B on H100s unless you change it).
    '''),
    code(SETUP + '''
N = 300 if FAST else 1000
SLOS = [SLO("ttft", 90, 0.5), SLO("itl", 99, 0.05)]   # interactive chat targets
print("SLOs:", ", ".join(map(str, SLOS)))
'''),
    md('''
    ## 1. Two pools and a link

    **Disaggregated** serving (DistServe, Splitwise, NVIDIA Dynamo) runs prompts on a **prefill
    pool** and streams on a **decode pool**. The prefill worker computes the prompt's KV and the
    first token; the KV then crosses a **link** (NVLink inside a node, InfiniBand or Ethernet
    between nodes) into the decode worker's cache, and decoding continues there. No decode
    iteration ever waits behind a prompt: the interference of lab 04 is gone by construction.
    '''),
    code('''
dis = pw.simulate("chat-long", N, 12.0, mode="disaggregated", prefill_gpus=1, decode_gpus=1, model=MODEL, gpu=GPU)
agg = pw.simulate("chat-long", N, 12.0, mode="aggregated", num_gpus=2, model=MODEL, gpu=GPU)
mid = dis.sequences[N // 2].arrival
viz.batch_timeline(dis, t_range=(mid, mid + 1.0)).show()
decode_prefill_tokens = sum(s[3] for s in dis.steps if dis.roles[s[0]] == "decode")
print(f"prefill tokens computed on the decode worker: {decode_prefill_tokens}; "
      f"longest stall: disaggregated {viz.max_gaps(dis).max() * 1e3:.0f} ms, "
      f"aggregated (2 GPUs) {viz.max_gaps(agg).max() * 1e3:.0f} ms   [{CLOCK}]")
assert decode_prefill_tokens == 0
assert viz.max_gaps(dis).max() < viz.max_gaps(agg).max() / 3
'''),
    md('''
    *What to look for:* the prefill worker (top) runs only orange bars with gaps between them; the
    decode worker (bottom) runs only blue ones, back to back.

    ### Exercise 6.1 — the price of the link

    Every request's KV crosses the link once: `prompt_tokens x kv_bytes_per_token` bytes (lab 03).
    Write `kv_transfer_s(m, prompt_tokens, link_gbps, latency_s)`: the seconds that takes on a link
    of `link_gbps` GB/s (1 GB = 1e9 bytes) with a fixed `latency_s`.
    '''),
    code('''
def kv_transfer_s(m, prompt_tokens, link_gbps, latency_s):
    # Ex 6.1: seconds to move one prompt's KV (m is a ModelSpec)
    # BEGIN SOLUTION
    return latency_s + prompt_tokens * m.kv_bytes_per_token / (link_gbps * 1e9)
    # END SOLUTION
'''),
    code('''
checks.check_kv_transfer_s(kv_transfer_s);
'''),
    code('''
from pdlab.costmodel import LINK_LATENCY_S, LINKS_GBPS

cm = CostModel.from_names(GPU, MODEL)
prefill_4k = cm.prefill_time(4096)
print(f"a 4096-token prompt of {MODEL}: {4096 * cm.model.kv_bytes_per_token / 1e9:.2f} GB of KV; "
      f"its prefill takes {prefill_4k * 1e3:.0f} ms on one {GPU}   [{CLOCK}]")
for link, gbps in LINKS_GBPS.items():
    t = cm.kv_transfer_time(4096, gbps, LINK_LATENCY_S[link])
    print(f"  {link:>9} ({gbps:6.1f} GB/s): {t * 1e3:7.1f} ms  ({t / prefill_4k:5.1f}x the prefill)")
assert cm.kv_transfer_time(4096, LINKS_GBPS["eth-25g"]) > prefill_4k > cm.kv_transfer_time(4096, LINKS_GBPS["nvlink"])
'''),
    md('''
    ## 2. Goodput per GPU: the ratio matters

    **Goodput** is the highest request rate at which every SLO still holds; divided by the GPUs
    used it is what you pay for. Compare four setups of **3 GPUs** on a long-prompt workload
    (arXiv summarisation: prompts of thousands of tokens): aggregated and chunked replicas, and
    disaggregated with 2 prefill + 1 decode or 1 prefill + 2 decode GPUs. First the latencies
    as the load grows, then the goodput search (progress bars: each search runs about a dozen
    simulations per setup).
    '''),
    code('''
reqs = make_requests(N, 4.0, "arxiv", seed=0)
setups = {
    "aggregated": ServingConfig(mode="aggregated", num_gpus=3, model=MODEL, gpu=GPU),
    "chunked": ServingConfig(mode="chunked", num_gpus=3, chunk_size=512, model=MODEL, gpu=GPU),
    "disaggregated 2:1": ServingConfig(mode="disaggregated", prefill_gpus=2, decode_gpus=1, model=MODEL, gpu=GPU),
    "disaggregated 1:2": ServingConfig(mode="disaggregated", prefill_gpus=1, decode_gpus=2, model=MODEL, gpu=GPU),
}
rates = [3.0, 6.0, 12.0, 18.0, 24.0] if FAST else [3.0, 6.0, 9.0, 12.0, 18.0, 24.0, 30.0]
sweep = pw.sweep_rates(reqs, rates, setups, SLOS)
viz.slo_curves(rates, sweep, SLOS, per_gpu={k: c.gpus for k, c in setups.items()}, clock=CLOCK).show()
'''),
    code('''
goodput = {k: pw.goodput(reqs, c, SLOS, start=6.0, label=k) / c.gpus for k, c in setups.items()}
viz.goodput_bars(goodput, clock=CLOCK, slos=SLOS).show()
print(f"[{CLOCK}]")
for k, g in goodput.items():
    print(f"{k:>18}: {g:5.2f} requests/s per GPU within the SLOs")
assert goodput["disaggregated 2:1"] > goodput["aggregated"]
assert goodput["disaggregated 2:1"] > 1.5 * goodput["disaggregated 1:2"]
'''),
    md('''
    *What to look for:* aggregated loses on ITL first (stalls); chunked and disaggregated hold the
    ITL SLO much longer. With long prompts most of the work is prefill, so 2 prefill GPUs for one
    decode GPU is the right shape, and 1:2 starves the prefill pool (TTFT explodes first). A ratio
    is a bet on the workload's prompt/answer mix.

    ## 3. Explore

    Pick the P:D split, the link, the workload and the SLOs. The other two modes always get the
    same number of GPUs. *goodput per GPU* runs the three searches (a few seconds).
    '''),
    code('''
dash = pw.DisaggDashboard(rate=12.0)   # 100 requests x 3 modes per change
dash
'''),
    md('''
    *What to look for:* with *ShareGPT* or *arXiv* and a slow link, disaggregated TTFT stays low
    (the first token comes from the prefill worker) while the status line's KV volume says what
    the link carries; 1:2 vs 2:1 flips which SLO breaks first; with *short prompts, long answers*
    there is little prefill to isolate.
    '''),
    code('''
before = list(dash.figures["ttft"].data[2].y)
dash.controls["split"].value = "2:1"
assert list(dash.figures["ttft"].data[2].y) != before
'''),
    md('''
    ## 4. When disaggregation loses

    Users of disaggregated stacks regularly report them slower than aggregated serving
    (dynamo#402, sglang#6411). Three reasons you can reproduce here.

    **A slow link.** The KV transfer sits between the first and the second token, so TTFT does
    not see it and an ITL p99 over thousands of gaps barely does, but the user sees the stream
    pause right after the first word. Same arXiv requests at 8 requests/s on 1 + 1 GPUs, per link:
    '''),
    code('''
pause = {}
print(f"[{CLOCK}]")
for label, link in pw.progress(pw.LINK_OPTIONS, "links"):
    r = run_serving(make_requests(N, 8.0, "arxiv", seed=0),
                    ServingConfig(mode="disaggregated", link=link, model=MODEL, gpu=GPU))
    pause[link] = float(np.percentile(viz.first_gaps(r), 90)) * 1e3
    met = r.summary(SLOS)["slo_attainment"]["all_met"]
    print(f"{label:>26}: pause after the first token p90 {pause[link]:7.0f} ms; SLOs {'met' if met else 'missed'}")
viz.value_bars(pause, "Pause between the first and second token (p90), by KV link",
               "ms (log scale)", clock=CLOCK, fmt="{:.0f}", log_y=True,
               colors={k: "#2ca02c" for k in pause}).show()
assert pause["eth-25g"] > 10 * pause["nvlink"]
'''),
    md('''
    *What to look for:* on 25 GbE the link saturates and the pause grows to most of a second,
    while the SLO report still says *met*: write an SLO on time-to-second-token (or E2E) if your
    KV crosses a network.

    **Low traffic.** At 1 request/s nothing interferes with anything: aggregated already meets the
    SLOs, and the disaggregated prefill GPU sits idle most of the time.
    '''),
    code('''
low = make_requests(N // 2, 1.0, "arxiv", seed=0)
busy = {}
print(f"[{CLOCK}]")
for label, cfg in {"aggregated": ServingConfig(mode="aggregated", num_gpus=2, model=MODEL, gpu=GPU),
                   "disaggregated": ServingConfig(mode="disaggregated", model=MODEL, gpu=GPU)}.items():
    r = run_serving(low, cfg)
    s = r.summary(SLOS)
    for w, b in viz.busy_share(r).items():
        busy[f"{label}: {w}"] = b
    print(f"{label:>14}: SLOs {'met' if s['slo_attainment']['all_met'] else 'missed'}, "
          f"TTFT p90 {s['ttft_s']['p90'] * 1e3:.0f} ms, ITL p99 {s['itl_s']['p99'] * 1e3:.1f} ms")
viz.value_bars(busy, "Share of the time each GPU is busy at 1 request/s", "busy share", clock=CLOCK,
               fmt="{:.0%}").show()
assert busy["disaggregated: prefill0"] < 0.25
'''),
    md('''
    **Short prompts, long answers.** When almost all the work is decode, the prefill pool has
    little to do, and one decode GPU carries every stream that two chunked GPUs would share.
    64-token prompts, 512-token answers, 16 requests/s on 2 GPUs:
    '''),
    code('''
short = make_requests(N, 16.0, pw.Lengths("fixed", a=64, b=512), seed=0)
pair = {"chunked": ServingConfig(mode="chunked", num_gpus=2, chunk_size=512, model=MODEL, gpu=GPU),
        "disaggregated": ServingConfig(mode="disaggregated", prefill_gpus=1, decode_gpus=1, model=MODEL, gpu=GPU)}
e2e, tpot = {}, {}
print(f"[{CLOCK}]")
for label, cfg in pair.items():
    r = run_serving(short, cfg)
    s = r.summary(SLOS)
    e2e[label], tpot[label] = s["e2e_s"]["p90"], s["tpot_s"]["p50"]
    shares = ", ".join(f"{w} {b:.0%}" for w, b in viz.busy_share(r).items())
    print(f"{label:>14}: SLOs {'met' if s['slo_attainment']['all_met'] else 'missed'}, TPOT p50 "
          f"{tpot[label] * 1e3:.1f} ms, E2E p90 {e2e[label]:.2f} s; busy: {shares}")
viz.value_bars(e2e, "Time to the whole answer (E2E p90), 64-token prompts, 512-token answers", "seconds",
               clock=CLOCK + "; 2 GPUs each; 16 requests/s", fmt="{:.2f} s").show()
assert e2e["disaggregated"] > e2e["chunked"] and tpot["disaggregated"] > tpot["chunked"]
'''),
    md('''
    *What to look for:* both setups meet the SLOs, but disaggregated answers arrive later: its single
    decode GPU runs twice the batch, while the prefill GPU is busy about a tenth of the time.
    '''),
    md('''
    ## Key points

    - Disaggregation removes prefill-decode interference by construction: no decode waits for a prompt.
    - It adds a KV transfer per request (GBs per long prompt) that lands between the first and second
      token, and it splits the GPUs into two pools that must be sized for the workload.
    - Judge it by goodput per GPU under your SLOs, at your traffic, against chunked serving on the same GPUs.
    - It loses with a slow link, at low traffic (idle pools), and when there is little prefill to isolate.

    ## Going further

    1. Which P:D ratio maximises goodput per GPU for `sharegpt`? For `mooncake-conv`? Why do they differ?
    2. Llama-2-7B has 4x the KV per token of Llama-3-8B (lab 03): how does that change the link verdict?
    3. Add an SLO on E2E (`SLO("e2e", 90, 5.0)`): does it catch the slow link?
    4. DistServe also places prefill and decode with different tensor parallelism: what would
       `tp=2` on the prefill pool buy for 8k-token prompts?
    '''),
]


LABS = {
    "03_kv_cache": LAB03,
    "04_interference": LAB04,
    "05_chunked_prefill": LAB05,
    "06_disaggregation": LAB06,
}


def build(name: str, cells) -> Path:
    nb = new_notebook(cells=list(cells))
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    for i, c in enumerate(nb.cells):
        c.id = f"{name[:2]}-{i:02d}"
    nbformat.validate(nb)
    path = SOLUTIONS / f"{name}.ipynb"
    path.write_text(nbformat.writes(nb) + "\n")
    return path


def main() -> None:
    SOLUTIONS.mkdir(parents=True, exist_ok=True)
    for name, cells in LABS.items():
        print("wrote", build(name, cells).relative_to(SOLUTIONS.parent.parent))


if __name__ == "__main__":
    main()
