"""Fitting the cost model to measured step times: the efficiency factors and overheads that make
``CostModel.time_for`` reproduce measured seconds. Torch-free: the records can come from the
real engine (``pdlab calibrate``) or from anywhere else a step's shape and duration are known.

A record is a dict with the fields of ``StepShape`` and ``measured_s`` (plus any tags).
"""

from __future__ import annotations

import numpy as np

from .costmodel import StepShape

FIT_PARAMS = ("mfu", "attn_eff", "mbu", "step_overhead_s", "seq_overhead_s", "prefill_overhead_s",
              "mixed_overhead_s")
_BOUNDS = {"mfu": (1e-4, 1.0), "attn_eff": (1e-5, 1.0), "mbu": (1e-3, 1.0),
           "step_overhead_s": (0.0, 1.0), "seq_overhead_s": (0.0, 0.1), "prefill_overhead_s": (0.0, 0.1),
           "mixed_overhead_s": (0.0, 0.1)}
_LOG_PARAMS = ("mfu", "attn_eff", "mbu")         # fitted as log(x); the overheads in ms


def shape_of(record: dict) -> StepShape:
    """The ``StepShape`` stored in a record (its fields, as ``StepShape._asdict()`` wrote them)."""
    return StepShape(**{k: record[k] for k in StepShape._fields if k in record})


def predict_shapes(cost_model, shapes: list[dict]) -> np.ndarray:
    """Seconds ``cost_model`` gives each shape (``CostModel.time_for``)."""
    return np.array([cost_model.time_for(s if isinstance(s, StepShape) else shape_of(s)) for s in shapes])


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
