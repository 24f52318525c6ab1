"""One ``Observation`` of a serving run: per-request lengths and latencies, and where it was
simulated, what the loop saw (iterations, KV occupancy, preemptions, prefix hits).

Three sources:

    simulate(requests, config)   run the traffic on the cost-model clock (everything is known)
    read_measured_csv(path)      a trace CSV with measured ``ttft_s``/``tpot_s`` (or ``*_ms``) columns
    read_vllm_json(path)         ``vllm bench serve --save-result --save-detailed`` output:
                                 ``input_lens``, ``output_lens``, ``ttfts`` (s), ``itls`` (s per gap),
                                 ``errors`` (a failed request has a non-empty error)

Measured inputs carry no iteration log: the evidence that needs one says it is not measured.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from ..config import ServingConfig
from ..errors import PdlabError
from ..request import Request, Status
from ..serving.events import StepColumns

MEASURED_COLUMNS = {"ttft": ("ttft_s", "ttft_ms", "measured_ttft_ms"),
                    "tpot": ("tpot_s", "tpot_ms", "measured_tpot_ms")}


@dataclass
class Observation:
    """Per-request arrays (one entry per request, in arrival order; +inf for a request that was
    never served), plus what only a simulation knows (None when measured)."""

    source: str                       # "simulated" | "measured"
    clock: str                        # where the seconds come from
    requests: list[Request]
    prompt_len: np.ndarray            # [n] tokens
    output_len: np.ndarray            # [n] tokens asked for (the trace) or produced (measured)
    ttft: np.ndarray                  # [n] s
    tpot: np.ndarray                  # [n] s (nan for one-token answers)
    queue: np.ndarray | None = None   # [n] s arrival -> first scheduled
    prefill_start: np.ndarray | None = None   # [n] s absolute, first scheduled
    first_token: np.ndarray | None = None     # [n] s absolute
    itl: np.ndarray | None = None     # [g] s every gap between two tokens of a request
    itl_owner: np.ndarray | None = None       # [g] request index of each gap
    itl_start: np.ndarray | None = None       # [g] s absolute start of each gap (None when measured)
    preemptions: np.ndarray | None = None     # [n] times each request was preempted
    steps: StepColumns | None = None  # every iteration (simulated)
    roles: list[str] = field(default_factory=list)
    num_blocks: int | None = None     # KV blocks per worker
    prefix_cache: bool | None = None
    prefix_hit_rate: float | None = None
    rejected: int = 0
    config: ServingConfig | None = None
    result: object = None             # the RunResult when simulated

    @property
    def n(self) -> int:
        return len(self.requests)


def simulate(requests: list[Request], config: ServingConfig, clock: str | None = None) -> Observation:
    """Serve ``requests`` with ``config`` on the cost-model clock and observe everything."""
    from ..run import run_serving
    return from_result(run_serving(requests, config, clock=clock))


def from_result(res) -> Observation:
    seqs = res.sequences
    n = len(seqs)
    ttft, tpot, queue, start, first = (np.full(n, np.inf) for _ in range(5))
    done = [i for i, s in enumerate(seqs) if s.status is Status.FINISHED]
    lens = np.array([len(seqs[i].token_times) for i in done], dtype=np.int64)
    times = np.fromiter(chain.from_iterable(seqs[i].token_times for i in done), float, int(lens.sum()))
    idx = np.asarray(done, dtype=np.int64)
    if done:
        last = np.cumsum(lens) - 1
        lo = last - lens + 1
        arrival = np.array([seqs[i].arrival for i in done])
        sched = np.array([seqs[i].first_scheduled if seqs[i].first_scheduled is not None else np.nan for i in done])
        first[idx] = times[lo]
        ttft[idx] = times[lo] - arrival
        start[idx] = np.where(np.isnan(sched), times[lo], sched)
        queue[idx] = start[idx] - arrival
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot[idx] = np.where(lens > 1, (times[last] - times[lo]) / np.maximum(lens - 1, 1), np.nan)
        keep = np.ones(max(times.size - 1, 0), dtype=bool)
        keep[last[:-1]] = False             # the step from one request's last token to the next's first
        gaps, gstart = np.diff(times)[keep], times[:-1][keep]
        owner = np.repeat(idx, lens - 1)
    else:
        gaps = gstart = np.zeros(0)
        owner = np.zeros(0, dtype=np.int64)
    return Observation(
        source="simulated", clock=res.clock, requests=[s.request for s in seqs],
        prompt_len=np.array([s.prompt_len for s in seqs], dtype=np.int64),
        output_len=np.array([s.max_new_tokens for s in seqs], dtype=np.int64),
        ttft=ttft, tpot=tpot, queue=queue, prefill_start=start, first_token=first,
        itl=gaps, itl_owner=owner, itl_start=gstart,
        preemptions=np.array([s.num_preemptions for s in seqs], dtype=np.int64),
        steps=res.steps.columns(), roles=list(res.roles), num_blocks=res.num_blocks,
        prefix_cache=res.config.prefix_cache, prefix_hit_rate=res.prefix_hit_rate,
        rejected=sum(s.status is Status.REJECTED for s in seqs), config=res.config, result=res)


def has_measured_columns(path: str | Path) -> bool:
    """Does this file carry measured latencies (a vLLM JSON, or a CSV with TTFT/TPOT columns)?"""
    path = Path(path)
    if path.suffix == ".json":
        return True
    if path.suffix != ".csv" or not path.is_file():
        return False
    with path.open(newline="") as f:
        cols = next(csv.reader(f), [])
    return any(c in cols for names in MEASURED_COLUMNS.values() for c in names)


def _seconds(raw, key: str, where: str) -> float:
    try:
        v = float(raw)
    except (TypeError, ValueError):
        raise PdlabError(f"{where}: '{key}' is {raw!r}, not a number") from None
    if not v >= 0 or math.isinf(v):
        raise PdlabError(f"{where}: '{key}' must be a time >= 0, got {raw!r}")
    return v / 1000 if key.endswith("_ms") else v


def read_measured_csv(path: str | Path, clock: str | None = None) -> Observation:
    """A trace CSV whose rows also hold measured TTFT and TPOT (seconds, or ``*_ms`` columns)."""
    from ..traces import read_trace
    path = Path(path)
    reqs = read_trace(path)                      # lengths and times validated, line by line
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        pick = {}
        for metric, names in MEASURED_COLUMNS.items():
            found = [c for c in names if c in cols]
            if not found:
                raise PdlabError(f"{path}:1: missing column {names[0]} (measured {metric.upper()}; "
                                 f"or one of {', '.join(names[1:])})")
            pick[metric] = found[0]
        ttft, tpot = np.zeros(len(reqs)), np.zeros(len(reqs))
        for i, row in enumerate(reader):
            where = f"{path}:{i + 2}"
            ttft[i] = _seconds(row[pick["ttft"]], pick["ttft"], where)
            tpot[i] = _seconds(row[pick["tpot"]], pick["tpot"], where)
    out = np.array([r.max_new_tokens for r in reqs], dtype=np.int64)
    tpot[out <= 1] = np.nan
    return Observation(source="measured", clock=clock or f"measured ({path.name})", requests=reqs,
                       prompt_len=np.array([r.prompt_len for r in reqs], dtype=np.int64), output_len=out,
                       ttft=ttft, tpot=tpot)


VLLM_KEYS = ("input_lens", "output_lens", "ttfts", "itls")


def read_vllm_json(path: str | Path, clock: str | None = None) -> Observation:
    """``vllm bench serve --save-result --save-detailed`` results: per-request lengths, TTFT and
    inter-token gaps. A request with a non-empty ``errors`` entry counts as never served."""
    path = Path(path)
    if not path.is_file():
        raise PdlabError(f"measured results {path} not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PdlabError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise PdlabError(f"{path}: expected a JSON object (vllm bench serve --save-result --save-detailed)")
    missing = [k for k in VLLM_KEYS if k not in data]
    if missing:
        raise PdlabError(f"{path}: missing {', '.join(missing)} (save it with vllm bench serve "
                         f"--save-result --save-detailed)")
    n = len(data["input_lens"])
    for k in VLLM_KEYS[1:]:
        if not isinstance(data[k], list) or len(data[k]) != n:
            raise PdlabError(f"{path}: '{k}' has {len(data[k]) if isinstance(data[k], list) else 'no'} "
                             f"entries, 'input_lens' has {n}")
    if n == 0:
        raise PdlabError(f"{path}: no requests in the file")
    errors = data.get("errors") or [""] * n
    reqs, ttft, tpot, gaps, owner = [], np.full(n, np.inf), np.full(n, np.nan), [], []
    out = np.zeros(n, dtype=np.int64)
    for i in range(n):
        where = f"{path}: request {i}"
        pin = data["input_lens"][i]
        if not isinstance(pin, int) or pin < 1:
            raise PdlabError(f"{where}: input_lens[{i}] must be a whole number >= 1, got {pin!r}")
        pout = data["output_lens"][i]
        if not isinstance(pout, int) or pout < 0:
            raise PdlabError(f"{where}: output_lens[{i}] must be a whole number >= 0, got {pout!r}")
        reqs.append(Request(i, -1.0, pin, max(pout, 1)))
        out[i] = pout
        if errors[i] or pout == 0:
            continue
        ttft[i] = _seconds(data["ttfts"][i], f"ttfts[{i}]", where)
        g = data["itls"][i]
        if not isinstance(g, list):
            raise PdlabError(f"{where}: itls[{i}] must be a list of seconds")
        g = [_seconds(x, f"itls[{i}]", where) for x in g]
        if g:
            tpot[i] = float(np.mean(g))      # vLLM's TPOT: the mean gap after the first token
            gaps.extend(g)
            owner.extend([i] * len(g))
    return Observation(source="measured", clock=clock or f"measured (vLLM bench serve, {path.name})",
                       requests=reqs, prompt_len=np.array([r.prompt_len for r in reqs], dtype=np.int64),
                       output_len=out, ttft=ttft, tpot=tpot, itl=np.array(gaps, dtype=float),
                       itl_owner=np.array(owner, dtype=np.int64), rejected=int(np.sum(~np.isfinite(ttft))))


def read_measured(path: str | Path) -> Observation:
    path = Path(path)
    return read_vllm_json(path) if path.suffix == ".json" else read_measured_csv(path)
