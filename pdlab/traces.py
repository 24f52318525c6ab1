"""Trace files in and out.

    CSV   ``arrived_at,num_prefill_tokens,num_decode_tokens`` (Splitwise/Vidur convention;
          ``arrived_at`` optional: without it arrivals are generated; Vidur's derived
          ``num_total_tokens,pd_ratio`` are accepted and ignored; any other column is an error,
          so that a misspelt ``arrived_at`` never silently turns a timed trace into Poisson)
    JSONL Mooncake: ``{"timestamp": ms, "input_length", "output_length", "hash_ids": [...]}``
          where equal hash ids name equal 512-token prefix blocks

A malformed row raises ``PdlabError`` naming the file and line.
"""

from __future__ import annotations

import csv
import difflib
import json
from pathlib import Path

from .errors import PdlabError
from .request import Request

MOONCAKE_BLOCK = 512   # tokens per hash id in the Mooncake trace
CSV_REQUIRED = ("num_prefill_tokens", "num_decode_tokens")
CSV_COLUMNS = ("arrived_at",) + CSV_REQUIRED
CSV_IGNORED = ("num_total_tokens", "pd_ratio")   # Vidur's derived columns


def check_csv_header(cols: list[str], where: str) -> None:
    """Every required column present and no unknown one; the error names the columns found and
    the nearest known name of a misspelt one."""
    found = f"found: {', '.join(cols) if cols else '(empty header)'}"
    known = CSV_COLUMNS + CSV_IGNORED
    unknown = [c for c in cols if c not in known]
    if unknown:
        hints = []
        for c in unknown:
            near = difflib.get_close_matches(c.strip().lower(), known, n=1, cutoff=0.6)
            hints.append(f"'{c}'" + (f" (did you mean '{near[0]}'?)" if near else ""))
        raise PdlabError(f"{where}: unknown column(s) {', '.join(hints)}; expected "
                         f"[arrived_at,]{','.join(CSV_REQUIRED)}; {found}")
    missing = [c for c in CSV_REQUIRED if c not in cols]
    if missing:
        raise PdlabError(f"{where}: missing column(s) {', '.join(missing)}; expected "
                         f"[arrived_at,]{','.join(CSV_REQUIRED)}; {found}")


def _int_field(row: dict, key: str, where: str) -> int:
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


def _rows(rows, show: bool, path: Path):
    if not show:
        return rows
    from .progress import progress
    return progress(rows, desc=f"reading {path.name}", unit="req")


def read_trace(path: str | Path, show_progress: bool = False) -> list[Request]:
    """Requests from a CSV or Mooncake JSONL trace. Arrival is -1.0 where the file has none
    (``has_arrivals`` tells); a malformed row raises PdlabError naming file and line.
    ``show_progress``: a bar on stderr for a long file (the CLI's)."""
    path = Path(path)
    if not path.is_file():
        raise PdlabError(f"trace file {path} not found")
    reqs: list[Request] = []
    if path.suffix == ".jsonl":
        with path.open() as f:
            for ln, line in enumerate(_rows(f, show_progress, path), 1):
                if not line.strip():
                    continue
                where = f"{path}:{ln}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise PdlabError(f"{where}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise PdlabError(f"{where}: expected a JSON object")
                t = _time_field(row.get("timestamp"), "timestamp", where, 1e-3)
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
        cols = list(reader.fieldnames or [])
        check_csv_header(cols, f"{path}:1")
        timed = "arrived_at" in cols
        for ln, row in enumerate(_rows(reader, show_progress, path), 2):
            where = f"{path}:{ln}"
            if None in row or any(v is None for v in row.values()):
                raise PdlabError(f"{where}: expected {len(cols)} fields")
            t = _time_field(row["arrived_at"], "arrived_at", where) if timed else -1.0
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
