"""``pdlab calibrate``: measure real steps on this machine and fit the cost model to them.

    pdlab calibrate                                  # GPU: llama-3.2-1b shape; CPU: the tiny model
    pdlab calibrate --model llama-3.2-1b --gpu h200 --out data/profiles/h200-llama-3.2-1b.json

1. Build the model (trained ``tiny``, or a shape preset with seeded random weights) and a
   ``ModelExecutor`` with a paged KV cache.
2. Time a grid of batch shapes: prefill-only (prompt length, with and without cached context),
   decode-only (batch size x context length), mixed (a prefill chunk plus decodes) and
   serving-like steps (several prefill chunks, some after cached context, beside a decode
   batch: what the chunked and aggregated schedulers really issue). Each point is the median of
   a few runs after a warm-up; the runs go round-robin over the grid, so a step follows a step
   of another shape, as in serving, rather than a copy of itself.
3. Fit the cost model's efficiency factors and overheads (``costmodel.Efficiency``: mfu,
   attn_eff, mbu, step_overhead_s, seq_overhead_s, prefill_overhead_s) by least squares on
   log(predicted/measured), so short and long steps weigh the same. The profile reports the
   fit's median and max relative error over every point.
4. Write a profile JSON (``efficiency`` + every point, measured and predicted) that the
   simulator loads with ``ServingConfig(profile=...)`` / ``pdlab simulate --profile``.

The predictions come from ``CostModel.step_time`` itself: this module measures and fits, the
cost model stays the only place that turns a batch into seconds.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from .request import Batch, Request, Sequence

PROFILES_DIR = Path(__file__).resolve().parent.parent / "data" / "profiles"
FIT_PARAMS = ("mfu", "attn_eff", "mbu", "step_overhead_s", "seq_overhead_s", "prefill_overhead_s")
_BOUNDS = {"mfu": (1e-4, 1.0), "attn_eff": (1e-5, 1.0), "mbu": (1e-3, 1.0),
           "step_overhead_s": (0.0, 1.0), "seq_overhead_s": (0.0, 0.1), "prefill_overhead_s": (0.0, 0.1)}


# ---- synthetic batches ------------------------------------------------------------------------
class BatchFactory:
    """Builds batches of synthetic sequences with fresh block tables over an executor's cache
    (ids wrap around when the cache is exhausted: the timing does not depend on the contents)."""

    def __init__(self, num_blocks: int, block_size: int, vocab: int, seed: int = 0):
        self.num_blocks, self.block_size, self.vocab = num_blocks, block_size, vocab
        self.rng = np.random.default_rng(seed)
        self._next_block = 0
        self._next_id = 0

    def _seq(self, total_tokens: int, computed: int) -> Sequence:
        ids = tuple(int(t) for t in self.rng.integers(0, self.vocab, total_tokens))
        seq = Sequence(Request(self._next_id, 0.0, total_tokens, 1, ids))
        self._next_id += 1
        n = -(-total_tokens // self.block_size)
        if n > self.num_blocks:
            raise ValueError(f"a sequence of {total_tokens} tokens needs {n} blocks; the cache has {self.num_blocks}")
        if self._next_block + n > self.num_blocks:
            self._next_block = 0
        seq.block_table = list(range(self._next_block, self._next_block + n))
        self._next_block += n
        seq.num_computed = computed
        return seq

    def prefill(self, tokens: int, context: int = 0, batch: Batch | None = None, seqs: int = 1) -> Batch:
        """``seqs`` prompt chunks of ``tokens`` each, after ``context`` cached tokens."""
        b = batch if batch is not None else Batch()
        for _ in range(seqs):
            b.add_prefill(self._seq(context + tokens, context), tokens)
        return b

    def decode(self, num_seqs: int, context: int, batch: Batch | None = None) -> Batch:
        """``num_seqs`` decodes, each attending to ``context`` tokens (its newest included)."""
        b = batch if batch is not None else Batch()
        for _ in range(num_seqs):
            b.add_decode(self._seq(context, context - 1))
        return b

    def mixed(self, chunk: int, num_decodes: int, context: int) -> Batch:
        return self.decode(num_decodes, context, self.prefill(chunk))

    def serving(self, chunks, num_decodes: int, context: int) -> Batch:
        """A step as a scheduler issues it: prefill chunks ``[(tokens, cached context), ...]``
        (whole short prompts, or a slice of a long one) beside ``num_decodes`` decodes."""
        b = Batch()
        for tokens, ctx in chunks:
            self.prefill(tokens, ctx, b)
        return self.decode(num_decodes, context, b) if num_decodes else b


def time_batch(executor, batch: Batch, repeats: int = 5, warmup: int = 1) -> float:
    """Median measured seconds of ``executor.run(batch)`` (run never changes the sequences)."""
    for _ in range(warmup):
        executor.run(batch)
    return statistics.median(executor.run(batch).seconds for _ in range(repeats))


def time_batches(executor, batches: list[Batch], repeats: int = 5, warmup: int = 1) -> list[float]:
    """Median measured seconds of each batch, timed round-robin: every run follows a step of a
    different shape (as in serving), not a repeat of itself."""
    for _ in range(warmup):
        for b in batches:
            executor.run(b)
    times = [[] for _ in batches]
    for _ in range(repeats):
        for i, b in enumerate(batches):
            times[i].append(executor.run(b).seconds)
    return [statistics.median(t) for t in times]


def measure_prefill(executor, factory: BatchFactory, lengths, repeats: int = 3) -> list[float]:
    """Step seconds of a single prompt of each length (a whole prefill, no context)."""
    return [time_batch(executor, factory.prefill(n), repeats) for n in lengths]


def measure_decode(executor, factory: BatchFactory, batch_sizes, context: int, repeats: int = 3) -> list[float]:
    """Step seconds of one decode step for each batch size, every sequence at ``context`` tokens."""
    return [time_batch(executor, factory.decode(b, context), repeats) for b in batch_sizes]


# ---- the grid ---------------------------------------------------------------------------------
def grid(fast: bool, max_tokens: int) -> list[dict]:
    """Batch shapes to time. ``max_tokens`` caps the KV a single point holds."""
    if fast:
        prefill = [16, 64, 256]
        decode_b, decode_c = [1, 8, 32], [64, 256]
        mixed = [(64, 8, 128)]
        ctx_prefill = [(64, 256)]
        multi = [(4, 32)]
        serving = [([(48, 0), (32, 16)], 6, 96), ([(64, 128)], 4, 64)]
    else:
        prefill = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
        decode_b, decode_c = [1, 2, 4, 8, 16, 32, 64, 128, 256], [128, 512, 2048]
        mixed = [(128, 16, 512), (256, 32, 512), (512, 16, 1024), (512, 64, 512), (1024, 32, 1024),
                 (2048, 16, 512)]
        prefill.append(8192)
        ctx_prefill = [(512, 1024), (512, 3584), (256, 2048), (1024, 2048), (512, 7680)]
        multi = [(2, 256), (4, 128), (4, 256), (8, 64), (8, 256), (16, 128)]     # (prompts, tokens each)
        # (prefill chunks [(tokens, cached context)], decodes, decode context): steps as the
        # schedulers issue them for chat traffic (prompts 64-512, 64-160 output tokens) with a
        # few long prompts: a 512-token chunked budget filled after the decodes, whole prompts
        # batched together (aggregated), slices of a long prompt beside the running streams
        serving = [([(200, 0), (150, 0)], 24, 320), ([(256, 0), (128, 64)], 32, 400),
                   ([(480, 0)], 32, 256), ([(300, 0), (100, 200)], 8, 500),
                   ([(128, 0), (128, 0), (128, 0)], 64, 300), ([(64, 0), (96, 0), (200, 0), (100, 0)], 48, 256),
                   ([(448, 3584)], 64, 400), ([(496, 7680)], 16, 600), ([(512, 1024)], 40, 350),
                   ([(300, 0), (200, 0), (450, 0)], 0, 0), ([(120, 0), (380, 0), (250, 0), (90, 0)], 0, 0),
                   ([(8192, 0)], 0, 0), ([(2048, 0)], 48, 400), ([(24, 0), (40, 0)], 96, 350)]
    pts = [{"kind": "prefill", "tokens": n, "context": 0, "decodes": 0} for n in prefill if n <= max_tokens]
    pts += [{"kind": "prefill", "tokens": n, "context": 0, "decodes": 0, "seqs": k} for k, n in multi
            if k * n <= max_tokens]
    pts += [{"kind": "prefill", "tokens": n, "context": c, "decodes": 0} for n, c in ctx_prefill if n + c <= max_tokens]
    pts += [{"kind": "decode", "tokens": 0, "context": c, "decodes": b}
            for c in decode_c for b in decode_b if b * c <= max_tokens]
    pts += [{"kind": "mixed", "tokens": n, "context": c, "decodes": b} for n, b, c in mixed
            if n + b * c <= max_tokens]
    pts += [{"kind": "serving", "tokens": sum(n for n, _ in ch), "context": c, "decodes": b,
             "chunks": [list(x) for x in ch]} for ch, b, c in serving
            if sum(n + k for n, k in ch) + b * c <= max_tokens]
    return pts


def build_batch(f: BatchFactory, p: dict) -> Batch:
    if p["kind"] == "prefill":
        return f.prefill(p["tokens"], p["context"], seqs=p.get("seqs", 1))
    if p["kind"] == "decode":
        return f.decode(p["decodes"], p["context"])
    if p["kind"] == "serving":
        return f.serving(p["chunks"], p["decodes"], p["context"])
    return f.mixed(p["tokens"], p["decodes"], p["context"])


def measure_grid(executor, points: list[dict], repeats: int = 5, progress=None) -> list[dict]:
    """Time every point (round-robin, see ``time_batches``). Batches hold disjoint blocks of the
    cache as long as it has room, so round-robin runs do not overwrite each other's context."""
    f = BatchFactory(executor.num_blocks, executor.block_size, executor.cfg.vocab_size)
    batches = [build_batch(f, p) for p in points]
    secs = time_batches(executor, batches, repeats)
    out = []
    for p, b, s in zip(points, batches, secs):
        out.append({**p, "measured_s": s, "_batch": b})
        if progress:
            progress(out[-1])
    return out


# ---- the fit ----------------------------------------------------------------------------------
def model_spec_for(cfg):
    """The cost model's ModelSpec for a ModelConfig: the preset of the same name when its shape
    agrees, else one built from the config (so the fit describes what actually ran)."""
    from .costmodel import MODELS, ModelSpec
    import torch
    spec = ModelSpec(cfg.name, cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads,
                     cfg.ffn_size, cfg.vocab_size, dtype_bytes=getattr(torch, cfg.dtype).itemsize,
                     tied_embeddings=cfg.tie_embeddings)
    known = MODELS.get(cfg.name)
    if known is not None and all(getattr(known, k) == getattr(spec, k) for k in
                                 ("layers", "hidden", "heads", "kv_heads", "ffn", "vocab", "dtype_bytes")):
        return known
    return spec


def fit(cost_model, points: list[dict]):
    """Least-squares fit of the efficiency factors to measured points (log-ratio residuals).
    Returns (fitted CostModel, predicted seconds per point)."""
    from scipy.optimize import least_squares

    batches = [p["_batch"] for p in points]
    meas = np.array([p["measured_s"] for p in points])
    lo = np.array([_BOUNDS[k][0] for k in FIT_PARAMS])
    hi = np.array([_BOUNDS[k][1] for k in FIT_PARAMS])
    # fit in log space for the efficiencies, linear (scaled to ms) for the overheads
    def unpack(x):
        return dict(mfu=float(np.exp(x[0])), attn_eff=float(np.exp(x[1])), mbu=float(np.exp(x[2])),
                    step_overhead_s=float(x[3]) * 1e-3, seq_overhead_s=float(x[4]) * 1e-3,
                    prefill_overhead_s=float(x[5]) * 1e-3)

    def predict(x):
        cm = cost_model.with_efficiency(**unpack(x))
        return np.array([cm.step_time(b) for b in batches])

    def resid(x):
        return np.log(predict(x) / meas)

    x_lo = np.array([np.log(lo[0]), np.log(lo[1]), np.log(lo[2]), lo[3] * 1e3, lo[4] * 1e3, lo[5] * 1e3])
    x_hi = np.array([np.log(hi[0]), np.log(hi[1]), np.log(hi[2]), hi[3] * 1e3, hi[4] * 1e3, hi[5] * 1e3])
    best = None
    # a few starts: the max() in the roofline makes the surface piecewise, with flat parts
    for mfu0, eff0, mbu0 in [(0.5, 0.3, 0.7), (0.1, 0.05, 0.3), (0.02, 0.01, 0.1)]:
        x0 = np.array([np.log(mfu0), np.log(eff0), np.log(mbu0), float(np.min(meas)) * 1e3 * 0.5, 0.01, 0.1])
        x0 = np.clip(x0, x_lo + 1e-9, x_hi - 1e-9)
        r = least_squares(resid, x0, bounds=(x_lo, x_hi), loss="soft_l1", f_scale=0.1)
        if best is None or r.cost < best.cost:
            best = r
    params = unpack(best.x)
    return cost_model.with_efficiency(**params), predict(best.x)


def gpu_preset_for(device_name: str) -> str | None:
    name = device_name.lower()
    for key, preset in (("h200", "h200"), ("h100", "h100"), ("a100", "a100-80gb"), ("l4", "l4"), ("t4", "t4")):
        if key in name:
            return preset
    return None


def calibrate(model_name: str, gpu: str | None = None, backend: str = "torch", device=None,
              fast: bool = False, repeats: int = 5, num_layers: int | None = None,
              max_tokens: int | None = None, progress=None, model=None) -> dict:
    """Measure the grid and fit; returns the profile dict (see ``write_profile``)."""
    import torch

    from . import model as M
    from .costmodel import CostModel, GPUS, lookup
    from .model_executor import ModelExecutor, default_device

    dev = torch.device(device) if device else default_device()
    if dev.type == "cuda":
        dev_name = torch.cuda.get_device_name(dev)
        gpu = gpu or gpu_preset_for(dev_name)
        if gpu is None:
            raise M._error(f"no GPU preset for '{dev_name}': pass --gpu (one of {', '.join(GPUS)})")
    else:
        dev_name = "cpu"
        gpu = gpu or "cpu"
    if model is not None:
        model = model.to(dev)
    elif model_name == "tiny":
        model = M.load_tiny(device=dev)
    else:
        cfg = M.preset(model_name)
        if num_layers:
            cfg = replace(cfg, num_layers=num_layers)
        if dev.type == "cpu":
            cfg = replace(cfg, dtype="float32")     # CPU matmuls in bf16 are slow and unrepresentative
        model = M.build(cfg, device=dev)
    cfg = model.cfg
    if max_tokens is None:
        max_tokens = 4096 if fast else 1 << 17
    block_size = 16
    num_blocks = max_tokens // block_size + 16
    ex = ModelExecutor(model, num_blocks, block_size, backend=backend, device=dev)
    points = measure_grid(ex, grid(fast, max_tokens), repeats, progress)
    cm0 = CostModel(lookup(GPUS, gpu, "GPU"), model_spec_for(cfg))
    cm, pred = fit(cm0, points)
    meas = np.array([p["measured_s"] for p in points])
    rel = pred / meas - 1
    eff = {k: getattr(cm.eff, k) for k in FIT_PARAMS}
    return {
        "gpu": gpu, "device": dev_name, "model": cfg.name, "backend": backend,
        "model_shape": {"layers": cfg.num_layers, "hidden": cfg.hidden_size, "heads": cfg.num_heads,
                        "kv_heads": cfg.num_kv_heads, "ffn": cfg.ffn_size, "vocab": cfg.vocab_size,
                        "dtype": cfg.dtype, "kv_dtype": cfg.kv_dtype},
        "efficiency": eff,
        "fit": {"points": len(points), "median_abs_rel_error": float(np.median(np.abs(rel))),
                "max_abs_rel_error": float(np.max(np.abs(rel))),
                "by_kind": {k: {"points": int(sum(m)), "median_abs_rel_error": float(np.median(np.abs(rel[m]))),
                                "max_abs_rel_error": float(np.max(np.abs(rel[m])))}
                            for k in dict.fromkeys(p["kind"] for p in points)
                            for m in [np.array([p["kind"] == k for p in points])]},
                "residuals": "log(predicted / measured), soft-L1 least squares; errors are "
                             "|predicted / measured - 1| over every point"},
        "points": [{k: v for k, v in p.items() if not k.startswith("_")} | {"predicted_s": float(q)}
                   for p, q in zip(points, pred)],
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
        "note": "measured with pdlab.model_executor.ModelExecutor (CUDA events on a GPU, perf_counter on a CPU); "
                "load with costmodel.Efficiency.load(path) or ServingConfig(profile=path)",
    }


def default_out(profile: dict) -> Path:
    return PROFILES_DIR / f"{profile['gpu']}-{profile['model']}-{profile['backend']}.json"


def write_profile(profile: dict, out: str | Path | None = None) -> Path:
    path = Path(out) if out else default_out(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profile, indent=1) + "\n")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="model preset: tiny (trained) or a shape preset such as llama-3.2-1b "
                             "(default: llama-3.2-1b on a GPU, tiny on a CPU)")
    parser.add_argument("--gpu", default=None, help="cost-model GPU preset the profile is for "
                        "(default: detected from the device name; 'cpu' on a CPU)")
    parser.add_argument("--backend", choices=("torch", "numba"), default="torch", help="attention backend")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--num-layers", type=int, default=None, help="run fewer layers of a shape preset")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per point (median)")
    parser.add_argument("--fast", action="store_true", help="a small grid (seconds, for a CPU)")
    parser.add_argument("--out", default=None, help="profile JSON (default: data/profiles/GPU-MODEL-BACKEND.json)")


def run(args) -> int:
    import torch

    model = args.model or ("llama-3.2-1b" if torch.cuda.is_available() and args.device != "cpu" else "tiny")
    if model == "tiny" and not torch.cuda.is_available():
        torch.set_num_threads(1)   # a 6M-parameter model gains nothing from threads; they add noise
    t0 = time.perf_counter()

    def show(p):
        print(f"  {p['kind']:8s} x{p.get('seqs', len(p.get('chunks', [])) or 1):<3d} tokens={p['tokens']:5d} decodes={p['decodes']:4d} context={p['context']:5d}"
              f"  {1e3 * p['measured_s']:9.3f} ms", flush=True)

    prof = calibrate(model, args.gpu, args.backend, args.device, args.fast, args.repeats,
                     args.num_layers, progress=show)
    path = write_profile(prof, args.out)
    e, f = prof["efficiency"], prof["fit"]
    print(f"fitted on {prof['device']} ({prof['gpu']} preset), model {prof['model']}, {f['points']} points "
          f"in {time.perf_counter() - t0:.0f} s:")
    print("  " + ", ".join(f"{k}={v:.4g}" for k, v in e.items()))
    print(f"  |predicted/measured - 1|: median {100 * f['median_abs_rel_error']:.1f}%, "
          f"max {100 * f['max_abs_rel_error']:.1f}%")
    print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="pdlab calibrate", description=__doc__.splitlines()[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    try:
        return run(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
