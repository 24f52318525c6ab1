"""Measured serving runs: per-request arrivals, lengths and latencies of a real engine, read so the
simulator can replay the same workload and be compared (``pdlab compare``) or fitted
(``pdlab calibrate --measured``) request for request.

Two formats:

    CSV    ``arrived_at,num_prefill_tokens,num_decode_tokens`` plus ``measured_ttft_ms`` and
           ``measured_tpot_ms`` (DistServe's convention, ``data/measured/``) or ``ttft_s`` and
           ``tpot_s``; one row per request, sorted by arrival
    JSON   vLLM ``bench serve --save-result --save-detailed``: ``input_lens``, ``output_lens``,
           ``ttfts`` and ``itls`` (seconds), ``start_times`` (the client's send times, seconds);
           failed requests (a non-empty ``errors`` entry) are left out and counted

TPOT is over the output tokens after the first, (last - first token) / (tokens - 1), as pdlab's
metrics define it; a one-token answer has none (NaN). A missing, negative or unsorted value
raises ``PdlabError`` naming the file and line (the request's index for JSON).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import PdlabError
from .request import Request

CSV_LATENCY = (("measured_ttft_ms", "measured_tpot_ms", 1e-3), ("ttft_s", "tpot_s", 1.0))


@dataclass
class MeasuredRun:
    """One measured run: the workload as it arrived and what each request saw (seconds)."""

    path: str
    requests: list[Request]       # arrivals relative to the first
    ttft: np.ndarray
    tpot: np.ndarray              # NaN for one-token answers
    failed: int = 0               # requests the engine failed (left out)

    @property
    def name(self) -> str:
        return Path(self.path).stem

    @property
    def e2e(self) -> np.ndarray:
        n_out = np.array([r.max_new_tokens for r in self.requests])
        return self.ttft + np.nan_to_num(self.tpot) * (n_out - 1)

    @property
    def rate(self) -> float:
        """Mean arrival rate (requests per second over the arrival window)."""
        span = self.requests[-1].arrival - self.requests[0].arrival
        return (len(self.requests) - 1) / span if span > 0 else math.inf

    def describe(self) -> dict:
        return {"file": self.path, "requests": len(self.requests), "failed": self.failed,
                "rate_rps": round(self.rate, 4),
                "mean_prompt_tokens": float(np.mean([r.prompt_len for r in self.requests])),
                "mean_output_tokens": float(np.mean([r.max_new_tokens for r in self.requests]))}


def _num(raw, what: str, where: str, allow_zero: bool = True) -> float:
    try:
        v = float(raw)
    except (TypeError, ValueError):
        raise PdlabError(f"{where}: '{what}' is {'missing' if raw in (None, '') else repr(raw)}, "
                         f"not a number") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise PdlabError(f"{where}: '{what}' must be {'>= 0' if allow_zero else '> 0'}, got {raw!r}")
    return v


def _length(raw, what: str, where: str) -> int:
    v = _num(raw, what, where, allow_zero=False)
    if v != int(v):
        raise PdlabError(f"{where}: '{what}' must be a whole number of tokens, got {raw!r}")
    return int(v)


def _build(path, rows) -> MeasuredRun:
    """``rows``: (where, arrival, prompt, output, ttft_s, tpot_s or None) in file order."""
    reqs, ttft, tpot = [], [], []
    prev, t0 = -math.inf, None
    for where, t, pin, pout, a, b in rows:
        if t < prev:
            raise PdlabError(f"{where}: arrivals are not sorted ({t:g} s after {prev:g} s)")
        prev = t
        t0 = t if t0 is None else t0
        reqs.append(Request(len(reqs), t - t0, pin, pout))
        ttft.append(a)
        tpot.append(b if pout > 1 else math.nan)
    if not reqs:
        raise PdlabError(f"{path}: no requests in the file")
    return MeasuredRun(str(path), reqs, np.array(ttft), np.array(tpot, dtype=float))


def _read_csv(path: Path) -> MeasuredRun:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or [])
        need = {"arrived_at", "num_prefill_tokens", "num_decode_tokens"}
        lat = next(((a, b, s) for a, b, s in CSV_LATENCY if {a, b} <= cols), None)
        if not need <= cols or lat is None:
            miss = sorted(need - cols) or ["measured_ttft_ms,measured_tpot_ms (or ttft_s,tpot_s)"]
            raise PdlabError(f"{path}:1: missing column(s) {', '.join(miss)} (expected arrived_at,"
                             f"num_prefill_tokens,num_decode_tokens,measured_ttft_ms,measured_tpot_ms)")
        kt, kp, scale = lat
        rows = []
        for ln, row in enumerate(reader, 2):
            where = f"{path}:{ln}"
            if None in row or any(v is None for v in row.values()):
                raise PdlabError(f"{where}: expected {len(cols)} fields")
            pout = _length(row["num_decode_tokens"], "num_decode_tokens", where)
            tp = row[kp]
            rows.append((where, _num(row["arrived_at"], "arrived_at", where),
                         _length(row["num_prefill_tokens"], "num_prefill_tokens", where), pout,
                         _num(row[kt], kt, where) * scale,
                         _num(tp, kp, where) * scale if pout > 1 or tp not in ("", None) else None))
    return _build(path, rows)


def _read_vllm_json(path: Path) -> MeasuredRun:
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise PdlabError(f"{path}: not valid JSON ({e})") from None
    keys = ("input_lens", "output_lens", "ttfts", "itls", "start_times")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in keys):
        miss = [k for k in keys if not isinstance(data, dict) or not isinstance(data.get(k), list)]
        raise PdlabError(f"{path}: missing per-request list(s) {', '.join(miss)} "
                         f"(save it with vllm bench serve --save-result --save-detailed)")
    n = len(data["input_lens"])
    for k in keys:
        if len(data[k]) != n:
            raise PdlabError(f"{path}: '{k}' has {len(data[k])} entries, 'input_lens' {n}")
    errors = data.get("errors") or [""] * n
    rows, failed = [], 0
    for i in range(n):
        where = f"{path}: request {i}"
        if i < len(errors) and errors[i]:
            failed += 1
            continue
        pout = _length(data["output_lens"][i], "output_lens", where)
        itls = data["itls"][i]
        if not isinstance(itls, list):
            raise PdlabError(f"{where}: 'itls' must be a list of seconds")
        gaps = [_num(g, "itls", where) for g in itls]
        rows.append((where, _num(data["start_times"][i], "start_times", where),
                     _length(data["input_lens"][i], "input_lens", where), pout,
                     _num(data["ttfts"][i], "ttfts", where, allow_zero=False),
                     sum(gaps) / (pout - 1) if pout > 1 else None))
    run = _build(path, rows)
    run.failed = failed
    return run


def read_measured(path: str | Path) -> MeasuredRun:
    """A measured run from a CSV or a vLLM ``bench serve`` result JSON."""
    path = Path(path)
    if not path.is_file():
        raise PdlabError(f"measured file {path} not found")
    return _read_vllm_json(path) if path.suffix == ".json" else _read_csv(path)
