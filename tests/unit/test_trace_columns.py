"""A well-formed CSV trace is read as numpy columns; the requests are exactly what the row-by-row
reader gives, and a malformed file still gets the row reader's one-line error."""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pdlab import traces
from pdlab.errors import PdlabError

rows_st = st.lists(st.tuples(st.floats(0, 1e6, allow_nan=False), st.integers(1, 10**6), st.integers(1, 10**5)),
                   min_size=1, max_size=50)


def _slow(path, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(traces, "_read_csv_fast", lambda p: None)
        return traces.read_trace(path)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows_st, st.sampled_from(["repr", "%.6f", "%g"]), st.booleans())
def test_columns_equal_the_row_reader(tmp_path_factory, monkeypatch, rows, fmt, timed):
    path = tmp_path_factory.mktemp("t") / "trace.csv"
    if timed:       # timestamps go forward (unsorted ones are an error naming the line: test_diagnose.py)
        rows = sorted(rows)
    head = "arrived_at,num_prefill_tokens,num_decode_tokens" if timed else "num_prefill_tokens,num_decode_tokens"
    lines = [head] + [(f"{(repr(t) if fmt == 'repr' else fmt % t)},{p},{o}" if timed else f"{p},{o}")
                      for t, p, o in rows]
    path.write_text("\n".join(lines) + "\n")
    fast = traces._read_csv_fast(path)
    assert fast is not None
    assert fast == _slow(path, monkeypatch)
    assert all(type(r.prompt_len) is int and type(r.arrival) is float for r in fast)


def test_shipped_traces_read_the_same(monkeypatch):
    from pdlab.paths import TRACES
    for name in ("sharegpt_8k.csv", "arxiv_4k.csv", "azure_conv.csv"):
        assert traces._read_csv_fast(TRACES / name) == _slow(TRACES / name, monkeypatch)


@pytest.mark.parametrize("body, msg", [
    ("1.0,10,5\n2.0,x,5\n", ":3: 'num_prefill_tokens' is 'x', not a number"),
    ("1.0,10,5\n2.0,0,5\n", ":3: 'num_prefill_tokens' must be a whole number >= 1"),
    ("1.0,10,5\n-1,10,5\n", ":3: 'arrived_at' must be a time >= 0"),
    ("1.0,10,5\n2.0,10\n", ":3: expected 3 fields"),
])
def test_a_bad_row_still_names_its_line(tmp_path, body, msg):
    path = tmp_path / "bad.csv"
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n" + body)
    assert traces._read_csv_fast(path) is None
    with pytest.raises(PdlabError, match=msg.replace(".", r"\.").replace("'", "'")):
        traces.read_trace(path)
