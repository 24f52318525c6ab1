import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from pdlab.errors import PdlabError
from pdlab.metrics import SLO, goodput_search, per_request, summarize
from pdlab.request import Request, Sequence, Status


def done(i, arrival, times, scheduled=None):
    s = Sequence(Request(i, arrival, 10, len(times)))
    s.token_times = list(times)
    s.num_tokens += len(times)
    s.status = Status.FINISHED
    s.finish_time = times[-1]
    s.first_scheduled = arrival if scheduled is None else scheduled
    return s


def test_hand_computed_timeline():
    a = done(0, 0.0, [0.5, 0.6, 0.7, 1.2], scheduled=0.1)   # a 0.5 s stall before the last token
    b = done(1, 1.0, [1.2, 1.3])
    r = Sequence(Request(2, 2.0, 10, 3))
    r.status, r.reject_reason = Status.REJECTED, "too long"
    s = summarize([a, b, r])
    assert s["completed"] == 2 and s["rejected"] == 1 and s["reject_reasons"] == ["too long"]
    assert s["ttft_s"]["mean"] == pytest.approx((0.5 + 0.2) / 2)
    assert s["tpot_s"]["mean"] == pytest.approx(((1.2 - 0.5) / 3 + 0.1) / 2)
    assert s["itl_s"]["mean"] == pytest.approx((0.1 + 0.1 + 0.5 + 0.1) / 4)
    assert s["e2e_s"]["p50"] == pytest.approx((1.2 + 0.3) / 2)
    assert s["queue_s"]["mean"] == pytest.approx(0.05)
    assert s["duration_s"] == pytest.approx(1.3)
    assert s["throughput_tok_s"] == pytest.approx(6 / 1.3)


def test_slo_attainment_counts_rejected_as_late():
    reqs = [done(i, 0.0, [0.1 * (i + 1), 0.1 * (i + 1) + 0.01]) for i in range(9)]
    r = Sequence(Request(9, 0.0, 10, 2))
    r.status, r.reject_reason = Status.REJECTED, "x"
    s = summarize(reqs + [r], [SLO.parse("ttft:p50:0.55"), SLO.parse("ttft:p95:1.0")])
    rows = s["slo_attainment"]["slos"]
    assert rows[0]["met"] and not rows[1]["met"] and rows[1]["value_s"] is None
    # a request is within when it meets every threshold: TTFT 0.1..0.5 s (5 of 10) <= 0.55 s
    assert s["slo_attainment"]["requests_within"] == pytest.approx(0.5)


def test_itl_slo_per_request():
    a = done(0, 0.0, [0.1, 0.2, 0.3, 0.4])
    b = done(1, 0.0, [0.1, 0.9, 1.0, 1.1])
    s = summarize([a, b], [SLO.parse("itl:p50:0.2")])
    assert s["slo_attainment"]["requests_within"] == pytest.approx(1.0)   # b's median gap is 0.1
    s = summarize([a, b], [SLO.parse("itl:p100:0.2")])
    assert s["slo_attainment"]["requests_within"] == pytest.approx(0.5)
    assert not s["slo_attainment"]["all_met"]


@pytest.mark.parametrize("bad", ["ttft", "ttft:90:1", "foo:p90:1", "ttft:p0:1", "ttft:p90:-1", "ttft:pxx:1"])
def test_bad_slo_is_one_clear_error(bad):
    with pytest.raises(PdlabError, match="SLO"):
        SLO.parse(bad)


@given(st.floats(0.5, 500))
def test_goodput_search_finds_the_threshold(threshold):
    g = goodput_search(lambda r: r <= threshold)
    assert threshold * 0.97 <= g <= threshold


def test_goodput_zero_when_nothing_passes():
    assert goodput_search(lambda r: False) == 0.0


def test_per_request_itl_owner():
    arr = per_request([done(0, 0, [1, 2, 4]), done(1, 0, [1, 1.5])])
    assert np.allclose(arr["itl"], [1, 2, 0.5]) and list(arr["itl_owner"]) == [0, 0, 1]
    assert math.isnan(per_request([done(0, 0, [1])])["tpot"][0])


def test_compact_summary_equals_the_token_by_token_one(monkeypatch):
    """A run too big for one float per token is summarised from weighted step gaps: the same
    per-request arrays, the same ITL percentiles, the mean to rounding."""
    import numpy as np
    from pdlab import ServingConfig, run_serving
    from pdlab import metrics as M
    from pdlab.workload import make_requests
    for mode, blocks in (("chunked", None), ("aggregated", 400), ("disaggregated", 500)):
        res = run_serving(make_requests(300, 10.0, "sharegpt", seed=2), ServingConfig(mode=mode, num_gpus=None,
                                                                                   num_blocks=blocks))
        full, comp = M.per_request(res.sequences), M.per_request(res.sequences, compact=True)
        for k in ("ttft", "tpot", "e2e", "queue", "n_out"):
            np.testing.assert_array_equal(full[k], comp[k])
        assert comp["itl_weight"].sum() == full["itl"].size
        np.testing.assert_array_equal(np.sort(full["itl"]), np.sort(np.repeat(comp["itl"], comp["itl_weight"])))
        exact = M.stats(full["itl"])
        got = M.weighted_stats(comp["itl"], comp["itl_weight"])
        assert {k: v for k, v in got.items() if k != "mean"} == {k: v for k, v in exact.items() if k != "mean"}
        assert got["mean"] == pytest.approx(exact["mean"], rel=1e-12)
        small = M.summarize(res.sequences)
        monkeypatch.setattr(M, "COMPACT_TOKENS", 0)
        big = M.summarize(res.sequences)
        monkeypatch.undo()
        assert big["itl_s"]["p99"] == small["itl_s"]["p99"] and big["ttft_s"] == small["ttft_s"]
