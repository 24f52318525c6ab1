"""``pdlab plan``: the configuration with the best goodput per GPU for a workload on N GPUs.

The search space (``Space``) is every way to use the GPUs: aggregated and chunked replicas (the
token budget of chunked, tensor parallelism, the router), and disaggregated prefill:decode splits
(with per-pool TP). Each configuration's goodput is the highest Poisson rate at which the SLOs
hold on the same requests re-timed (``search``: ``metrics.goodput_search``'s doubling and bisection, resumable). Two stages,
a branch and bound, keep it fast and exact:

1. coarse: every configuration, bracketed to 10% (in parallel, ``sweep.map``);
2. refine: every configuration whose bracket reaches above the best coarse lower bound (the
   others cannot win) continues its bisection to 2%, asking exactly the rates a fresh 2% search
   asks, so the winner is the winner of ``exhaustive`` (every configuration to 2%).

Two ways to count an SLO (``count``):

    request     DistServe's attainment: a request is good when it meets every SLO at once, and
                the share of good requests must reach the SLOs' percentile (90 for ttft:p90:...)
    percentile  each SLO on its own: its percentile over all requests is within the target

Every simulated (configuration, rate) is also a point of the Pareto view AIConfigurator draws:
output tokens/s per GPU against tokens/s per user (1 / mean TPOT).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from . import sweep
from .config import ServingConfig
from .errors import PdlabError
import numpy as np

from .gcpause import gc_paused
from .metrics import SLO, per_request, slo_report
from .metrics import goodput_search_resumable as search  # noqa: F401 (the plan's search)
from .request import Request
from .workload import with_rate

COARSE_TOL, FINE_TOL = 0.10, 0.02
CHUNKS = (256, 512, 1024, 2048)


@dataclass(frozen=True)
class Space:
    """What the planner may choose from: the fixed deployment (model, GPU, GPU count) and the knobs."""

    model: str = "llama-3-8b"
    gpu: str = "h100"
    num_gpus: int = 8
    modes: tuple[str, ...] = ("aggregated", "chunked", "disaggregated")
    chunks: tuple[int, ...] = CHUNKS              # chunked token budgets
    tps: tuple[int, ...] | None = None            # None: every TP that divides num_gpus and the model
    routers: tuple[str, ...] | None = None        # None: round-robin, least-loaded, and kv-aware with the prefix cache
    link: str | float = "nvlink"
    prefix_cache: bool = False
    max_num_seqs: int = 256
    block_size: int = 16
    num_blocks: int | None = None
    profile: str | None = None

    def router_choices(self) -> tuple[str, ...]:
        """The routers worth trying: KV-aware routing only matters when there is a cache to aim at."""
        if self.routers:
            return self.routers
        return ("least-loaded", "round-robin") + (("kv-aware",) if self.prefix_cache else ())

    def configs(self) -> tuple[list[ServingConfig], list[str]]:
        """Every valid configuration, and why the others were left out."""
        base = ServingConfig(model=self.model, gpu=self.gpu, link=self.link, prefix_cache=self.prefix_cache,
                             max_num_seqs=self.max_num_seqs, block_size=self.block_size,
                             num_blocks=self.num_blocks, profile=self.profile)
        n = self.num_gpus
        tps = self.tps or tuple(t for t in (1, 2, 4, 8, 16) if t <= n)
        cands = []
        for mode in self.modes:
            if mode == "disaggregated":
                # every split of the N GPUs into P prefill replicas of ptp GPUs and D decode
                # replicas of dtp GPUs (DistServe places the two phases with different TP)
                cands += [replace(base, mode=mode, tp=min(ptp, dtp), prefill_tp=ptp, decode_tp=dtp,
                                  prefill_gpus=p, decode_gpus=(n - p * ptp) // dtp)
                          for ptp in tps for dtp in tps for p in range(1, n // ptp + 1)
                          if n - p * ptp >= dtp and (n - p * ptp) % dtp == 0]
                continue
            for tp in tps:
                if n % tp:
                    continue
                r = n // tp
                routers = self.router_choices() if r > 1 else self.router_choices()[:1]
                chunks = self.chunks if mode == "chunked" else (None,)
                cands += [replace(base, mode=mode, tp=tp, num_gpus=r, chunk_size=c, router=ro)
                          for c in chunks for ro in routers]
        out, skipped = [], []
        for c in cands:
            why = _invalid(c)
            if why is None:
                out.append(c)
            elif why not in skipped:
                skipped.append(why)
        if not out:
            raise PdlabError(f"no configuration of {self.model} fits {self.num_gpus} x {self.gpu}: "
                             + "; ".join(skipped))
        return out, skipped


def _invalid(c: ServingConfig) -> str | None:
    """Why ``c`` cannot run (TP that does not divide the model, no room for a KV cache), or None."""
    from .run import cost_model_for
    try:
        c.validate()
        if c.num_blocks is None:
            for role in ("prefill", "decode") if c.mode == "disaggregated" else ("mixed",):
                cost_model_for(c, role).num_blocks(c.block_size)
    except PdlabError as e:
        return str(e)
    return None


def label(c: ServingConfig) -> str:
    tp = f" tp{c.tp}" if c.tp > 1 else ""
    if c.mode == "disaggregated":
        ptp, dtp = c.pool_tp("prefill"), c.pool_tp("decode")
        return (f"disaggregated {c.prefill_gpus}P{f'(tp{ptp})' if ptp > 1 else ''}:"
                f"{c.decode_gpus}D{f'(tp{dtp})' if dtp > 1 else ''}")
    chunk = f" budget {c.chunk_size}" if c.mode == "chunked" else ""
    router = f" {c.router}" if c.replicas > 1 else ""
    return f"{c.mode} x{c.replicas}{tp}{chunk}{router}"


# ---- one configuration's goodput ------------------------------------------------------------------
def attainment_target(slos: list[SLO]) -> float:
    """DistServe's counting: the share of requests that must meet every SLO at once."""
    return max(s.percentile for s in slos) / 100


def evaluate(task: tuple) -> dict:
    """Goodput of one configuration to ``tol`` (module level: ``sweep.map`` pickles it). ``prev``,
    an earlier coarser result for the same configuration and requests, is continued, not redone."""
    from .run import run_serving
    cfg, reqs, slos, count, tol, seed, burstiness, prev = task
    target = attainment_target(slos)
    points = list(prev["_points"]) if prev else []

    def meets(rate: float) -> bool:
        res = run_serving(with_rate(reqs, rate, seed, burstiness), cfg)
        with gc_paused():                             # no cycles here; a collection would rescan token lists
            arr = per_request(res.sequences)          # once: every number below reads these arrays
        a = slo_report(arr, slos)
        ok = a["requests_within"] >= target if count == "request" else a["all_met"]
        done = np.isfinite(arr["e2e"])
        arrival = np.array([q.arrival for q in res.sequences])
        span = float((arrival + arr["e2e"])[done].max() - arrival.min()) if done.any() else 0.0
        tpot = arr["tpot"][done & np.isfinite(arr["tpot"])]
        points.append({"rate": rate, "met": bool(ok), "requests_within": a["requests_within"],
                       "tok_s_per_gpu": float(arr["n_out"].sum()) / span / cfg.gpus if span else 0.0,
                       "tok_s_per_user": 1.0 / float(tpot.mean()) if tpot.size and tpot.mean() > 0 else 0.0,
                       "ratios": {_k(r): (float("inf") if r["value_s"] is None else r["value_s"] / r["target_s"])
                                  for r in a["slos"]},
                       "within": {str(x): slo_report(arr, [x])["requests_within"] for x in slos}})
        return ok

    first = default_start(cfg, reqs)

    def meets_or_give_up(rate: float) -> bool:
        ok = meets(rate)
        if not ok and rate == first and not meets(first * UNLOADED):
            raise _Infeasible       # fails even unloaded: no lower rate can pass, skip the descent
        return ok

    try:
        g, state = search(meets_or_give_up, first, tol, prev["_state"] if prev else None)
    except _Infeasible:
        g, state = 0.0, (0.0, first * UNLOADED, 0, True)
    passed = [p for p in points if p["met"]]
    failed = [p for p in points if not p["met"]]
    at = max(passed, key=lambda p: p["rate"]) if passed else None
    first_fail = min(failed, key=lambda p: p["rate"]) if failed else None
    lowest = min(points, key=lambda p: p["rate"])
    upper = float("inf") if state[3] and g > 0 else state[1]     # the goodput is below this rate
    return {"label": label(cfg), "config": _cfg_dict(cfg), "mode": cfg.mode, "gpus": cfg.gpus,
            "goodput_rps": g, "goodput_rps_per_gpu": g / cfg.gpus, "upper_rps_per_gpu": upper / cfg.gpus,
            "num_requests": len(reqs), "rel_tol": tol,
            "binding": _binding(first_fail, count) if first_fail else None,
            "at": _public(at), "lowest_rate": _public(lowest), "rates_tried": len(points),
            "points": [{k: p[k] for k in ("rate", "met", "tok_s_per_gpu", "tok_s_per_user", "requests_within")}
                       for p in points], "_points": points, "_state": state}


class _Infeasible(Exception):
    pass


UNLOADED = 1e-3     # a rate this far below the first guess leaves every request alone on its GPU


def default_start(cfg: ServingConfig, reqs: list[Request]) -> float:
    """The first rate a search tries, then it doubles: half what the cost model says the GPUs
    could sustain if every GPU-second were busy (mean prompt prefilled alone, mean answer decoded
    in batches of 64). Starting near the answer matters: a run at a low rate simulates a long
    stretch of small decode steps, the costliest kind of probe."""
    from .run import cost_model_for
    cm = cost_model_for(cfg)
    n = len(reqs)
    p = sum(r.prompt_len for r in reqs) / n
    o = sum(r.max_new_tokens for r in reqs) / n
    per_request = cm.prefill_time(int(p)) + o * cm.decode_time(64, int(p + o / 2)) / 64
    return max(0.05, 0.5 * cfg.gpus / cfg.tp / per_request)


def _k(r: dict) -> str:
    return f"{r['metric']}:p{r['percentile']:g}:{r['target_s']:g}"


def _binding(p: dict, count: str) -> str:
    """The SLO that fails first as the rate grows: the lowest per-request share (request count)
    or the largest value / target (percentile count), at the lowest failing rate."""
    if count == "request":
        return min(p["within"], key=p["within"].get)
    return max(p["ratios"], key=p["ratios"].get)


def _public(p: dict | None) -> dict | None:
    if p is None:
        return None
    return {"rate": p["rate"], "requests_within": p["requests_within"], "tok_s_per_gpu": p["tok_s_per_gpu"],
            "tok_s_per_user": p["tok_s_per_user"], "slo_ratio": p["ratios"], "within": p["within"]}


def _cfg_dict(c: ServingConfig) -> dict:
    d = asdict(c)
    pool = ("prefill_gpus", "decode_gpus", "prefill_tp", "decode_tp", "link")
    d["prefill_tp"], d["decode_tp"] = c.pool_tp("prefill"), c.pool_tp("decode")
    return {k: d[k] for k in ("mode", "tp", "num_gpus", "chunk_size", "router", "prefix_cache") + pool
            if not (c.mode == "disaggregated" and k in ("num_gpus", "router", "tp"))
            and not (c.mode != "disaggregated" and k in pool)}


# ---- the search -----------------------------------------------------------------------------------
def _rank_key(r: dict):
    return (-r["goodput_rps_per_gpu"], r["label"])


def exhaustive(requests: list[Request], space: Space, slos: list[SLO], count: str = "request", jobs: int | None = 1,
               dask=None, seed: int = 0, burstiness: float = 1.0, tol: float = FINE_TOL) -> list[dict]:
    """Every configuration on the whole workload at the fine tolerance, ranked (the reference the
    two-stage search must agree with)."""
    cfgs, _ = space.configs()
    rows = sweep.map(evaluate, [(c, requests, slos, count, tol, seed, burstiness, None) for c in cfgs], jobs=jobs,
                     dask=dask, desc="exhaustive")
    return [_summary(r) for r in sorted(rows, key=_rank_key)]


def plan(requests: list[Request], space: Space, slos: list[SLO], count: str = "request", jobs: int | None = None,
         dask=None, seed: int = 0, burstiness: float = 1.0, refine_top: int = 1) -> dict:
    """The two-stage search; a JSON-ready dict with ``best``, ``candidates`` (every configuration
    tried, ranked), ``pareto``, ``met`` and, when nothing meets the SLOs, ``closest``."""
    if not slos:
        raise PdlabError("plan needs at least one SLO")
    if count not in ("request", "percentile"):
        raise PdlabError(f"unknown SLO counting '{count}' (choose from: request, percentile)")
    cfgs, skipped = space.configs()
    tasks = [(c, requests, slos, count, COARSE_TOL, seed, burstiness, None) for c in cfgs]
    coarse = sweep.map(evaluate, tasks, jobs=jobs, dask=dask, desc="plan: coarse")
    for r in coarse:
        r["stage"] = "coarse"
    # branch and bound: a configuration whose bracket tops out at or below the best lower bound
    # cannot win (its goodput is below its bracket's top); every other one is refined
    bound = max(r["goodput_rps_per_gpu"] for r in coarse)
    order = sorted(range(len(cfgs)), key=lambda i: _rank_key(coarse[i]))
    lead = [i for k, i in enumerate(order)
            if k < refine_top or coarse[i]["upper_rps_per_gpu"] > bound or bound == 0]
    fine = sweep.map(evaluate, [tasks[i][:4] + (FINE_TOL,) + tasks[i][5:7] + (coarse[i],) for i in lead],
                     jobs=jobs, dask=dask, desc="plan: refine")
    for r in fine:
        r["stage"] = "refined"
    refined = sorted(fine, key=_rank_key)
    rest = [coarse[i] for i in order if i not in lead]
    candidates = refined + rest
    met = any(r["goodput_rps"] > 0 for r in refined)
    points = [dict(p, label=r["label"], mode=r["mode"]) for r in candidates for p in r["points"]]
    clock = f"simulated (cost model: {space.model} on {space.gpu})"
    out = {"clock": clock, "num_gpus": space.num_gpus, "model": space.model, "gpu": space.gpu,
           "slos": [str(s) for s in slos], "count": count,
           "attainment_target": attainment_target(slos) if count == "request" else None,
           "num_requests": len(requests), "configurations": len(cfgs),
           "refined": len(refined),
           "skipped": skipped, "met": met, "best": _summary(refined[0]) if met else None,
           "runner_ups": [_summary(r) for r in refined[1:] if r["goodput_rps"] > 0],
           "candidates": [_summary(r) for r in candidates], "pareto": pareto_front(points),
           "pareto_met": pareto_front([p for p in points if p["met"]]), "points": points}
    if not met:
        out["closest"] = _summary(max(refined + rest, key=lambda r: (r["lowest_rate"]["requests_within"],
                                                                        -r["lowest_rate"]["rate"])))
        out["closest"]["why"] = "highest share of requests within every SLO at the lowest rate tried"
    return out


def _summary(r: dict) -> dict:
    return {k: r.get(k) for k in ("label", "config", "mode", "gpus", "goodput_rps", "goodput_rps_per_gpu",
                                  "upper_rps_per_gpu", "binding", "stage", "rel_tol", "num_requests", "rates_tried",
                                  "at", "lowest_rate")}


def pareto_front(points: list[dict]) -> list[dict]:
    """Points no other point beats on both tokens/s per user and tokens/s per GPU (sorted by the first)."""
    pts = sorted(points, key=lambda p: (-p["tok_s_per_user"], -p["tok_s_per_gpu"]))
    front, best_gpu = [], -1.0
    for p in pts:
        if p["tok_s_per_gpu"] > best_gpu:
            front.append({k: p[k] for k in ("label", "mode", "rate", "met", "tok_s_per_user", "tok_s_per_gpu")})
            best_gpu = p["tok_s_per_gpu"]
    return sorted(front, key=lambda p: p["tok_s_per_user"])


# ---- the command line -----------------------------------------------------------------------------
def space_from_args(args) -> Space:
    """The deployment the flags fix (model, GPU, GPU count, link, cache); --mode, --tp, --chunk-size
    and --router are what the plan searches, so they are not read."""
    return Space(model=args.model, gpu=args.gpu, num_gpus=args.num_gpus, link=args.link,
                 prefix_cache=args.prefix_cache, max_num_seqs=args.max_num_seqs, block_size=args.block_size,
                 num_blocks=args.num_blocks, profile=args.profile)


def render_text(res: dict) -> str:
    def row(r):
        g = r["goodput_rps"]
        b = f"; binds: {r['binding']}" if r["binding"] else ""
        return f"{r['label']:<44} {g:8.2f} req/s  {r['goodput_rps_per_gpu']:7.2f} per GPU  ({r['stage']}){b}"
    count = (f"per request: {res['attainment_target']:.0%} of requests within every SLO at once"
             if res["count"] == "request" else "per percentile: each SLO on its own")
    out = [f"pdlab plan: {res['num_gpus']} x {res['gpu']}, {res['model']}; {res['num_requests']} requests; "
           f"SLOs {', '.join(res['slos'])} ({count})",
           f"{res['configurations']} configurations bracketed to {COARSE_TOL:.0%}, the {res['refined']} that "
           f"could still win refined to {FINE_TOL:.0%}; {res['clock']}", ""]
    if res["met"]:
        b = res["best"]
        out.append(f"best: {b['label']}: goodput {b['goodput_rps']:.2f} req/s = {b['goodput_rps_per_gpu']:.2f} "
                   f"per GPU; binding SLO: {b['binding'] or 'none hit'}")
    else:
        c = res["closest"]
        lr = c["lowest_rate"]
        out.append("no configuration meets the SLOs. Closest: "
                   f"{c['label']} ({lr['requests_within']:.0%} of requests within every SLO at "
                   f"{lr['rate']:.3g} req/s; binding: {c['binding']})")
    ref = [r for r in res["candidates"] if r["stage"] == "refined"]
    rest = [r for r in res["candidates"] if r["stage"] != "refined"]
    out += ["", f"refined candidates (ranked, {res['num_requests']} requests):"]
    out += ["  " + row(r) for r in ref[:10]]
    if rest:
        out += ["", f"left at {COARSE_TOL:.0%} (their bracket tops out below the winner's goodput):"]
        out += ["  " + row(r) for r in rest[:5]]
        if len(rest) > 5:
            out.append(f"  ... {len(rest) - 5} more (--json lists every configuration)")
    out += ["", "Pareto front (tokens/s per user -> tokens/s per GPU):"]
    met = res["pareto_met"]
    out[-1] = (f"Pareto front of the (configuration, rate) points that meet the SLOs ({len(met)} points; "
               f"tokens/s per user -> output tokens/s per GPU):")
    step = max(1, len(met) // 8)
    out += [f"  {p['tok_s_per_user']:7.1f} -> {p['tok_s_per_gpu']:8.1f}  {p['label']} at {p['rate']:.3g} req/s"
            for p in met[::step]]
    return "\n".join(out)
