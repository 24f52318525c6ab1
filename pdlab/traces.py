"""Trace files in and out.

    CSV   ``arrived_at,num_prefill_tokens,num_decode_tokens`` (Splitwise/Vidur convention;
          ``arrived_at`` optional: without it arrivals are generated)
    JSONL Mooncake: ``{"timestamp": ms, "input_length", "output_length", "hash_ids": [...]}``
          where equal hash ids name equal 512-token prefix blocks

A malformed row raises ``PdlabError`` naming the file and line.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .errors import PdlabError
from .request import Request

MOONCAKE_BLOCK = 512   # tokens per hash id in the Mooncake trace


def _int_field(row: dict, key: str, where: str) -> int:
    if key not in row:
        raise PdlabError(f"{where}: missing '{key}'")
    raw = row.get(key)
    try:
        v = float(raw)
    except (TypeError, ValueError):
        raise PdlabError(f"{where}: '{key}' is {raw!r}, not a number") from None
    if v != int(v) or v < 1:
        raise PdlabError(f"{where}: '{key}' must be a whole number >= 1, got {raw!r}")
    return int(v)


def _time_field(raw, key: str, where: str, scale: float = 1.0) -> float:
    try:
        v = float(raw) * scale
    except (TypeError, ValueError):
        raise PdlabError(f"{where}: '{key}' is {raw!r}, not a number") from None
    if not v >= 0 or v == float("inf"):
        raise PdlabError(f"{where}: '{key}' must be a time >= 0, got {raw!r}")
    return v


def _check_order(t: float, prev: float, key: str, where: str) -> None:
    if t < prev:
        raise PdlabError(f"{where}: '{key}' goes back in time ({t:g} s after {prev:g} s on the line before); "
                         f"sort the trace by arrival")


def read_trace(path: str | Path) -> list[Request]:
    """Requests from a CSV or Mooncake JSONL trace. Arrival is -1.0 where the file has none
    (``has_arrivals`` tells); a malformed row raises PdlabError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise PdlabError(f"trace file {path} not found")
    reqs: list[Request] = []
    if path.suffix == ".jsonl":
        with path.open() as f:
            for ln, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path}:{ln}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise PdlabError(f"{where}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise PdlabError(f"{where}: expected a JSON object")
                if "timestamp" not in row:
                    raise PdlabError(f"{where}: missing 'timestamp'")
                t = _time_field(row.get("timestamp"), "timestamp", where, 1e-3)
                if reqs:
                    _check_order(t, reqs[-1].arrival, "timestamp", where)
                pin = _int_field(row, "input_length", where)
                pout = _int_field(row, "output_length", where)
                hashes = row.get("hash_ids")
                if hashes is not None and not (isinstance(hashes, list) and all(isinstance(h, int) for h in hashes)):
                    raise PdlabError(f"{where}: 'hash_ids' must be a list of integers")
                reqs.append(Request(len(reqs), t, pin, pout,
                                    block_hashes=None if hashes is None else tuple(hashes),
                                    hash_block=MOONCAKE_BLOCK))
        if not reqs:
            raise PdlabError(f"{path}: no requests in the file")
        return reqs
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        missing = {"num_prefill_tokens", "num_decode_tokens"} - set(cols)
        if missing:
            raise PdlabError(f"{path}:1: missing column(s) {', '.join(sorted(missing))} "
                             f"(expected arrived_at,num_prefill_tokens,num_decode_tokens)")
        timed = "arrived_at" in cols
        for ln, row in enumerate(reader, 2):
            where = f"{path}:{ln}"
            if None in row or any(v is None for v in row.values()):
                raise PdlabError(f"{where}: expected {len(cols)} fields")
            t = _time_field(row["arrived_at"], "arrived_at", where) if timed else -1.0
            if timed and reqs:
                _check_order(t, reqs[-1].arrival, "arrived_at", where)
            reqs.append(Request(len(reqs), t, _int_field(row, "num_prefill_tokens", where),
                                _int_field(row, "num_decode_tokens", where)))
    if not reqs:
        raise PdlabError(f"{path}: no requests in the file")
    return reqs


def has_arrivals(requests: list[Request]) -> bool:
    return all(r.arrival >= 0 for r in requests)


def write_trace(requests: list[Request], path: str | Path) -> None:
    """Write the Splitwise/Vidur CSV (or Mooncake JSONL if ``path`` ends in .jsonl)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        with path.open("w") as f:
            for r in requests:
                row = {"timestamp": int(round(r.arrival * 1000)), "input_length": r.prompt_len,
                       "output_length": r.max_new_tokens}
                if r.block_hashes is not None:
                    row["hash_ids"] = list(r.block_hashes)
                f.write(json.dumps(row) + "\n")
        return
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arrived_at", "num_prefill_tokens", "num_decode_tokens"])
        for r in requests:
            w.writerow([f"{r.arrival:.6f}", r.prompt_len, r.max_new_tokens])
