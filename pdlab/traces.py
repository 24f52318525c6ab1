"""Trace files in and out.

    CSV   ``arrived_at,num_prefill_tokens,num_decode_tokens`` (Splitwise/Vidur convention;
          ``arrived_at`` optional: without it arrivals are generated; Vidur's derived
          ``num_total_tokens,pd_ratio`` are accepted and ignored; any other column is an error,
          so that a misspelt ``arrived_at`` never silently turns a timed trace into Poisson)
    JSONL Mooncake: ``{"timestamp": ms, "input_length", "output_length", "hash_ids": [...]}``
          where equal hash ids name equal 512-token prefix blocks (an optional ``session_id``)
    CSV with sessions: ``session_id,arrived_at,num_prefill_tokens,num_decode_tokens`` and either
          ``hash_ids`` (block ids separated by spaces; ``hash_block`` tokens each, a column,
          default 512 as in Mooncake) or ``prefix_len`` (leading prompt tokens that repeat the
          session's previous prompt and answer; pdlab names the blocks, 16 tokens each)

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


SESSION_COLUMNS = ("session_id", "hash_ids", "hash_block", "prefix_len")   # a session trace's own columns


def check_csv_header(cols: list[str], where: str, extra: tuple[str, ...] = ()) -> None:
    """Every required column present and no unknown one; the error names the columns found and
    the nearest known name of a misspelt one. ``extra``: further known columns."""
    found = f"found: {', '.join(cols) if cols else '(empty header)'}"
    known = CSV_COLUMNS + CSV_IGNORED + extra
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


def _rows(rows, show: bool, path: Path):
    if not show:
        return rows
    from .progress import progress
    return progress(rows, desc=f"reading {path.name}", unit="req")


def _read_csv_fast(path: Path) -> list[Request] | None:
    """A well-formed CSV trace read as numpy columns in one pass (a million lines in about a
    second; no dict per row), or None when anything is off: the row-by-row reader then finds
    and names the bad line."""
    import numpy as np
    with path.open(newline="") as f:
        cols = next(csv.reader(f), None)
    if not cols or any(c not in CSV_COLUMNS + CSV_IGNORED for c in cols) or \
            any(c not in cols for c in CSV_REQUIRED):
        return None
    use = [cols.index(c) for c in CSV_COLUMNS if c in cols]
    try:
        data = np.loadtxt(path, delimiter=",", skiprows=1, usecols=use, dtype=float, ndmin=2,
                          encoding="utf-8", comments=None)
    except (ValueError, IndexError):
        return None
    if data.shape[0] == 0:
        return None
    timed = "arrived_at" in cols
    t = data[:, 0] if timed else np.full(data.shape[0], -1.0)
    pin, pout = data[:, -2], data[:, -1]
    if timed and not (np.all(t >= 0) and np.all(np.isfinite(t)) and np.all(np.diff(t) >= 0)):
        return None     # unsorted too: the row reader names the line that goes back in time
    for x in (pin, pout):
        if not (np.all(x >= 1) and np.all(x == np.floor(x)) and np.all(np.isfinite(x))):
            return None
    return [Request(i, a, p, o) for i, (a, p, o) in
            enumerate(zip(t.tolist(), pin.astype(np.int64).tolist(), pout.astype(np.int64).tolist()))]


def read_trace(path: str | Path, show_progress: bool = False) -> list[Request]:
    """Requests from a CSV or Mooncake JSONL trace. Arrival is -1.0 where the file has none
    (``has_arrivals`` tells); a malformed row raises PdlabError naming file and line.
    ``show_progress``: a bar on stderr for a long file (the CLI's)."""
    path = Path(path)
    if not path.is_file():
        raise PdlabError(f"trace file {path} not found")
    reqs: list[Request] = []
    sessions = _SessionClock()
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
                if "timestamp" not in row:
                    raise PdlabError(f"{where}: missing 'timestamp'")
                t = _time_field(row.get("timestamp"), "timestamp", where, 1e-3)
                if reqs and row.get("session_id") is None:   # a session trace orders each session (below)
                    _check_order(t, reqs[-1].arrival, "timestamp", where)
                pin = _int_field(row, "input_length", where)
                pout = _int_field(row, "output_length", where)
                hashes = row.get("hash_ids")
                if hashes is not None and not (isinstance(hashes, list) and all(type(h) is int for h in hashes)):
                    raise PdlabError(f"{where}: 'hash_ids' must be a list of integers, got {str(hashes)[:60]}")
                sid = row.get("session_id")
                if sid is not None:
                    sessions.check(sid, t, where)
                reqs.append(Request(len(reqs), t, pin, pout,
                                    block_hashes=None if hashes is None else tuple(hashes),
                                    hash_block=MOONCAKE_BLOCK, session_id=sid))
        if not reqs:
            raise PdlabError(f"{path}: no requests in the file")
        return reqs
    fast = _read_csv_fast(path)
    if fast is not None:
        return fast
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        # spaces after the commas and a spreadsheet's byte-order mark are not part of a name
        cols = [c.strip().lstrip("\ufeff") for c in reader.fieldnames or []]
        reader.fieldnames = cols
        if "session_id" in cols:
            check_csv_header(cols, f"{path}:1", SESSION_COLUMNS)
            return _read_sessions(path, reader, cols)
        check_csv_header(cols, f"{path}:1")
        timed = "arrived_at" in cols
        for ln, row in enumerate(_rows(reader, show_progress, path), 2):
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


class _SessionClock:
    """A session's turns must arrive in order: each no earlier than the one before."""

    def __init__(self):
        self.last: dict = {}

    def check(self, sid, t: float, where: str) -> None:
        if sid in self.last and t < self.last[sid][0]:
            raise PdlabError(f"{where}: session {sid} goes back in time (this turn at {t:g} s, "
                             f"its previous turn at {self.last[sid][0]:g} s on {self.last[sid][1]})")
        self.last[sid] = (t, f"line {where.rsplit(':', 1)[-1]}")


def _read_sessions(path: Path, reader, cols) -> list[Request]:
    if "arrived_at" not in cols:
        raise PdlabError(f"{path}:1: a session trace needs an arrived_at column (turns are ordered in time)")
    by_hash, by_len = "hash_ids" in cols, "prefix_len" in cols
    if by_hash == by_len:
        raise PdlabError(f"{path}:1: a session trace needs exactly one of the columns hash_ids and prefix_len")
    clock, reqs = _SessionClock(), []
    stream: dict = {}        # session -> (block ids of its conversation so far, its length in tokens)
    fresh = [1 << 41]        # ids pdlab gives new blocks

    def new_ids(n):
        fresh[0] += n
        return list(range(fresh[0] - n, fresh[0]))

    for ln, row in enumerate(reader, 2):
        where = f"{path}:{ln}"
        if None in row or any(v is None for v in row.values()):
            raise PdlabError(f"{where}: expected {len(cols)} fields")
        sid = row["session_id"].strip()
        if not sid:
            raise PdlabError(f"{where}: empty session_id")
        t = _time_field(row["arrived_at"], "arrived_at", where)
        clock.check(sid, t, where)
        pin = _int_field(row, "num_prefill_tokens", where)
        pout = _int_field(row, "num_decode_tokens", where)
        if by_hash:
            raw = row["hash_ids"].split()
            try:
                ids = tuple(int(x) for x in raw)
            except ValueError:
                raise PdlabError(f"{where}: 'hash_ids' must be integers separated by spaces, "
                                 f"got {row['hash_ids'][:60]!r}") from None
            hb = _int_field(row, "hash_block", where) if "hash_block" in cols else MOONCAKE_BLOCK
        else:
            hb = 16
            try:
                p = int(row["prefix_len"])
            except ValueError:
                raise PdlabError(f"{where}: 'prefix_len' is {row['prefix_len']!r}, not a whole number") from None
            ids_before, length = stream.get(sid, ([], 0))
            if p < 0 or p > min(length, pin):
                raise PdlabError(f"{where}: prefix_len {p} must be between 0 and "
                                 f"{min(length, pin)} (the session's previous prompt and answer, and this prompt)")
            keep = p // hb
            ids = tuple(ids_before[:keep]) + tuple(new_ids(-(-pin // hb) - keep))
            full = pin // hb       # complete prompt blocks carry over; the rest is new content
            stream[sid] = (list(ids[:full]) + new_ids(-(-(pin + pout) // hb) - full), pin + pout)
        reqs.append(Request(len(reqs), t, pin, pout, block_hashes=ids, hash_block=hb, session_id=sid))
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
    if any(r.session_id is not None for r in requests):
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["session_id", "arrived_at", "num_prefill_tokens", "num_decode_tokens", "hash_ids",
                        "hash_block"])
            for r in requests:
                w.writerow([r.session_id, f"{r.arrival:.6f}", r.prompt_len, r.max_new_tokens,
                            " ".join(map(str, r.block_hashes or ())), r.hash_block])
        return
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arrived_at", "num_prefill_tokens", "num_decode_tokens"])
        for r in requests:
            w.writerow([f"{r.arrival:.6f}", r.prompt_len, r.max_new_tokens])
