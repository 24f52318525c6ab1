"""The CLI contract: JSON keys, determinism, one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest

from pdlab.cli import main

KEYS = {"mode", "num_requests", "completed", "rejected", "gpus", "duration_s", "throughput_rps",
        "throughput_tok_s", "ttft_s", "tpot_s", "itl_s", "e2e_s"}


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("mode", ["aggregated", "chunked", "disaggregated"])
def test_simulate_json_contract_and_determinism(capsys, mode):
    argv = ["simulate", "--mode", mode, "--rate", "3", "--num-requests", "60", "--json",
            "--slo", "ttft:p90:2", "--slo", "itl:p99:0.2"]
    rc, out, _ = run(capsys, *argv)
    assert rc == 0
    d = json.loads(out)
    assert KEYS <= d.keys()
    for k in ("ttft_s", "tpot_s", "itl_s", "e2e_s"):
        assert {"mean", "p50", "p90", "p99"} <= d[k].keys()
    assert d["mode"] == mode and d["num_requests"] == 60 and d["completed"] + d["rejected"] == 60
    assert "slo_attainment" in d and len(d["slo_attainment"]["slos"]) == 2
    assert d["gpus"] == (2 if mode == "disaggregated" else 1)
    assert run(capsys, *argv)[1] == out          # same seed, same output


def test_goodput_json(capsys):
    rc, out, _ = run(capsys, "goodput", "--mode", "chunked", "--workload", "azure-conv", "--num-requests", "150",
                     "--slo", "ttft:p90:1", "--slo", "tpot:p90:0.05", "--json", "--num-gpus", "2")
    assert rc == 0
    d = json.loads(out)
    assert d["goodput_rps"] > 0 and d["goodput_rps_per_gpu"] == pytest.approx(d["goodput_rps"] / 2)


def test_trace_and_fixed_lengths(capsys, tmp_path):
    rc, out, _ = run(capsys, "simulate", "--trace", "data/traces/azure_conv.csv", "--num-requests", "100", "--json")
    assert rc == 0 and json.loads(out)["completed"] == 100
    rc, out, _ = run(capsys, "simulate", "--input-len", "100", "--output-len", "10", "--num-requests", "20", "--json")
    d = json.loads(out)
    assert d["output_tokens"] == 200


@pytest.mark.parametrize("argv,msg", [
    (["simulate", "--gpu", "b300"], "unknown GPU 'b300'"),
    (["simulate", "--model", "gpt9"], "unknown model"),
    (["simulate", "--mode", "split"], "unknown mode"),
    (["simulate", "--chunk-size", "0"], "--chunk-size must be >= 1"),
    (["simulate", "--chunk-size", "-5"], "--chunk-size must be >= 1"),
    (["simulate", "--rate", "0"], "--rate must be > 0"),
    (["simulate", "--rate", "fast"], "--rate must be a number"),
    (["simulate", "--mode", "disaggregated", "--num-gpus", "2", "--prefill-gpus", "2", "--decode-gpus", "1"],
     "need 3 replicas"),
    (["simulate", "--link", "carrier-pigeon"], "unknown link"),
    (["simulate", "--link", "-5"], "link bandwidth must be a positive number of GB/s, got -5"),
    (["simulate", "--tp", "3"], "--tp 3 does not divide llama-3-8b's heads (32)"),
    (["simulate", "--workload", "nope"], "unknown workload preset"),
    (["simulate", "--trace", "missing.csv"], "not found"),
    (["simulate", "--slo", "ttft:90:1"], "bad SLO"),
    (["goodput"], "at least one --slo"),
    (["simulate", "--input-len", "5"], "go together"),
    (["simulate", "--bogus"], "unrecognized arguments"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, msg):
    rc, out, err = run(capsys, *argv)
    assert rc == 2
    assert msg in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_malformed_trace_row_via_subprocess(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n1,10,x\n")
    r = subprocess.run([sys.executable, "-m", "pdlab", "simulate", "--trace", str(p)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and f"{p}:3:" in r.stderr and "Traceback" not in r.stderr


def test_misspelt_trace_column_is_an_error_not_poisson(capsys, tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("arrivd_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n100,10,5\n")
    rc, out, err = run(capsys, "simulate", "--trace", str(p))
    assert rc == 2 and out == ""
    assert "did you mean 'arrived_at'?" in err and "found: arrivd_at" in err
    assert len(err.strip().splitlines()) == 1


def test_lengths_only_trace_says_it_generates_arrivals(capsys, tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("num_prefill_tokens,num_decode_tokens\n10,5\n12,4\n")
    rc, out, err = run(capsys, "simulate", "--trace", str(p), "--json")
    assert rc == 0 and json.loads(out)["completed"] == 2
    assert "no arrived_at column: arrivals are generated at 4 req/s" in err
    p.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n1,12,4\n")
    rc, out, err = run(capsys, "simulate", "--trace", str(p), "--json")
    assert rc == 0 and "arrivals are generated" not in err     # a timed trace replays its own times


def test_version(capsys):
    from pdlab import __version__
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"pdlab {__version__}"


def test_demo_writes_report(capsys, tmp_path):
    out = tmp_path / "r.html"
    rc, text, _ = run(capsys, "demo", "--out", str(out), "--num-requests", "120")
    assert rc == 0
    for mode in ("aggregated", "chunked", "disaggregated"):
        assert mode in text
    html = out.read_text()
    assert "simulated" in html.lower() or "Simulated" in html
    assert html.count('class="plotly-graph-div"') >= 6


def test_simulate_with_the_real_engine_gives_the_same_json(capsys):
    argv = ["simulate", "--executor", "model", "--model", "tiny", "--mode", "chunked", "--chunk-size", "32",
            "--input-len", "40", "--output-len", "6", "--num-requests", "4", "--rate", "50", "--json"]
    rc, out, _ = run(capsys, *argv)
    assert rc == 0
    d = json.loads(out)
    assert KEYS <= d.keys() and d["completed"] == 4 and d["clock"].startswith("measured")
    assert d["output_tokens"] == 24
