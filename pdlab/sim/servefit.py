"""Fitting the simulator to measured serving runs: the efficiency factors and engine overheads
that make a replay of the same arrivals and lengths reproduce the measured per-request TTFT and
TPOT *distributions* (``pdlab calibrate --measured``).

The loss is over quantiles, not means: for every run, metric (TTFT, TPOT) and quantile q in
``QUANTILES``, the residual is log(simulated q / measured q), so a run's tail weighs as much as
its median and a short and a long latency weigh the same. The simulation is a discrete-event
replay, piecewise smooth in the parameters (a batch changes composition at some value), so the
optimiser is derivative-free: scipy's bounded Nelder-Mead from the base profile's values, then
a second start from the best point. A fit that stops on its iteration limit is not converged
and writes nothing.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..config import ServingConfig
from ..errors import PdlabError
from ..measured import MeasuredRun
from ..metrics import per_request

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
METRICS = ("ttft", "tpot")
# parameter: (low, high, fitted as log)
TERMS = {"mfu": (0.05, 1.0, True), "attn_eff": (0.01, 1.0, True), "mbu": (0.1, 1.0, True),
         "decode_mbu": (0.05, 1.0, True), "step_overhead_s": (0.0, 0.05, False),
         "seq_overhead_s": (0.0, 2e-3, False), "prefill_overhead_s": (0.0, 0.05, False),
         "mixed_overhead_s": (0.0, 0.05, False), "token_overhead_s": (0.0, 2e-3, False),
         "running_overhead_s": (0.0, 2e-3, False), "block_overhead_s": (0.0, 1e-3, False)}
#: what each profile kind fits by default: the roofline's factors and the overheads a served
#: engine pays; a step profile already times the steps, so only what it leaves out
DEFAULT_PARAMS = {"efficiency": ("mfu", "mbu", "decode_mbu", "step_overhead_s", "seq_overhead_s",
                                 "running_overhead_s"),
                  "step-profile": ("step_overhead_s", "running_overhead_s", "token_overhead_s")}
_PENALTY = 5.0          # residual of a quantile the simulation never reached (rejected requests)


def replay(run: MeasuredRun, config: ServingConfig, cost_models: dict) -> dict:
    """Simulated per-request arrays for ``run``'s arrivals and lengths (``metrics.per_request``)."""
    from ..run import run_serving
    return per_request(run_serving(run.requests, config, cost_models=cost_models).sequences)


def quantile_residuals(sim: dict, run: MeasuredRun, quantiles=QUANTILES, metrics=METRICS) -> np.ndarray:
    """log(simulated / measured) at each quantile of each metric."""
    out = []
    for m in metrics:
        meas = getattr(run, m)
        meas = meas[np.isfinite(meas)]
        x = sim[m][~np.isnan(sim[m])]
        mq = np.quantile(meas, quantiles)
        sq = np.quantile(np.minimum(x, 1e6), quantiles) if x.size else np.full(len(quantiles), 1e6)
        r = np.log(np.maximum(sq, 1e-9) / mq)
        out.append(np.clip(r, -_PENALTY, _PENALTY))
    return np.concatenate(out)


@dataclass
class ServeFit:
    efficiency: dict                 # fitted values of the parameters
    params: tuple[str, ...]
    loss: float                      # mean squared log quantile ratio at the optimum
    start_loss: float                # ... under the base profile
    converged: bool
    message: str
    evaluations: int
    per_run: list[dict] = field(default_factory=list)


def _pack(values: dict, params) -> np.ndarray:
    return np.array([math.log(values[k]) if TERMS[k][2] else values[k] * 1e3 for k in params])


def _unpack(x, params) -> dict:
    return {k: float(math.exp(v)) if TERMS[k][2] else float(v) * 1e-3 for k, v in zip(params, x)}


def fit_measured(runs: list[MeasuredRun], config: ServingConfig, profile, params=None,
                 maxfev: int = 600, progress=None) -> ServeFit:
    """Fit ``params`` of ``profile`` (a ``pdlab.sim.profiles.Profile``) so that replays of
    ``runs`` under ``config`` match their measured TTFT and TPOT quantiles."""
    from scipy.optimize import minimize

    from ..run import pool_roles
    params = tuple(params or DEFAULT_PARAMS["step-profile" if profile.kind == "step-profile" else "efficiency"])
    unknown = [p for p in params if p not in TERMS]
    if unknown:
        raise PdlabError(f"cannot fit {', '.join(unknown)} (fittable: {', '.join(TERMS)})")
    config = config.validate()
    roles = pool_roles(config)
    base = {role: profile.cost_model(config.gpu, config.model, config.pool_tp(role), config.block_size)
            for role in roles}
    e0 = asdict(base[roles[0]].eff)
    start = {k: e0[k] if e0[k] else _neutral(k, e0) for k in params}
    lo = np.array([math.log(TERMS[k][0]) if TERMS[k][2] else TERMS[k][0] * 1e3 for k in params])
    hi = np.array([math.log(TERMS[k][1]) if TERMS[k][2] else TERMS[k][1] * 1e3 for k in params])
    evals = [0]

    def models(x):
        kw = _unpack(x, params)
        return {role: cm.with_efficiency(**kw) for role, cm in base.items()}

    def loss(x):
        evals[0] += 1
        cms = models(np.clip(x, lo, hi))
        r = np.concatenate([quantile_residuals(replay(run, config, cms), run) for run in runs])
        v = float(np.mean(r ** 2))
        if progress is not None:
            progress(evals[0], v)
        return v

    x0 = np.clip(_pack(start, params), lo, hi)
    start_loss = float(np.mean(np.concatenate(
        [quantile_residuals(replay(run, config, base), run) for run in runs]) ** 2))
    opts = {"maxfev": maxfev, "xatol": 1e-3, "fatol": 1e-5, "adaptive": len(params) > 3}
    # the initial simplex: 10% of each log-factor, a millisecond or a tenth of the range of an overhead
    simplex = [x0] + [x0 + np.eye(len(params))[i] * (0.1 if TERMS[k][2] else max(0.1 * (hi[i] - lo[i]), 0.05))
                      for i, k in enumerate(params)]
    r1 = minimize(loss, x0, method="Nelder-Mead", bounds=list(zip(lo, hi)),
                  options={**opts, "initial_simplex": np.clip(simplex, lo, hi)})
    r = minimize(loss, r1.x, method="Nelder-Mead", bounds=list(zip(lo, hi)), options=opts)
    best = r if r.fun <= r1.fun else r1
    converged = bool(r.success and np.isfinite(best.fun))
    values = _unpack(np.clip(best.x, lo, hi), params)
    cms = models(best.x)
    per_run = [run_errors(run, replay(run, config, cms)) for run in runs]
    return ServeFit(values, params, float(best.fun), start_loss, converged, str(r.message), evals[0], per_run)


def _neutral(k: str, e0: dict) -> float:
    """A starting value for a term the base profile leaves at zero (decode_mbu: the base mbu)."""
    return e0["mbu"] if k == "decode_mbu" else 0.0


def run_errors(run: MeasuredRun, sim: dict, pcts=(50, 90, 99)) -> dict:
    """Simulated vs measured TTFT, TPOT and E2E percentiles of one run, with relative errors."""
    out = {"run": run.name, "rate_rps": round(run.rate, 4), "requests": len(run.requests)}
    meas = {"ttft": run.ttft, "tpot": run.tpot, "e2e": run.e2e}
    for m, mv in meas.items():
        mv = mv[np.isfinite(mv)]
        sv = sim[m][np.isfinite(sim[m])]
        row = {}
        for p in pcts:
            a = float(np.percentile(mv, p))
            b = float(np.percentile(sv, p)) if sv.size else None
            row[f"p{p}"] = {"measured_s": a, "simulated_s": b, "rel_error": None if b is None else b / a - 1}
        out[m] = row
    out["rejected"] = int(np.sum(~np.isfinite(sim["ttft"])))
    return out


def profile_json(fit: ServeFit, profile, config: ServingConfig, runs: list[MeasuredRun], engine: str = "") -> dict:
    """The profile a fit writes: the base profile's data with the fitted terms, and what it was
    fitted on."""
    data = {k: v for k, v in profile.data.items() if k not in ("efficiency", "fitted_on", "fit", "created")}
    eff = {k: v for k, v in asdict(profile.eff).items() if k != "source"} | fit.efficiency
    if profile.kind == "step-profile":
        from .stepprofile import KIND, models_of
        data = {"kind": KIND, "gpu": config.gpu, "models": {config.model: {
            str(tp): c for tp, c in models_of(profile.data)[config.model].items()}},
            **{k: v for k, v in data.items() if k not in ("kind", "gpu", "models") and "/" not in k}}
        data.setdefault("source", profile.path)
    out = {**data, "gpu": config.gpu, "model": config.model, "efficiency": eff}
    if engine:
        out["engine"] = engine
    out["fitted_on"] = {
        "runs": [r.describe() for r in runs], "mode": config.mode,
        "tp": {"prefill": config.pool_tp("prefill"), "decode": config.pool_tp("decode")}
        if config.mode == "disaggregated" else config.tp,
        "first_token_from": config.first_token_from if config.mode == "disaggregated" else None,
        "chunk_size": config.chunk_size, "max_num_seqs": config.max_num_seqs, "block_size": config.block_size,
        "base_profile": profile.name, "params": list(fit.params),
        "loss": "mean over runs, metrics (ttft, tpot) and quantiles "
                f"{list(QUANTILES)} of log(simulated / measured)^2",
        "start_loss": fit.start_loss, "final_loss": fit.loss, "evaluations": fit.evaluations,
        "optimizer": "scipy.optimize.minimize Nelder-Mead (bounded), two starts"}
    out["fit"] = {"per_run": fit.per_run}
    out["created"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return out
