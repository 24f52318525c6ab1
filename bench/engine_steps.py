"""The real engine's step times against the hardware's roofline and a plain-torch peer.

    python bench/engine_steps.py --out bench/results/engine-steps-h100-2026-12-07.json
    python bench/engine_steps.py --smoke --out /tmp/e.json      # CPU check of the script

Model: the Llama-3.2-1B shape (random bf16 weights, bf16 KV, page 16), numba backend.

- decode: one step of ``batch`` sequences at ``context`` tokens each (``ModelExecutor.run``,
  CUDA events around host input preparation + forward + sampling, median of repeats), with the
  decode step replayed from a CUDA graph (``graphs``: the default) and launched eagerly
  (``eager_ms``). ``roofline_ms`` = (weight bytes + K/V bytes read) / measured copy bandwidth.
  ``replay_ms``: the graph replay alone (no host work). ``peer_ms``: a plain-torch step written
  for this benchmark, gpt-fast style: the same model code (fused QKV and gate/up GEMMs, the
  same norms and rotation), a dense static KV cache per layer [B, Hkv, context, D], SDPA, the
  whole step captured in one CUDA graph. ``ratio_to_roofline`` = step_ms / roofline_ms,
  ``ratio_to_peer`` = step_ms / peer_ms (below 1: faster than the peer).
- prefill: one prompt of ``tokens`` (the engine's eager step: tensor-core prefill attention);
  ``peer_ms``: the same model code with SDPA (causal) on dense K/V; ``attention_share``: the
  attention kernel alone (one layer's call, timed, times the layers) over the step.
- breakdown: where a replayed decode step's GPU time goes (torch profiler, kernels grouped by
  kind) at a few points.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pdlab.engine import model as M  # noqa: E402
from pdlab.engine.executor import ModelExecutor  # noqa: E402
from pdlab.engine.grid import BatchFactory  # noqa: E402

import kernels  # noqa: E402  (bench/kernels.py: the timer and copy bandwidth every benchmark here uses)
from kernels import timed  # noqa: E402

BS = 16
BATCHES = (1, 8, 32, 64)
CONTEXTS = (512, 1024, 2048)
PREFILLS = (512, 2048, 8192)


def copy_tbps():
    """The measured copy bandwidth (``kernels.copy_tbps``); None without a GPU."""
    return kernels.copy_tbps() if torch.cuda.is_available() else None


def weight_bytes(model) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def step_ms(ex, batch, repeats):
    """Median measured seconds of ex.run(batch) (warm-up first: compiles, captures), in ms."""
    for _ in range(2):
        ex.run(batch)
    return 1e3 * statistics.median(ex.run(batch).seconds for _ in range(repeats))


# ---- the plain-torch peer -------------------------------------------------------------------
class TorchPeer:
    """gpt-fast style decode over dense static caches, the whole step in one CUDA graph (on a
    GPU; eager on the CPU). Every sequence sits at the same ``context`` (its newest token
    included), so attention reads exactly ``context`` keys, no mask."""

    def __init__(self, model, batch, context):
        cfg = model.cfg
        self.model, self.cfg = model, cfg
        dev, dt = model.device, cfg.torch_kv_dtype
        shape = (batch, cfg.num_kv_heads, context, cfg.head_dim)
        self.caches = [(torch.randn(shape, device=dev, dtype=dt), torch.randn(shape, device=dev, dtype=dt))
                       for _ in range(cfg.num_layers)]
        self.ids = torch.zeros(batch, dtype=torch.int64, device=dev)
        self.pos = torch.full((batch,), context - 1, dtype=torch.int64, device=dev)
        self.at = torch.tensor([context - 1], device=dev)
        self.graph = None
        if dev.type == "cuda":
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._step()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = self._step()

    @torch.inference_mode()
    def _step(self):
        m, cfg = self.model, self.cfg
        B = self.ids.shape[0]
        x = m.embed(self.ids)                                            # [B, C]
        cos_sin = M.rope_cos_sin(self.pos, cfg.head_dim, cfg.rope_theta)
        for layer, (kc, vc) in zip(m.layers, self.caches):
            a = layer.attn
            q, k, v = a.qkv(layer.input_norm(x), cos_sin)                # [B, H|Hkv, D]
            kc.index_copy_(2, self.at, k.unsqueeze(2).to(kc.dtype))      # [B, Hkv, 1, D] at context-1
            vc.index_copy_(2, self.at, v.unsqueeze(2).to(vc.dtype))
            o = F.scaled_dot_product_attention(q.to(kc.dtype)[:, :, None, :], kc, vc, scale=a.scale,
                                               enable_gqa=True)         # [B, H, 1, D]
            x = x + a.o_proj(o.reshape(B, -1).to(x.dtype))
            x = x + layer.mlp(layer.post_attn_norm(x))
        return m.lm_head(m.norm(x)).float().argmax(-1)

    def run(self):
        if self.graph is not None:
            self.graph.replay()
            return self.out
        return self._step()


@torch.inference_mode()
def peer_prefill_ms(model, tokens):
    """The same model code on one prompt, causal SDPA on dense K/V (eager, as the engine's
    prefill steps are)."""
    cfg = model.cfg
    ids = torch.randint(0, cfg.vocab_size, (tokens,), device=model.device)
    pos = torch.arange(tokens, device=model.device)

    def step():
        x = model.embed(ids)
        cos_sin = M.rope_cos_sin(pos, cfg.head_dim, cfg.rope_theta)
        for layer in model.layers:
            a = layer.attn
            q, k, v = a.qkv(layer.input_norm(x), cos_sin)
            dt = cfg.torch_kv_dtype
            o = F.scaled_dot_product_attention(q.to(dt).transpose(0, 1)[None], k.to(dt).transpose(0, 1)[None],
                                               v.to(dt).transpose(0, 1)[None], is_causal=True, scale=a.scale,
                                               enable_gqa=True)          # [1, H, T, D]
            x = x + a.o_proj(o[0].transpose(0, 1).reshape(tokens, -1).to(x.dtype))
            x = x + layer.mlp(layer.post_attn_norm(x))
        return model.lm_head(model.norm(x[-1:])).float().argmax(-1)

    return timed(step, iters=3, repeats=3)


@torch.inference_mode()
def attention_ms(ex, tokens):
    """One layer's prefill attention call for one prompt of ``tokens``, alone (the engine's
    backend and kernel), on the executor's layer-0 cache."""
    cfg = ex.cfg
    k_cache, v_cache = ex.kv_caches[0]
    q = torch.randn(tokens, cfg.num_heads, cfg.head_dim, device=ex.device, dtype=cfg.torch_dtype)
    blocks = -(-tokens // BS)
    bt = torch.arange(blocks, dtype=torch.int32, device=ex.device)[None]
    cu = torch.tensor([0, tokens], dtype=torch.int32, device=ex.device)
    sl = torch.tensor([tokens], dtype=torch.int32, device=ex.device)
    be = ex.backend
    return timed(lambda: be.prefill_attention(q, k_cache, v_cache, bt, cu, sl, cfg.head_dim ** -0.5,
                                                max_q_len=tokens, check=False), iters=5, repeats=3)


# ---- where a replayed step's time goes ---------------------------------------------------------
KINDS = (("attention (numba decode)", ("decode_kernel",)), ("kv write (numba)", ("write_kv",)),
         ("gemm", ("gemm", "gemv", "cutlass", "sm90", "xmma", "splitk", "cublas")),
         ("rms_norm", ("rms_norm", "RMSNorm", "rmsnorm")), ("argmax / reduce", ("reduce", "argmax")))


def breakdown(fn, steps=5):
    """GPU time per step by kernel kind, from the torch profiler over ``steps`` calls of fn()."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    by_kind, count, names = {}, {}, {}
    for e in prof.events():
        if e.device_type.name != "CUDA" or "memcpy" in e.name.lower() or "memset" in e.name.lower():
            continue
        kind = next((k for k, keys in KINDS if any(s.lower() in e.name.lower() for s in keys)), "other elementwise")
        by_kind[kind] = by_kind.get(kind, 0.0) + e.device_time / steps
        count[kind] = count.get(kind, 0) + 1 / steps
        names[e.name[:80]] = names.get(e.name[:80], 0.0) + e.device_time / steps
    top = sorted(names.items(), key=lambda kv: -kv[1])[:12]
    return {"us_per_step": {k: round(v, 1) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
            "kernels_per_step": {k: round(v) for k, v in count.items()},
            "total_us": round(sum(by_kind.values()), 1), "top_kernels_us": [[n, round(t, 1)] for n, t in top]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny model, two points: a CPU check of the script")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-eager", action="store_true", help="skip the eager (graphs off) decode timings")
    ap.add_argument("--no-breakdown", action="store_true")
    args = ap.parse_args(argv)
    gpu = torch.cuda.is_available()
    dev = "cuda" if gpu else "cpu"
    batches, contexts, prefills = (BATCHES, CONTEXTS, PREFILLS) if not args.smoke else ((1, 3), (40,), (30,))
    if args.smoke:
        model = M.build(M.ModelConfig(name="smoke", vocab_size=258, hidden_size=256, num_layers=2, num_heads=4,
                                      num_kv_heads=1, head_dim=64, ffn_size=256), device=dev)
    else:
        model = M.build("llama-3.2-1b", device=dev)
    cfg = model.cfg
    bw = copy_tbps()
    wbytes = weight_bytes(model)
    out = {"gpu": torch.cuda.get_device_name(0) if gpu else "cpu", "copy_tbps": bw,
           "model": f"{cfg.name} shape, random {cfg.dtype} weights, {cfg.kv_dtype} KV, page {BS}",
           "backend": "numba" if gpu else "torch", "weight_bytes": wbytes,
           "kv_bytes_per_token": cfg.kv_bytes_per_token(),
           "torch": torch.__version__, "python": platform.python_version(),
           "command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"),
           "units": "ms; roofline_ms = (weight_bytes + batch * context * kv_bytes_per_token) / copy bandwidth",
           "decode": [], "prefill": []}

    def save():
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")

    backend = "numba" if gpu else "torch"
    num_blocks = max(max(batches) * (max(contexts) // BS + 1), max(prefills) // BS + 1) + 16
    ex = ModelExecutor(model, num_blocks, BS, backend=backend, device=dev, graphs="auto" if gpu else "eager")
    ex_eager = ModelExecutor(model, num_blocks, BS, backend=backend, device=dev, graphs=False)
    ex_eager.kv_caches = ex.kv_caches                      # one cache: the eager steps read the same
    fac = BatchFactory(num_blocks, BS, cfg.vocab_size)
    for context in contexts:
        for b in batches:
            batch = fac.decode(b, context)
            ms = step_ms(ex, batch, args.repeats)
            kv = b * context * cfg.kv_bytes_per_token()
            row = {"batch": b, "context": context, "step_ms": ms}
            if bw:
                row["roofline_ms"] = (wbytes + kv) / (bw * 1e12) * 1e3
                row["ratio_to_roofline"] = ms / row["roofline_ms"]
            entry = ex.graphs._entry(ex.graphs.bucket_of(batch.decodes)) if gpu else None
            if entry is not None:
                row["replay_ms"] = timed(entry[1].replay, iters=20)
            peer = TorchPeer(model, b, context)
            row["peer_ms"] = timed(peer.run, iters=20)
            row["ratio_to_peer"] = ms / row["peer_ms"]
            del peer
            if not args.no_eager:
                row["eager_ms"] = step_ms(ex_eager, batch, 3)
            out["decode"].append(row)
            print(json.dumps(row), flush=True)
            save()
    if gpu and not args.no_breakdown:
        out["breakdown"] = {}
        for b, context in ((1, 512), (64, 2048)):
            batch = fac.decode(b, context)
            ex.run(batch)
            st, graph, _ = ex.graphs._entry(ex.graphs.bucket_of(batch.decodes))
            peer = TorchPeer(model, b, context)
            for name, fn in ((f"{b}x{context}", graph.replay), (f"peer {b}x{context}", peer.run)):
                try:
                    out["breakdown"][name] = breakdown(fn)
                except Exception as e:  # the profiler is a diagnosis: keep the timings without it
                    out["breakdown"][name] = {"error": f"{type(e).__name__}: {e}"[:300]}
            del peer
            save()
    for tokens in prefills:
        batch = fac.prefill(tokens)
        ms = step_ms(ex, batch, 3)
        attn = attention_ms(ex, tokens) * cfg.num_layers
        row = {"tokens": tokens, "step_ms": ms, "peer_ms": peer_prefill_ms(model, tokens),
               "attention_ms": attn, "attention_share": attn / ms}
        row["ratio_to_peer"] = ms / row["peer_ms"]
        out["prefill"].append(row)
        print(json.dumps(row), flush=True)
        save()
    out["graphs"] = {"captured": ex.graphs.captures if ex.graphs else 0,
                     "buckets": sorted(map(list, ex.graphs.graphs)) if ex.graphs else []}
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
