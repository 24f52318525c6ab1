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
# # Lab 02 — Attention kernels: from naive attention to paged decode
#
# **Time:** about 45 minutes of teaching and 30 minutes of exercises.
# **Prerequisites:** lab 01 (prefill vs decode, the roofline); Python and torch. CUDA words
# (thread, block, warp, shared memory) help; this lab explains what it uses.
#
# **Questions you will be able to answer**
#
# 1. How does a kernel find token *p*'s keys in a **paged** KV cache?
# 2. How can attention read K and V once, a tile at a time, without keeping all the scores?
#    (the **online softmax**)
# 3. How do the decode kernel's threads map to query heads, tokens and head dimensions?
# 4. Why is decode attention **memory-bound** however many sequences you batch, and why does
#    prefill need the tensor cores (what is a **fragment**, why `16x8x16` tiles)?
#
# The kernels live in `pdlab/kernels/`: device code in `decode_kernel.py`, `prefill_fp32.py` and
# `cache_ops.py`, the host side (checks, planning, launch) in `decode_attention.py` and
# `prefill_attention.py`; `_numba.py` and `_memory.py` hold the Numba-specific helpers and
# intrinsics. Keep them open beside this notebook.

# %%
import os
import time

import torch

try:  # without a GPU, Numba's CUDA kernels run on its simulator; set before numba is imported
    _gpu = torch.cuda.is_available()
except Exception:
    _gpu = False
if not _gpu:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

from pdlab.lab import checks, env
from pdlab.lab import results as measured
from pdlab.viz import kernels as vk
from pdlab.kernels import get_backend, reference as ref
from pdlab.kernels.paged import make_case

info = env.report()
FAST = env.FAST                       # CI: smallest shapes
GPU = torch.cuda.is_available()
DEV = "cuda" if GPU else "cpu"
kb = get_backend("numba")             # the Numba CUDA kernels (GPU, or the simulator on a CPU)
tb = get_backend("torch")             # paged gather + torch SDPA: the fast reference
RESULTS = measured.load()           # measured on an NVIDIA H200 by bench/kernels.py
print("Numba kernels run on:", torch.cuda.get_device_name(0) if GPU else
      "the CUDA simulator (one OS thread per CUDA thread: tiny shapes, correctness only)")

# %% [markdown]
# ## 1. Naive attention, and the causal offset of a chunk
#
# For one query head, attention is `softmax(q K^T * scale) V`. With **grouped-query attention**
# (GQA) several query heads share one KV head: Llama-3-8B has 32 query heads and 8 KV heads, a
# *group* of 4. During prefill a sequence's new tokens arrive as a **chunk** of `q_len` queries
# whose context already holds `kv_len - q_len` older tokens: query `i` sits at position
# `kv_len - q_len + i` and may see keys `0 .. kv_len - q_len + i`. A whole prompt is the case
# `q_len == kv_len`; a decode step is `q_len == 1`.

# %%
q_len, kv_len, H, Hkv, D = 3, 8, 4, 1, 64
q = torch.randn(q_len, H, D)            # [q_len, num_heads, head_dim]
k = torch.randn(kv_len, Hkv, D)         # [kv_len, num_kv_heads, head_dim]
v = torch.randn(kv_len, Hkv, D)
out = ref.attention(q, k, v, scale=D ** -0.5)   # [q_len, num_heads, head_dim], fp32
pos_q = torch.arange(q_len) + kv_len - q_len      # absolute positions of the chunk's queries
print("output:", tuple(out.shape))
print("who sees whom (rows: queries at positions", pos_q.tolist(), ")")
print((torch.arange(kv_len)[None, :] <= pos_q[:, None]).int())


# %% [markdown]
# ## 2. The paged KV cache
#
# Serving engines do not give each sequence one contiguous K/V buffer (its final length is
# unknown). The cache is cut into **blocks** of `block_size` token slots,
# `k_cache[num_blocks, block_size, num_kv_heads, head_dim]`, and each sequence owns a list of
# block ids, its **block table**. Token position `p` lives in block `block_table[p // block_size]`,
# row `p % block_size`; flattening the first two dimensions gives its **slot**.
#
# ### Exercise 2.1 — find a token's slot

# %%
def slot_of(block_table, pos, block_size):
    # Slot of token position `pos`: its row in the cache viewed as [num_blocks * block_size, Hkv, D].
    # Ex 2.1
    # BEGIN SOLUTION
    return block_table[pos // block_size] * block_size + pos % block_size
    # END SOLUTION


# %%
checks.check_slot_of(slot_of);

# %% [markdown]
# `pdlab.kernels.paged.make_case` scatters known K/V over the blocks of a cache in a scrambled
# order (so a kernel that ignores the block table fails); `reference.gather` reads a sequence back
# through its block table:

# %%
c = make_case([37, 5], num_kv_heads=2, group=4, head_dim=64, block_size=16, dtype=torch.float16)
print("k_cache:", tuple(c.k_cache.shape), "  block_tables:\n", c.block_tables)
assert torch.equal(ref.gather(c.k_cache, c.block_tables[0], 37), c.ks[0])
print("gathered K of sequence 0 equals its dense K")


# %% [markdown]
# ## 3. Online softmax: attention one tile at a time
#
# A kernel cannot hold a whole row of scores (32k tokens of context) in registers. FlashAttention
# and FlashDecoding read K/V **tile by tile** and keep, per query, only
#
# * `m`: the largest score seen so far,
# * `l`: the sum of `exp(score - m)` so far,
# * `acc`: the sum of `exp(score - m) * v` so far.
#
# When a tile raises the max from `m` to `m_new`, everything summed so far was measured against
# the old max: multiply `l` and `acc` by `alpha = exp(m - m_new)`, then add the tile's
# `p = exp(s - m_new)`. At the end, `acc / l` is exactly `softmax(s) V`, and K/V were read once.
#
# ### Exercise 2.2 — write the update

# %%
def online_softmax(q, k, v, scale, tile):
    # q [D], k and v [L, D] -> softmax(q k^T * scale) v [D], reading k and v `tile` rows at a time.
    m = torch.tensor(float("-inf"))    # running max score
    l = torch.tensor(0.0)              # running sum of exp(score - m)
    acc = torch.zeros(q.shape[-1])     # running sum of exp(score - m) * v
    for t0 in range(0, k.shape[0], tile):
        s = (k[t0:t0 + tile].float() @ q.float()) * scale     # [tile] scores of this tile
        # Ex 2.2: update m, l and acc with this tile
        # BEGIN SOLUTION
        m_new = torch.maximum(m, s.max())
        alpha = torch.exp(m - m_new)                          # rescales what was summed so far
        p = torch.exp(s - m_new)                              # [tile]
        l = l * alpha + p.sum()
        acc = acc * alpha + p @ v[t0:t0 + tile].float()
        m = m_new
        # END SOLUTION
    return acc / l


# %%
checks.check_online_softmax(online_softmax);

# %% [markdown]
# The Numba decode kernel runs this recurrence per query head, with two changes that save work:
# it scores a few tokens (`UNROLL`) per step and takes one max and one rescale per step, not per
# token; and it works in base 2 (q is scaled by log2(e) once, so each exponential is a single
# `exp2` instruction). Here is that part of `pdlab/kernels/decode_kernel.py`:

# %%
import inspect
import pdlab.kernels.decode_kernel as dk

src = inspect.getsource(dk)
start = src.index("    def online_softmax(")
print(src[start:src.index("    if not SIM:", start)])

# %% [markdown]
# ## 4. The decode kernel: who does what
#
# One query token per sequence, against its whole paged context. The grid has one **block** of
# 128 threads per *(KV head, sequence, split)*:
#
# * **GQA.** A block serves all `group` query heads that share its KV head, so every K/V byte is
#   read from memory once, not once per query head.
# * **Lanes over the head dimension.** One token's K row (`head_dim` values of 2 bytes) is shared by
#   `head_dim / 16` neighbouring threads; each owns 16 dims and reads them with **two 16-byte
#   loads** (8 values each, one in each half of the row, so the row's lanes read contiguous bytes).
#   Numba would otherwise issue 2-byte loads, 8 times as many instructions for the same bytes.
#   Why 16 dims and not 8? The work per token that every lane repeats (shuffles, exponentials,
#   addresses) is then shared by half as many lanes: on the H200 the 8-dim layout ran out of
#   instruction issue slots before it ran out of bandwidth.
# * **Rows of tokens.** The 128 threads cover `128 / (head_dim / 16)` token rows at a time (16 for
#   head dim 128: a *row group*), and each thread takes `UNROLL` tokens per step.
# * **A ring of shared memory.** To stream at full bandwidth an SM needs tens of kilobytes in
#   flight. Loads into registers can only keep as many bytes in flight as the registers hold, so
#   each thread instead starts asynchronous copies (`cp.async`) of its slice of the row groups
#   four groups ahead into a ring of shared memory (six slots: all 48 KB a block may have), and
#   reads back only what it copied itself (no barrier needed). On the H200 the ring took the
#   kernel from 78% to 85% of copy bandwidth, and a sixth slot added another 1.4-2.1%. The copies
#   also tell L2 to evict these lines first: K/V are read once per step, and what is read again
#   (the block tables, the splits' partial results) should stay cached instead (2-3% more).
# * **Merging the rows.** Each row group's rows saw different tokens, so at the end each row posts
#   its `(m, l, acc)` to shared memory and the block combines them: the same algebra as the
#   online softmax below.
# * **Warp shuffles.** Each thread has 16 of the `head_dim` products of `q.k`; a butterfly of
#   `shfl_xor` sums them across the row's lanes without shared memory. (The simulator has no
#   shuffles: `_numba.lane_sum` swaps in a shared-buffer version there.)
# * **FlashDecoding.** With a small batch there are too few blocks for 132 SMs, so the context is
#   split; each split writes its partial output and log-sum-exp, and the split that finishes last
#   (an atomic counter tells it) combines them, the same algebra as the online softmax, without a
#   second kernel launch.
#
# The map below shows which thread loads which K element in one step (colour: warp):

# %%
vk.thread_map_figure(head_dim=128, threads=128, unroll=2)

# %% [markdown]
# Run it, live, against the reference: a 1-token sequence, a sequence whose length is not a
# multiple of the block size, bf16 KV (Numba has no bf16 type: the kernel reads the bits as int16
# and moves them into the top half of an fp32), and a 3-way split:

# %%
if GPU and not FAST:
    shape = dict(seq_lens=[1, 1000, 4097, 77], num_kv_heads=8, group=4, head_dim=128, block_size=16)
else:
    shape = dict(seq_lens=[1, 45], num_kv_heads=1, group=4, head_dim=64, block_size=16)
c = make_case(**shape, dtype=torch.bfloat16, device=DEV, seed=1)
expected = ref.decode(c.q_decode, c.ks, c.vs, c.scale)
for splits in (None, 3):
    t0 = time.perf_counter()
    out = kb.decode_attention(c.q_decode, c.k_cache, c.v_cache, c.block_tables, c.seq_lens, c.scale,
                              num_splits=splits)
    err = (out.float().cpu() - expected).abs().max().item()
    print(f"num_splits={splits}: max |error| = {err:.1e} (bf16), {time.perf_counter() - t0:.2f} s wall")
    assert err < 2e-2

# %% [markdown]
# The prefill kernel is the same recurrence on tiles of 64 queries x 64 keys, with each thread
# computing a small piece of `Q K^T` and of `P V` in registers (register tiling: every value read
# from shared memory feeds several multiply-adds). One launch takes a ragged batch: here a chunk of
# 9 new tokens on top of 31 older ones, next to a whole 17-token prompt.

# %%
c = make_case([40, 17], q_lens=[9, 17], num_kv_heads=1, group=4, head_dim=64, block_size=16,
              dtype=torch.float16, device=DEV, seed=2)
out = kb.prefill_attention(c.q_prefill, c.k_cache, c.v_cache, c.block_tables, c.cu_seqlens_q, c.seq_lens, c.scale)
err = (out.float().cpu() - ref.prefill(c.q_prefill, c.ks, c.vs, c.cu_seqlens_q.cpu(), c.scale)).abs().max().item()
print(f"chunked + whole-prompt prefill in one launch: max |error| = {err:.1e}")
assert err < 3e-3


# %% [markdown]
# ## 5. Why decode is memory-bound
#
# Count one decode step of attention. Every sequence reads its own K and V, each
# `[context, num_kv_heads, head_dim]`, once. Per query head and per token it does a dot product and
# a multiply-add of V: 2 + 2 FLOPs per head-dim element.
#
# ### Exercise 2.3 — bytes and FLOPs of a decode step

# %%
def decode_traffic(batch, context, num_heads, num_kv_heads, head_dim, bytes_per_el):
    # -> (bytes of K and V read, FLOPs) for one decode step of attention over the whole batch
    # Ex 2.3
    # BEGIN SOLUTION
    kv_bytes = 2 * batch * context * num_kv_heads * head_dim * bytes_per_el
    flops = 4 * batch * context * num_heads * head_dim
    return kv_bytes, flops
    # END SOLUTION


# %%
checks.check_decode_traffic(decode_traffic);

# %% [markdown]
# FLOPs / bytes = `num_heads / num_kv_heads` = **4 FLOP per byte** for Llama-3-8B shapes, whatever
# the batch or the context: each sequence brings its own K/V, so batching adds bytes and FLOPs in
# the same proportion. (Batching *does* help the weight matrix-multiplies of decode, lab 01: there
# all sequences share the weights.) The H200's ridge points are far to the right: 67 TFLOP/s over
# ~4.3 TB/s is ~16 FLOP/B for fp32 CUDA cores, ~230 for bf16 tensor cores. A prefill of 4096 tokens
# reuses each K/V row thousands of times and sits far right of both.
#
# The roofline below uses the numbers **measured on an NVIDIA H200** (`bench/kernels.py`, results in
# `bench/results/kernels-h200-2026-11-29.json`) and adds a live point from this machine.

# %%
live = []
if GPU:   # time the Numba decode kernel here, now
    lc = make_case([2048] * (4 if FAST else 16), num_kv_heads=8, group=4, head_dim=128, block_size=16,
                   dtype=torch.bfloat16, device=DEV, seed=3)
    run = lambda: kb.decode_attention(lc.q_decode, lc.k_cache, lc.v_cache, lc.block_tables, lc.seq_lens, lc.scale, check=False)
    run(); torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record(); [run() for _ in range(20)]; e1.record(); torch.cuda.synchronize()
    sec, who = e0.elapsed_time(e1) / 20 / 1e3, f"decode Numba (eager), live on {torch.cuda.get_device_name(0)}"
else:     # the simulator's timings mean nothing: time the torch backend on this CPU instead
    lc = make_case([256] * 4, num_kv_heads=8, group=4, head_dim=128, block_size=16, dtype=torch.bfloat16, seed=3)
    run = lambda: tb.decode_attention(lc.q_decode, lc.k_cache, lc.v_cache, lc.block_tables, lc.seq_lens, lc.scale)
    run()                                                   # warm-up
    t0 = time.perf_counter(); [run() for _ in range(5)]
    sec, who = (time.perf_counter() - t0) / 5, "decode torch backend, live on this CPU"
t = vk.decode_traffic(1, int(lc.seq_lens.sum()), 32, 8, 128)
live.append(dict(label=who, intensity=t["intensity"], tflops=t["flops"] / sec / 1e12))
print(f"{who}: {t['bytes'] / sec / 1e9:.1f} GB/s of KV")
vk.roofline_figure(RESULTS, live)

# %%
print(f"measured on an {RESULTS['gpu']} (driver {RESULTS['driver']}), copy bandwidth {RESULTS['copy_tbps']:.2f} TB/s")
for r in RESULTS["decode"]:
    print(f"decode batch {r['batch']:>2} x context {r['context']:>5}: Numba {r['tbps']:.2f} TB/s "
          f"({100 * r['ratio_to_copy']:.0f}% of copy), torch SDPA on dense K/V {r['sdpa_tbps']:.2f} TB/s")
for r in RESULTS["prefill"]:
    extra = f", SDPA {r['sdpa_tflops']:.0f} TFLOP/s (tensor cores)" if "sdpa_tflops" in r else ""
    print(f"prefill {r['tokens']} tokens on {r['context']} context: Numba {r['tflops']:.1f} TFLOP/s{extra}")

# %% [markdown]
# What to read from it: the decode points sit on the **left**, where the roof is the bandwidth line;
# no amount of arithmetic speed moves them, only moving bytes faster does. On the H200 our Numba
# kernel reaches about 91% of the copy bandwidth with a batch (82% for one 32k-token sequence,
# where the fixed cost of a launch weighs most); torch's SDPA (a CUDA C++ kernel) reaches 83-98%.
# The prefill points sit on the **right**: the
# Numba prefill runs on the fp32 CUDA cores at about 25 TFLOP/s while SDPA uses the tensor cores,
# about 20x faster. Numba has no tensor-core API, which is why real engines write prefill kernels
# in CUDA C++, CUTLASS or Triton.
#
# ### Explore: batch and context
#
# Move the sliders: the predicted attention time of one decode step (one layer), if it moved its
# K/V at the measured Numba bandwidth or at copy speed. Watch the title: bytes and FLOPs grow with
# `batch x context`, their ratio never moves.

# %%
box, fig, sliders = vk.decode_explorer(RESULTS, batch=16, context=4096)
box

# %%
# the same thing, driven from code (this is how the figure is tested)
before = list(fig.data[0].y)
sliders["batch"].value = 64
assert list(fig.data[0].y) != before
print(fig.layout.title.text)
sliders["batch"].value = 16

# %% [markdown]
# ## 6. Launch overhead and CUDA graphs
#
# Launching a Numba kernel from Python costs tens of microseconds; the decode kernel of a small
# batch runs for less. Measured on the H200 (`launch_us` in the results):

# %%
lu = RESULTS["launch_us"]
print(f"one Numba kernel launched from Python:         {lu['eager']:.0f} us")
print(f"an empty kernel launched from Python:          {lu['empty_kernel_eager']:.0f} us")
print(f"an empty kernel replayed from a CUDA graph:    {lu['graph']:.2f} us")
print(f"a whole decode_attention() call from Python:   {lu['decode_call_eager']:.0f} us")
if GPU:
    from pdlab.kernels.graphs import DecodeGraph
    g = DecodeGraph(c.q_decode.clone(), c.k_cache, c.v_cache, c.block_tables.clone(), c.seq_lens.clone(), c.scale)
    print("graph replay matches eager:", torch.allclose(g.replay().float(), kb.decode_attention(
        c.q_decode, c.k_cache, c.v_cache, c.block_tables, c.seq_lens, c.scale, num_splits=g.num_splits).float()))

# %% [markdown]
# `pdlab/kernels/graphs.py` captures a whole decode step: Numba launches go to torch's current
# stream (`cuda.external_stream(torch.cuda.current_stream().cuda_stream)`), which inside
# `torch.cuda.graph()` is the capturing stream. The engine then updates `q`, `seq_lens` and the block
# tables in place and replays: sub-microsecond per kernel instead of tens.

# %% [markdown]
# ## 7. Prefill on the tensor cores
#
# A prefill is compute-bound, and on a Hopper GPU almost all of the arithmetic lives in the
# **tensor cores**, which multiply small matrices in one instruction. The instruction this lab's
# prefill kernel uses, `mma.sync.aligned.m16n8k16` (bf16 or fp16 in, fp32 accumulate), computes
# `D[16x8] = A[16x16] @ B[16x8] + C[16x8]` with the 32 threads (lanes) of a warp together. No lane
# holds a whole matrix: each holds a **fragment**, a few registers in a layout the PTX ISA fixes:
# 4 registers of A (two 16-bit values each: 8 of A's 256 values), 2 of B (4 values) and 4 fp32
# accumulators of C. Numba has no tensor-core API, so `pdlab/kernels/_mma.py` reaches `ldmatrix`
# (shared memory into fragments), `mma.sync` and the 16-bit packing through small inline-PTX
# intrinsics, and `pdlab/kernels/fragments.py` states the layouts once (the simulator emulates the
# instructions with the same layouts, which is how this cell runs on a laptop). Hover over the
# figure: the colour is the lane, the label the register.

# %%
vk.fragment_figure()

# %% [markdown]
# Why attention maps onto these tiles (`pdlab/kernels/prefill_mma.py`, FlashAttention-2 style):
#
# * **S = Q K^T.** A warp owns 16 query rows. For each 16 head dims, its Q fragment (A, 16 queries
#   x 16 dims) times the K fragment of 8 keys (B, 16 dims x 8 keys) adds to a 16 x 8 tile of
#   scores in C. K stored `[key][dim]` is already B's "column" layout, so `ldmatrix` loads it
#   as it is; head dim 128 is 8 such steps, a 64-key tile 8 such tiles.
# * **The online softmax on the accumulators.** A row of C lives in the 4 lanes of a quad (lanes
#   4g..4g+3), so a row's max and sum take two warp shuffles, and the rescale of section 3 is a
#   multiply of registers.
# * **P V without shared memory.** Two neighbouring 16 x 8 accumulator tiles have exactly the
#   layout of one 16 x 16 A fragment: P, packed to bf16, is the A operand of `P @ V` as it sits
#   in registers. V stored `[key][dim]` goes in as B through `ldmatrix.trans` (transposed on the
#   way).
# * One `mma` instruction does 16 x 8 x 16 x 2 = 4096 FLOPs for the warp; the fp32 kernel needs
#   one fused multiply-add (2 FLOPs) per lane per instruction, 64 for the warp.
#
# The tensor-core kernel, live, on a chunk of 9 new tokens after 31 cached ones beside a whole
# 17-token prompt (one warp per block here: the simulator emulates every warp instruction):

# %%
c = make_case([40, 17], q_lens=[9, 17], num_kv_heads=1, group=4, head_dim=64, block_size=16,
              dtype=torch.bfloat16, device=DEV, seed=2)
out = kb.prefill_attention(c.q_prefill, c.k_cache, c.v_cache, c.block_tables, c.cu_seqlens_q, c.seq_lens,
                           c.scale, kernel="mma", tile=None if GPU else (1, 1, 16))
err = (out.float().cpu() - ref.prefill(c.q_prefill, c.ks, c.vs, c.cu_seqlens_q.cpu(), c.scale)).abs().max().item()
print(f"tensor-core prefill (bf16 operands, fp32 accumulators): max |error| = {err:.1e}")
assert err < 2e-2

# %%
tc_file = measured.tensor_core_run()      # bench/kernels.py with the tensor-core kernel
if tc_file is None:
    print("no committed run of the tensor-core kernel yet (bench/kernels.py on an sm_80+ GPU)")
else:
    TC = measured.load(tc_file)
    print(f"measured on an {TC['gpu']} by bench/kernels.py (bench/results/{tc_file}):")
    for r in TC["prefill"]:
        what = "causal prompt" if r["tokens"] == r["context"] else f"chunk on {r['context'] - r['tokens']} cached"
        print(f"  {r['tokens']:>4}-token {what:<20} fp32 CUDA cores {r['fp32_tflops']:5.1f} | tensor cores "
              f"{r['tflops']:5.1f} ({r['speedup_over_fp32']:.0f}x) | SDPA {r['sdpa_tflops']:4.0f} TFLOP/s "
              f"(ours: {100 * r['ratio_to_sdpa']:.0f}% of SDPA)")

# %% [markdown]
# The jump from the fp32 kernel is the tensor cores alone: the same tiles, the same online softmax,
# the same paged loads, with each 16 x 8 x 16 product one instruction instead of 2048 fused
# multiply-adds. What still separates it from SDPA (FlashAttention on Hopper) is the Hopper-only machinery this
# kernel leaves for later:
#
# * **`wgmma`**: a *warpgroup* (4 warps) issues one asynchronous multiply of up to 64 x 256 x 16
#   that reads its B operand (and optionally A) straight from shared memory. `mma.sync` is the
#   Ampere instruction: small tiles, operands first moved into registers with `ldmatrix`, and the
#   warp waits for it. On an H100 it cannot reach the dense bf16 peak; FlashAttention-3 also keeps
#   the tensor cores busy with one warpgroup's products while another does its softmax.
# * **TMA**, the tensor memory accelerator: one thread hands the copy engine a descriptor and a
#   whole K or V tile lands in shared memory, where this kernel's threads compute addresses and
#   issue a `cp.async` per 16 bytes (registers and issue slots the arithmetic wanted).
#
# Both need more than an inline-PTX statement: `wgmma` wants shared-memory layout descriptors and
# `sm_90a`, TMA a tensor map made on the host through the driver.
#
# ## Key points
#
# * A paged cache costs the kernel one table lookup per token: `slot = table[p // bs] * bs + p % bs`.
# * The online softmax lets attention stream K/V once with O(1) state per query: `m`, `l`, `acc`,
#   rescaled by `exp(m_old - m_new)`.
# * Decode attention does ~`group` FLOPs per byte whatever the batch: it is memory-bound, and a
#   kernel is judged by its bytes per second (wide loads, enough loads in flight, GQA sharing,
#   splits to fill the GPU).
# * Prefill attention is compute-bound: on the fp32 CUDA cores it is ~20x slower than SDPA; on the
#   tensor cores (`mma.sync` through inline PTX, fragments in registers, P reused as the next A
#   operand) about ten times faster, and `wgmma` + TMA are what remain between it and SDPA.
# * At small batch the launch costs more than the kernel: capture the decode step in a CUDA graph.
#
# ## Going further
#
# 1. Our decode kernel reaches 82-92% of the copy bandwidth, SDPA 83-98%. Where might the rest
#    go? (Hint: each thread holds 234 registers, so only 8 warps share an SM: how many bytes are
#    in flight per SM with 4 ring slots of 8 KB ahead per block, and how many would Little's law
#    ask for? The results file has variants with other rings, unrolls and lane widths, and
#    `bench/KERNEL-NOTES.md` what was tried.)
# 2. With 8 KV heads and batch 1 there are only 8 blocks: why does the split count matter so much
#    there, and what does the merge cost (`splits_x2` in the results file)?
# 3. FP8 KV (1 byte per value) halves the bytes. What happens to the decode time, and to the
#    arithmetic intensity?
# 4. Why would a chunk of 512 tokens on a 4096-token context (`prefill` row 2) run at about the
#    same TFLOP/s as the whole prompt?
