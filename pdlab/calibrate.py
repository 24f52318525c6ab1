"""``pdlab calibrate``: measure real steps on this machine and fit the cost model to them.

    pdlab calibrate                                  # GPU: llama-3.2-1b shape; CPU: the tiny model
    pdlab calibrate --model llama-3.2-1b --gpu h200 --out data/profiles/h200-llama-3.2-1b.json
    pdlab calibrate --serve-workload sharegpt         # fit to served steps + the grid

1. Build the model (trained ``tiny``, or a shape preset with seeded random weights) and a
   ``ModelExecutor`` with a paged KV cache.
2. Time a grid of batch shapes: prefill-only (prompt length, with and without cached context),
   decode-only (batch size x context length), mixed (a prefill chunk plus decodes) and
   serving-like steps (several prefill chunks, some after cached context, beside a decode
   batch: what the chunked and aggregated schedulers really issue). Each point is the median of
   a few runs after a warm-up; the runs go round-robin over the grid, so a step follows a step
   of another shape, as in serving, rather than a copy of itself.
3. Fit the cost model's efficiency factors and overheads (``costmodel.Efficiency``: mfu,
   attn_eff, mbu, step_overhead_s, seq_overhead_s, prefill_overhead_s, mixed_overhead_s) by least squares on
   log(predicted/measured), so short and long steps weigh the same. The profile reports the
   fit's median and max relative error over every point.
4. Write a profile JSON (``efficiency`` + every point, measured and predicted) that the
   simulator loads with ``ServingConfig(profile=...)`` / ``pdlab simulate --profile``.

Grid steps can run faster than the same shapes do while serving. ``--serve-workload`` (or
``calibrate(serve_requests=...)``) also serves a workload with the real engine through
``run_serving`` in the three modes, logging every step's batch shape (``batch_shape``: the
arguments ``step_time`` gives ``time_for``) and measured seconds (``serve_and_log``), and fits the
factors, ``mixed_overhead_s`` included, to those served steps plus the grid
(``calibrate_from_serving``: a fit to mean step times, since served latencies are sums of steps).

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

SERVE_MODES = (("aggregated", None), ("chunked", 512), ("disaggregated", None))
PROFILES_DIR = Path(__file__).resolve().parent.parent / "data" / "profiles"
FIT_PARAMS = ("mfu", "attn_eff", "mbu", "step_overhead_s", "seq_overhead_s", "prefill_overhead_s",
              "mixed_overhead_s")
_BOUNDS = {"mfu": (1e-4, 1.0), "attn_eff": (1e-5, 1.0), "mbu": (1e-3, 1.0),
           "step_overhead_s": (0.0, 1.0), "seq_overhead_s": (0.0, 0.1), "prefill_overhead_s": (0.0, 0.1),
           "mixed_overhead_s": (0.0, 0.1)}
_LOG_PARAMS = ("mfu", "attn_eff", "mbu")         # fitted as log(x); the overheads in ms


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


# A batch's shape, as the cost model sees it: the arguments ``CostModel.step_time`` passes to
# ``CostModel.time_for`` (token, sequence and attention-pair totals, chunk count, mixed or not).
SHAPE_KEYS = ("tokens", "sampled", "seqs", "prefill_pairs", "prefill_ctx", "prefill_tokens",
              "decode_ctx", "prefill_chunks", "mixed")


def batch_shape(cost_model, batch: Batch) -> dict | None:
    """``time_for``'s arguments for ``batch``, taken from ``cost_model.step_time`` itself (so a
    shape logged now is timed later exactly as ``step_time`` would time the batch). None for an
    empty batch."""
    import inspect

    from .costmodel import CostModel

    sig = inspect.signature(CostModel.time_for)
    got: dict = {}

    class _Recorder(CostModel):
        def time_for(self, *a, **kw):
            got.update(sig.bind(self, *a, **kw).arguments)
            return 0.0

    rec = _Recorder(cost_model.gpu, cost_model.model, cost_model.tp, cost_model.eff)
    rec.step_time(batch)
    if not got:
        return None
    out = {k: got.get(k, sig.parameters[k].default) for k in SHAPE_KEYS}
    out["mixed"] = bool(out["mixed"])
    return out


def shape_kind(shape: dict) -> str:
    if shape["prefill_chunks"] and shape["mixed"]:
        return "mixed"
    return "prefill" if shape["prefill_chunks"] else "decode"


def predict_shapes(cost_model, shapes: list[dict]) -> np.ndarray:
    """Seconds ``cost_model`` gives each shape (``CostModel.time_for``)."""
    return np.array([cost_model.time_for(**{k: s[k] for k in SHAPE_KEYS}) for s in shapes])


def _unpack(x, params) -> dict:
    return {k: float(np.exp(v)) if k in _LOG_PARAMS else float(v) * 1e-3 for k, v in zip(params, x)}


def _pack(values: dict, params) -> np.ndarray:
    return np.array([np.log(values[k]) if k in _LOG_PARAMS else values[k] * 1e3 for k in params])


def fit_shapes(cost_model, shapes: list[dict], measured, weights=None, params=FIT_PARAMS,
               robust: bool = True, mean: bool = False):
    """Least-squares fit of the efficiency factors ``params`` to (shape, measured seconds)
    records; every prediction goes through ``CostModel.time_for``. Residuals are
    log(predicted / measured) (soft-L1: a few outlier steps do not steer the fit), each scaled by
    sqrt(weight). With ``mean``, a second pass fits the mean instead of the typical step: residuals
    (predicted - measured) / reference, with the first pass's prediction as the reference and a
    Huber loss (a served request's TPOT is the mean of its steps, so a fit to the median of skewed
    step times would come out fast). Returns (fitted CostModel, predicted seconds per record)."""
    from scipy.optimize import least_squares

    meas = np.asarray(measured, dtype=float)
    w = np.sqrt(np.ones_like(meas) if weights is None else np.asarray(weights, dtype=float))
    x_lo = _pack({k: _BOUNDS[k][0] for k in params}, params)
    x_hi = _pack({k: _BOUNDS[k][1] for k in params}, params)

    def predict(x):
        return predict_shapes(cost_model.with_efficiency(**_unpack(x, params)), shapes)

    def resid(x):
        return w * np.log(predict(x) / meas)

    best = None
    # a few starts: the max() in the roofline makes the surface piecewise, with flat parts
    for mfu0, eff0, mbu0 in [(0.5, 0.3, 0.7), (0.1, 0.05, 0.3), (0.02, 0.01, 0.1)]:
        start = {"mfu": mfu0, "attn_eff": eff0, "mbu": mbu0, "step_overhead_s": float(np.min(meas)) * 0.5,
                 "seq_overhead_s": 1e-5, "prefill_overhead_s": 1e-4, "mixed_overhead_s": 1e-4}
        x0 = np.clip(_pack({k: start[k] for k in params}, params), x_lo + 1e-9, x_hi - 1e-9)
        r = least_squares(resid, x0, bounds=(x_lo, x_hi), loss="soft_l1" if robust else "linear", f_scale=0.1)
        if best is None or r.cost < best.cost:
            best = r
    x = best.x
    if mean:
        ref = predict(x)

        def resid_mean(x):
            return w * (predict(x) - meas) / ref

        x = least_squares(resid_mean, np.clip(x, x_lo + 1e-9, x_hi - 1e-9), bounds=(x_lo, x_hi),
                          loss="huber", f_scale=0.5).x
    return cost_model.with_efficiency(**_unpack(x, params)), predict(x)


def fit(cost_model, points: list[dict]):
    """Least-squares fit of the efficiency factors to measured grid points (log-ratio residuals,
    soft-L1). Returns (fitted CostModel, predicted seconds per point)."""
    shapes = [batch_shape(cost_model, p["_batch"]) for p in points]
    return fit_shapes(cost_model, shapes, [p["measured_s"] for p in points])


# ---- calibration from served steps ---------------------------------------------------------
def logging_factory(executor_factory, cost_model, log: list, **tags):
    """Wrap an ``executor_factory`` (``run_serving``'s argument) so every step the executors run
    appends a record to ``log``: the batch's shape (``batch_shape``), its kind, the measured
    seconds, the worker and its role, plus ``tags`` (say, the mode). The executors are the same
    objects; only their ``run`` is wrapped."""

    def make(name, role, num_blocks, block_size):
        ex = executor_factory(name, role, num_blocks, block_size)
        run = ex.run

        def logged(batch):
            shape = batch_shape(cost_model, batch) if batch else None   # before: run() changes no sequence
            res = run(batch)
            if shape is not None:
                log.append({**shape, "kind": shape_kind(shape), "measured_s": float(res.seconds),
                            "worker": name, "role": role, **tags})
            return res

        ex.run = logged
        return ex

    return make


def serve_and_log(requests, config, executor_factory, log: list | None = None, **tags):
    """``run_serving(requests, config)`` on the real engine, logging every step (see
    ``logging_factory``). Returns (RunResult, records)."""
    from .cluster import run_serving

    log = [] if log is None else log
    res = run_serving(requests, config, executor_factory=logging_factory(
        executor_factory, config.cost_model(), log, mode=config.mode, **tags))
    return res, log


def error_summary(records: list[dict], predicted, by=("kind",)) -> dict:
    """|predicted / measured - 1| over records, overall and per value of each key in ``by``."""
    meas = np.array([r["measured_s"] for r in records], dtype=float)
    pred = np.asarray(predicted, dtype=float)
    if not len(meas):
        return {"steps": 0}
    rel = pred / meas - 1

    def one(m):
        return {"steps": int(m.sum()), "median_rel_error": float(np.median(rel[m])),
                "median_abs_rel_error": float(np.median(np.abs(rel[m]))),
                "p90_abs_rel_error": float(np.percentile(np.abs(rel[m]), 90)),
                "mean_rel_error": float(pred[m].sum() / meas[m].sum() - 1),
                "measured_p50_ms": 1e3 * float(np.median(meas[m])), "predicted_p50_ms": 1e3 * float(np.median(pred[m])),
                "measured_mean_ms": 1e3 * float(np.mean(meas[m])), "predicted_mean_ms": 1e3 * float(np.mean(pred[m]))}

    out = one(np.ones(len(meas), dtype=bool))
    for key in by:
        vals = np.array([str(r.get(key)) for r in records])
        out["by_" + key] = {v: one(vals == v) for v in dict.fromkeys(vals)}
    return out


def calibrate_from_serving(cost_model, records: list[dict], grid_points: list[dict] | None = None,
                           grid_weight: float = 1.0, params=FIT_PARAMS) -> dict:
    """Fit the efficiency factors to steps logged while the real engine served a workload
    (``serve_and_log`` records: shape + measured seconds), plus grid points (dicts with a
    ``shape`` or a ``_batch``, and ``measured_s``) each weighted ``grid_weight`` against one
    served step. The fit targets the mean step time (``fit_shapes(mean=True)``): served latencies
    are sums of steps. Returns {"efficiency", "fit"} for a profile (``write_profile``)."""
    grid_points = grid_points or []
    g_shapes = [p.get("shape") or batch_shape(cost_model, p["_batch"]) for p in grid_points]
    shapes = [{k: r[k] for k in SHAPE_KEYS} for r in records] + g_shapes
    meas = [r["measured_s"] for r in records] + [p["measured_s"] for p in grid_points]
    weights = [1.0] * len(records) + [grid_weight] * len(grid_points)
    if not shapes:
        raise ValueError("calibrate_from_serving: no records to fit")
    cm, pred = fit_shapes(cost_model, shapes, meas, weights, params, mean=True)
    n = len(records)
    tagged = [{**r, "source": r.get("mode", "served")} for r in records]
    fit_info = {"served_steps": n, "grid_points": len(grid_points), "grid_weight": grid_weight,
                "served": error_summary(tagged, pred[:n], by=("kind", "source", "role")) if n else {"steps": 0},
                "residuals": "pass 1: log(predicted / measured), soft-L1; pass 2 (the result): "
                             "(predicted - measured) / pass-1 prediction, Huber (f_scale 0.5), so the "
                             "fit matches mean step times; grid points weighted grid_weight each"}
    if grid_points:
        g = [{"kind": p.get("kind", "grid"), "measured_s": p["measured_s"]} for p in grid_points]
        fit_info["grid"] = error_summary(g, pred[n:])
    return {"efficiency": {k: getattr(cm.eff, k) for k in params}, "fit": fit_info,
            "cost_model": cm}


def gpu_preset_for(device_name: str) -> str | None:
    name = device_name.lower()
    for key, preset in (("h200", "h200"), ("h100", "h100"), ("a100", "a100-80gb"), ("l4", "l4"), ("t4", "t4")):
        if key in name:
            return preset
    return None


def calibrate(model_name: str, gpu: str | None = None, backend: str = "torch", device=None,
              fast: bool = False, repeats: int = 5, num_layers: int | None = None,
              max_tokens: int | None = None, progress=None, model=None, serve_requests=None,
              serve_modes=SERVE_MODES, grid_weight: float = 1.0, serve_log: list | None = None,
              serve_results: dict | None = None, serve_config=None) -> dict:
    """Measure the grid and fit; returns the profile dict (see ``write_profile``).

    With ``serve_requests``, the real engine also serves them through ``run_serving`` in each of
    ``serve_modes`` ((mode, chunk size) pairs), logging every step (``serve_and_log``), and the
    profile's efficiency is fitted to those served steps plus the grid (``calibrate_from_serving``);
    the grid-only fit stays in the profile as ``grid_fit``. ``serve_log`` (a list) receives the
    served records, ``serve_results`` (a dict) each mode's RunResult; ``serve_config(mode, chunk)``
    may give the ServingConfig of each run."""
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
    for p in points:
        p["shape"] = batch_shape(cm0, p["_batch"])
    cm, pred = fit(cm0, points)
    meas = np.array([p["measured_s"] for p in points])
    rel = pred / meas - 1
    eff = {k: getattr(cm.eff, k) for k in FIT_PARAMS}
    served, grid_rel = None, rel
    if serve_requests:
        from .cluster import ServingConfig
        from .costmodel import MODELS
        from .model_executor import factory

        make = factory(model, backend=backend, device=dev)
        log = [] if serve_log is None else serve_log
        rng = np.random.default_rng(0)      # the real engine needs token ids: random ones where absent
        serve_requests = [r if r.prompt_ids is not None else
                          replace(r, prompt_ids=tuple(int(x) for x in rng.integers(0, cfg.vocab_size, r.prompt_len)))
                          for r in serve_requests]
        for mode, chunk in serve_modes:
            conf = serve_config(mode, chunk) if serve_config else ServingConfig(
                mode=mode, model=cfg.name if cfg.name in MODELS else "tiny", gpu=gpu, chunk_size=chunk,
                block_size=block_size, num_blocks=num_blocks, link="nvlink")
            res, _ = serve_and_log(serve_requests, conf, make, log)
            if serve_results is not None:
                serve_results[mode] = res
        served = calibrate_from_serving(cm0, log, points, grid_weight)
        grid_eff = eff
        eff = served["efficiency"]
        pred = predict_shapes(served["cost_model"], [p["shape"] for p in points])
        rel = pred / meas - 1
    prof = {
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
                             "|predicted / measured - 1| over every grid point" + (
                                 " under the served-step fit (see serving_fit)" if served else "")},
        "points": [{k: v for k, v in p.items() if not k.startswith("_")} | {"predicted_s": float(q)}
                   for p, q in zip(points, pred)],
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
        "note": "measured with pdlab.model_executor.ModelExecutor (CUDA events on a GPU, perf_counter on a CPU); "
                "load with costmodel.Efficiency.load(path) or ServingConfig(profile=path)",
    }
    if served:
        prof["calibrated_on"] = "served steps + grid"
        prof["serving_fit"] = served["fit"] | {
            "modes": [list(m) for m in serve_modes], "requests": len(serve_requests)}
        prof["grid_fit"] = {"efficiency": grid_eff,
                            "median_abs_rel_error": float(np.median(np.abs(grid_rel))),
                            "max_abs_rel_error": float(np.max(np.abs(grid_rel)))}
    else:
        prof["calibrated_on"] = "grid"
    return prof


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
    parser.add_argument("--serve-workload", default=None, metavar="LENGTHS",
                        help="also serve a workload (a length preset, e.g. sharegpt) with the real engine in "
                             "the aggregated, chunked and disaggregated modes and fit to the served steps "
                             "plus the grid (default: fit to the grid alone)")
    parser.add_argument("--serve-requests", type=int, default=40, help="requests in --serve-workload")
    parser.add_argument("--serve-rate", type=float, default=4.0, help="arrivals per second in --serve-workload")
    parser.add_argument("--serve-seed", type=int, default=1, help="seed of --serve-workload")
    parser.add_argument("--grid-weight", type=float, default=1.0,
                        help="weight of one grid point against one served step in the --serve-workload fit")


def run(args) -> int:
    import torch

    model = args.model or ("llama-3.2-1b" if torch.cuda.is_available() and args.device != "cpu" else "tiny")
    if model == "tiny" and not torch.cuda.is_available():
        torch.set_num_threads(1)   # a 6M-parameter model gains nothing from threads; they add noise
    t0 = time.perf_counter()

    def show(p):
        print(f"  {p['kind']:8s} x{p.get('seqs', len(p.get('chunks', [])) or 1):<3d} tokens={p['tokens']:5d} decodes={p['decodes']:4d} context={p['context']:5d}"
              f"  {1e3 * p['measured_s']:9.3f} ms", flush=True)

    serve = None
    if getattr(args, "serve_workload", None):
        from .workload import make_requests
        serve = make_requests(args.serve_requests, args.serve_rate, args.serve_workload, seed=args.serve_seed)
    prof = calibrate(model, args.gpu, args.backend, args.device, args.fast, args.repeats,
                     args.num_layers, progress=show, serve_requests=serve,
                     grid_weight=getattr(args, "grid_weight", 1.0))
    path = write_profile(prof, args.out)
    e, f = prof["efficiency"], prof["fit"]
    print(f"fitted on {prof['device']} ({prof['gpu']} preset), model {prof['model']}, {f['points']} points "
          f"in {time.perf_counter() - t0:.0f} s:")
    print("  " + ", ".join(f"{k}={v:.4g}" for k, v in e.items()))
    print(f"  |predicted/measured - 1|: median {100 * f['median_abs_rel_error']:.1f}%, "
          f"max {100 * f['max_abs_rel_error']:.1f}%")
    if "serving_fit" in prof:
        sf = prof["serving_fit"]["served"]
        print(f"  served steps ({sf['steps']}): |predicted/measured - 1| median {100 * sf['median_abs_rel_error']:.1f}%, "
              f"mean step time off by {100 * sf['mean_rel_error']:+.1f}%")
    print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    """``python -m pdlab.calibrate ...`` is ``pdlab calibrate ...``: one parser, one error path."""
    from .cli import main as cli_main
    return cli_main(["calibrate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
