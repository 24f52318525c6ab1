"""pdlab diagnose: each row of the symptom table fires on a workload built to have that pressure
and stays quiet on a healthy one; the evidence is computed right; bad input is one line, exit 2."""

import json

import numpy as np
import pytest

from pdlab.cli import main
from pdlab.config import ServingConfig
from pdlab.diagnose import evidence, observe, report
from pdlab.errors import PdlabError
from pdlab.lab import mystery
from pdlab.metrics import SLO
from pdlab.workload import Lengths, make_requests

SLOS = [SLO("ttft", 90, 0.5), SLO("tpot", 90, 0.05)]
N = 200


def diagnosis(reqs, cfg, slos=SLOS):
    rep = report(observe.simulate(reqs, cfg), cfg, slos)
    return rep, {r["name"]: r for r in rep["diagnosis"]["rows"]}


@pytest.fixture(scope="module")
def healthy():
    return diagnosis(make_requests(N, 1.5, "sharegpt"), ServingConfig(mode="chunked"))


def test_healthy_traffic_fires_nothing_and_says_so(healthy):
    rep, rows = healthy
    assert rep["diagnosis"]["ranked"] == []
    assert rep["diagnosis"]["verdict"].startswith("nothing is wrong")
    assert all(r["fired"] is False for r in rows.values()), {k: r["value"] for k, r in rows.items()}
    assert len(rep["checklist"]) == 7 and all(c["answer"] for c in rep["checklist"])


# each pressure, built on purpose: (workload, deployment, the row that must fire)
PRESSURES = {
    "prefill queueing": (lambda: make_requests(N, 30.0, "arxiv"), ServingConfig(mode="chunked")),
    "decode scheduling": (lambda: make_requests(N, 20.0, Lengths("fixed", a=512, b=1024)),
                          ServingConfig(mode="chunked")),
    "KV capacity": (lambda: make_requests(N, 8.0, Lengths("fixed", a=1024, b=512)),
                    ServingConfig(mode="chunked", num_blocks=600)),
    "phase interference": (lambda: make_requests(N, 10.0, "chat-long"), ServingConfig(mode="aggregated")),
    "missed prefix reuse": (lambda: mystery.agent(N, 3.0), ServingConfig(mode="chunked")),
}


@pytest.mark.parametrize("row", list(PRESSURES))
def test_each_row_fires_on_its_pressure(row, healthy):
    make, cfg = PRESSURES[row]
    rep, rows = diagnosis(make(), cfg)
    assert rows[row]["fired"] is True, rows[row]["value"]
    assert rows[row]["severity"] >= 1.0 and row in rep["diagnosis"]["ranked"]
    assert healthy[1][row]["fired"] is False
    assert rows[row]["test"] and rows[row]["inspect"]


def test_interference_ranks_first_and_names_the_fix():
    rep, _ = diagnosis(make_requests(N, 10.0, "chat-long"), ServingConfig(mode="aggregated"))
    assert rep["diagnosis"]["ranked"][0] == "phase interference"
    assert "chunked prefill" in rep["diagnosis"]["first_to_inspect"]


def test_the_fix_quiets_the_row():
    """Turning on the prefix cache quiets missed reuse. Chunked prefill removes the stutter (ITL)
    but not the wait: short prompts still queue behind a long prompt's chunks (TTFT)."""
    agent = mystery.agent(N, 3.0)
    assert diagnosis(agent, ServingConfig(mode="chunked", prefix_cache=True))[1]["missed prefix reuse"]["fired"] is False
    chat = make_requests(N, 10.0, "chat-long")
    agg = diagnosis(chat, ServingConfig(mode="aggregated"))[0]["evidence"]["long_prompts"]
    chunked = diagnosis(chat, ServingConfig(mode="chunked", chunk_size=256))[0]["evidence"]["long_prompts"]
    assert agg["itl_ratio"] >= 3 > chunked["itl_ratio"]
    assert chunked["ttft_ratio"] >= 3


def test_kv_pressure_ranks_above_the_queueing_it_causes():
    make, cfg = PRESSURES["KV capacity"]
    rep, rows = diagnosis(make(), cfg)
    assert rows["prefill queueing"]["fired"] and rep["diagnosis"]["ranked"][0] == "KV capacity"


def test_coverage_matches_brute_force():
    rng = np.random.default_rng(1)
    lo = rng.uniform(0, 10, 30)
    hi = lo + rng.uniform(0, 1, 30)
    cover = evidence._coverage(lo, hi)
    a = rng.uniform(-1, 12, 500)
    b = a + rng.uniform(0, 0.5, 500)
    brute = np.array([np.any((lo < y) & (hi > x)) for x, y in zip(a, b)])
    assert np.array_equal(cover(b) - cover(a) > 1e-12, brute)


def test_reusable_share_of_the_mooncake_trace_matches_its_readme():
    from pdlab.paths import TRACES
    from pdlab.traces import read_trace
    reqs = read_trace(TRACES / "mooncake_conv.jsonl")
    obs = observe.Observation("measured", "", reqs, np.array([r.prompt_len for r in reqs]),
                              np.array([r.max_new_tokens for r in reqs]), np.zeros(len(reqs)), np.zeros(len(reqs)))
    assert evidence.reuse(obs)["reusable_share"] == pytest.approx(0.366, abs=0.001)


def test_queueing_share_and_binding_slo_by_hand():
    """Two requests; queue and TTFT known: the share is sum(queue) / sum(TTFT)."""
    from pdlab.request import Request
    reqs = [Request(0, 0.0, 100, 10), Request(1, 1.0, 100, 10)]
    obs = observe.Observation("measured", "", reqs, np.array([100, 100]), np.array([10, 10]),
                              ttft=np.array([1.0, 3.0]), tpot=np.array([0.01, 0.2]), queue=np.array([0.5, 2.5]))
    from pdlab.run import cost_model_for
    q = evidence.queueing(obs, cost_model_for(ServingConfig()))
    assert q["queue_share"] == pytest.approx(3.0 / 4.0)
    b = evidence.binding(obs, [SLO("ttft", 50, 10.0), SLO("tpot", 50, 0.1)])
    assert b["binding"] == "tpot:p50:0.1" and b["requests_within_all"] == 0.5


# ---- measured inputs ---------------------------------------------------------------------------
def write_measured(tmp_path, rows, header="arrived_at,num_prefill_tokens,num_decode_tokens,ttft_s,tpot_s"):
    p = tmp_path / "measured.csv"
    p.write_text(header + "\n" + "\n".join(rows) + "\n")
    return p


def test_measured_csv_is_read_not_simulated(tmp_path, capsys):
    rows = [f"{i * 0.5:.2f},{200 + 10 * i},50,{0.05 + 0.01 * i:.3f},0.02" for i in range(40)]
    p = write_measured(tmp_path, rows)
    rc = main(["diagnose", str(p), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["source"] == "measured" and out["num_requests"] == 40
    assert out["evidence"]["queueing"]["ttft"]["p50"] == pytest.approx(np.median([0.05 + 0.01 * i for i in range(40)]))
    kv = {r["name"]: r for r in out["diagnosis"]["rows"]}["KV capacity"]
    assert kv["fired"] is None and "not measured" in kv["value"]


def test_vllm_detailed_json_keeps_the_gaps(tmp_path):
    data = {"input_lens": [100, 2000, 50], "output_lens": [3, 4, 2], "ttfts": [0.05, 0.4, 0.1],
            "itls": [[0.01, 0.02], [0.01, 0.01, 0.04], []], "start_times": [0.0, 0.5, 0.7],
            "errors": ["", "", "timeout"]}
    p = tmp_path / "bench.json"
    p.write_text(json.dumps(data))
    obs = observe.read_measured(p)
    assert obs.n == 3 and obs.rejected == 1 and np.isinf(obs.ttft[2])
    assert obs.tpot[1] == pytest.approx(0.02) and obs.itl.size == 5 and list(obs.itl_owner) == [0, 0, 1, 1, 1]
    del data["itls"]
    p.write_text(json.dumps(data))
    with pytest.raises(PdlabError, match="itls"):
        observe.read_measured(p)


@pytest.mark.parametrize("rows, header, where, what", [
    (["0,100,10,0.1"], "arrived_at,num_prefill_tokens,num_decode_tokens,ttft_s", ":1:", "missing column"),
    (["0,100,10,0.1,0.01", "1,-5,10,0.1,0.01"], None, ":3:", "num_prefill_tokens"),
    (["1,100,10,0.1,0.01", "0.5,100,10,0.1,0.01"], None, ":3:", "not sorted"),
    (["0,100,10,0.1,0.01", "1,100,10,-0.2,0.01"], None, ":3:", "ttft_s"),
])
def test_bad_measured_input_names_the_line_and_exits_2(tmp_path, capsys, rows, header, where, what):
    p = write_measured(tmp_path, rows, *( [header] if header else []))
    rc = main(["diagnose", str(p)])
    err = capsys.readouterr().err
    assert rc == 2 and where in err and what in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unsorted_trace_csv_names_the_line(tmp_path, capsys):
    p = tmp_path / "t.csv"
    p.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,3\n2,10,3\n1,10,3\n")
    assert main(["diagnose", str(p)]) == 2
    assert "t.csv:4: 'arrived_at' goes back in time" in capsys.readouterr().err


def test_unsorted_jsonl_and_missing_key_name_the_line(tmp_path, capsys):
    p = tmp_path / "t.jsonl"
    p.write_text('{"timestamp": 5, "input_length": 10, "output_length": 3}\n'
                 '{"timestamp": 2, "input_length": 10, "output_length": 3}\n')
    assert main(["diagnose", str(p)]) == 2
    assert "t.jsonl:2: 'timestamp' goes back in time" in capsys.readouterr().err
    p.write_text('{"timestamp": 5, "output_length": 3}\n')
    assert main(["diagnose", str(p)]) == 2
    assert "t.jsonl:1: missing 'input_length'" in capsys.readouterr().err


def test_diagnose_cli_text_json_and_html(tmp_path, capsys):
    html = tmp_path / "d.html"
    rc = main(["diagnose", "--workload", "chat-long", "--num-requests", "120", "--rate", "10", "--mode",
               "aggregated", "--slo", "ttft:p90:0.5", "--html", str(html)])
    out = capsys.readouterr().out
    assert rc == 0 and "Verdict: " in out and "phase interference" in out and "simulated" in out
    assert html.stat().st_size > 100_000 and "plotly" in html.read_text()[:200_000]
    rc = main(["diagnose", "--workload", "chat-long", "--num-requests", "120", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and {"evidence", "diagnosis", "checklist", "clock"} <= d.keys()
