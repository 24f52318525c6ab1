"""One ``Observation`` of a serving run: per-request lengths and latencies, and where it was
simulated, what the loop saw (iterations, KV occupancy, preemptions, prefix hits).

Three sources:

    simulate(requests, config)   run the traffic on the cost-model clock (everything is known)
    read_measured(path)          measured latencies (``pdlab.measured`` reads them): a CSV with
                                 ``measured_ttft_ms``/``measured_tpot_ms`` or ``ttft_s``/``tpot_s``, or
                                 ``vllm bench serve --save-result --save-detailed`` JSON (``itls`` kept)

Measured inputs carry no iteration log: the evidence that needs one says it is not measured.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from ..config import ServingConfig
from ..request import Request, Status
from ..serving.events import StepColumns


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
    from ..measured import CSV_LATENCY
    path = Path(path)
    if path.suffix == ".json":
        return True
    if path.suffix != ".csv" or not path.is_file():
        return False
    with path.open(newline="") as f:
        cols = next(csv.reader(f), [])
    return any(c in cols for pair in CSV_LATENCY for c in pair[:2])


def read_measured(path: str | Path, clock: str | None = None) -> Observation:
    """A measured run (``pdlab.measured``: DistServe's CSV convention or vLLM ``bench serve
    --save-detailed`` JSON, validated line by line there). From the JSON the inter-token gaps
    are kept too (vLLM's ``itls``); failed requests count as never served."""
    from ..measured import read_measured as read_run
    path = Path(path)
    run = read_run(path)
    n = len(run.requests)
    ttft = np.concatenate([run.ttft, np.full(run.failed, np.inf)])
    tpot = np.concatenate([run.tpot, np.full(run.failed, np.nan)])
    reqs = list(run.requests)
    itl = owner = None
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        errors = data.get("errors") or [""] * len(data["itls"])
        kept = [g for g, e in zip(data["itls"], errors) if not e]
        itl = np.array([float(x) for g in kept for x in g], dtype=float)
        owner = np.repeat(np.arange(n), [len(g) for g in kept])
        # failed requests: their lengths as asked, after the served ones
        for i, e in enumerate(errors):
            if e:
                reqs.append(Request(len(reqs), reqs[-1].arrival if reqs else 0.0,
                                    max(1, int(data["input_lens"][i])), max(1, int(data["output_lens"][i]))))
    kind = "vLLM bench serve" if path.suffix == ".json" else "per-request CSV"
    return Observation(source="measured", clock=clock or f"measured ({kind}: {path.name})", requests=reqs,
                       prompt_len=np.array([r.prompt_len for r in reqs], dtype=np.int64),
                       output_len=np.array([r.max_new_tokens for r in reqs], dtype=np.int64),
                       ttft=ttft, tpot=tpot, itl=itl, itl_owner=owner, rejected=run.failed)
