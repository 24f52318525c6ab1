import numpy as np
import pytest

from pdlab.errors import PdlabError
from pdlab.traces import has_arrivals, read_trace, write_trace
from pdlab.workload import PRESETS, Lengths, arrivals, make_requests, preset_pairs, with_rate


def test_same_seed_same_requests_and_rate_only_rescales():
    a = make_requests(200, 4, "sharegpt", seed=7)
    b = make_requests(200, 4, "sharegpt", seed=7)
    assert a == b
    c = with_rate(a, 8, seed=7)
    assert [r.prompt_len for r in c] == [r.prompt_len for r in a]
    assert c[-1].arrival == pytest.approx(a[-1].arrival / 2)


def test_poisson_and_bursty_rates():
    rng = np.random.default_rng(0)
    t = arrivals(20000, 5.0, rng)
    assert 20000 / t[-1] == pytest.approx(5.0, rel=0.03)
    gaps = np.diff(arrivals(20000, 5.0, np.random.default_rng(1), burstiness=4.0))
    assert (gaps.std() / gaps.mean()) ** 2 == pytest.approx(4.0, rel=0.15)
    with pytest.raises(PdlabError, match="rate"):
        arrivals(3, 0, rng)


@pytest.mark.parametrize("name,mean_in,mean_out", [("sharegpt", 2340, 439), ("arxiv", 2588, 291),
                                                   ("azure-conv", 1155, 211), ("mooncake-conv", 12035, 343)])
def test_presets_match_the_trace_statistics(name, mean_in, mean_out):
    pin, pout = preset_pairs(name)
    assert pin.mean() == pytest.approx(mean_in, rel=0.01)
    assert pout.mean() == pytest.approx(mean_out, rel=0.01)
    reqs = make_requests(4000, 1, name, seed=0)
    assert np.mean([r.prompt_len for r in reqs]) == pytest.approx(mean_in, rel=0.08)


def test_length_kinds():
    rng = np.random.default_rng(0)
    pin, pout = Lengths("uniform", a=10, a2=20, b=1, b2=3).sample(500, rng)
    assert pin.min() >= 10 and pin.max() <= 20 and pout.max() <= 3
    pin, _ = Lengths("lognormal", a=1000, b=100).sample(4000, rng)
    assert np.median(pin) == pytest.approx(1000, rel=0.1)
    pin, _ = PRESETS["chat-long"].sample(4000, rng)
    share = np.mean(pin == PRESETS["chat-long"].long_len)
    assert share == pytest.approx(PRESETS["chat-long"].long_share, abs=0.02)


def test_csv_and_jsonl_roundtrip(tmp_path):
    reqs = make_requests(50, 3, "sharegpt", seed=2)
    for name in ("t.csv", "t.jsonl"):
        write_trace(reqs, tmp_path / name)
        back = read_trace(tmp_path / name)
        assert [(r.prompt_len, r.max_new_tokens) for r in back] == [(r.prompt_len, r.max_new_tokens) for r in reqs]
        assert np.allclose([r.arrival for r in back], [r.arrival for r in reqs], atol=1e-3)


def test_shipped_traces_read():
    azure = read_trace("data/traces/azure_conv.csv")
    assert len(azure) == 19366 and has_arrivals(azure)
    share = read_trace("data/traces/sharegpt_8k.csv")
    assert len(share) == 30731 and not has_arrivals(share)
    moon = read_trace("data/traces/mooncake_conv.jsonl")
    assert len(moon) == 12031 and moon[0].block_hashes[:3] == (0, 1, 2)


@pytest.mark.parametrize("text,msg", [
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,5\n0.5,abc,5\n", ":3: 'num_prefill_tokens' is 'abc'"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,5\n0.5,10\n", ":3: expected 3 fields"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n-1,10,5\n", ":2: 'arrived_at' must be a time"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,0,5\n", ":2: 'num_prefill_tokens' must be a whole number"),
    ("a,b\n1,2\n", ":1: unknown column(s) 'a', 'b'; expected [arrived_at,]num_prefill_tokens,num_decode_tokens; found: a, b"),
    ("arrived_at,num_prefill_tokens\n0,5\n", ":1: missing column(s) num_decode_tokens; expected"),
    ("arrivd_at,num_prefill_tokens,num_decode_tokens\n0.0,10,5\n",
     ":1: unknown column(s) 'arrivd_at' (did you mean 'arrived_at'?)"),
    ("arrived_at,num_prefil_tokens,num_decode_tokens\n0.0,10,5\n",
     "(did you mean 'num_prefill_tokens'?); expected [arrived_at,]num_prefill_tokens,num_decode_tokens; "
     "found: arrived_at, num_prefil_tokens, num_decode_tokens"),
    ("", ":1: missing column(s) num_prefill_tokens, num_decode_tokens; expected [arrived_at,]"
         "num_prefill_tokens,num_decode_tokens; found: (empty header)"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n", "no requests"),
])
def test_malformed_csv_names_file_and_line(tmp_path, text, msg):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(PdlabError) as e:
        read_trace(p)
    assert "bad.csv" in str(e.value) and msg in str(e.value)


def test_csv_header_spaces_and_bom_are_not_part_of_a_name(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("\ufeffarrived_at, num_prefill_tokens, num_decode_tokens\n0.5, 10, 5\n", encoding="utf-8")
    (r,) = read_trace(p)
    assert (r.arrival, r.prompt_len, r.max_new_tokens) == (0.5, 10, 5)


def test_malformed_jsonl_names_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"timestamp": 0, "input_length": 5, "output_length": 2}\n{"timestamp": 1, "input_length": 5\n')
    with pytest.raises(PdlabError, match="bad.jsonl:2: not valid JSON"):
        read_trace(p)
    p.write_text('{"timestamp": 0, "input_length": 5, "output_length": 2, "hash_ids": ["x"]}\n')
    with pytest.raises(PdlabError, match=":1: 'hash_ids'"):
        read_trace(p)


def test_missing_trace_file():
    with pytest.raises(PdlabError, match="not found"):
        read_trace("nope.csv")
