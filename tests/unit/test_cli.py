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
    (["simulate", "--mode", "aggregated", "--prefill-gpus", "1", "--decode-gpus", "2"],
     "--prefill-gpus and --decode-gpus size the pools of --mode disaggregated; --mode aggregated has no pools"),
    (["goodput", "--slo", "ttft:p90:1", "--decode-gpus", "2"], "--decode-gpus size the pools"),
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
    rc, out, _ = run(capsys, "simulate", "--trace", str(p))
    assert out.splitlines()[0].endswith("(lengths only), Poisson arrivals at 4 req/s (the default)")
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
    assert "rasters&#x27; window" in html and "stall \\u003e 100 ms" in html and "ITL distribution (tail)" in html


def test_slo_verdict_names_only_the_missed_slo_with_its_value():
    from pdlab.demo import slo_verdict
    rows = [{"metric": "ttft", "percentile": 90.0, "target_s": 1.0, "value_s": 0.3, "met": True},
            {"metric": "itl", "percentile": 99.0, "target_s": 0.1, "value_s": 0.1396, "met": False}]
    s = {"slo_attainment": {"slos": rows}}
    assert slo_verdict(s) == "misses ITL p99 <= 100 ms (it is 139.6 ms); meets TTFT p90 <= 1 s"
    rows[1].update(met=True, value_s=0.05)
    assert slo_verdict(s) == "meets TTFT p90 <= 1 s, ITL p99 <= 100 ms"
    rows[0].update(met=False, value_s=None)
    assert slo_verdict(s).startswith("misses TTFT p90 <= 1 s (it is never reached); meets ITL")


def test_simulate_with_the_real_engine_gives_the_same_json(capsys):
    argv = ["simulate", "--executor", "model", "--model", "tiny", "--mode", "chunked", "--chunk-size", "32",
            "--input-len", "40", "--output-len", "6", "--num-requests", "4", "--rate", "50", "--json"]
    rc, out, _ = run(capsys, *argv)
    assert rc == 0
    d = json.loads(out)
    assert KEYS <= d.keys() and d["completed"] == 4 and d["clock"].startswith("measured")
    assert d["output_tokens"] == 24


def test_simulate_imports_no_heavy_module_and_ctrl_c_is_one_line(tmp_path):
    """``pdlab simulate`` starts fast (no torch, numba or plotly) and Ctrl-C ends it with one
    line on stderr and exit code 130."""
    import os
    import signal
    import subprocess
    import sys
    import time
    code = ("import sys; from pdlab.cli import main; main(['simulate', '--num-requests', '20', '--json']); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numba', 'plotly', 'scipy'}))")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
    p = subprocess.Popen([sys.executable, "-m", "pdlab", "simulate", "--num-requests", "300000", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert err.strip() == "pdlab: interrupted" and out == ""


def test_goodput_is_the_same_for_any_number_of_jobs_and_on_dask(capsys):
    """The search simulates several candidate rates per round; its answer is the sequential
    search's, on one process, two, or a Dask LocalCluster."""
    argv = ["goodput", "--mode", "chunked", "--workload", "azure-conv", "--num-requests", "80",
            "--slo", "ttft:p90:0.5", "--slo", "tpot:p90:0.04", "--json"]
    outs = []
    for jobs in ("1", "2", "5"):
        rc, out, _ = run(capsys, *argv, "--jobs", jobs)
        assert rc == 0
        outs.append(json.loads(out))
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        rc, out, _ = run(capsys, *argv, "--jobs", "3", "--dask", cluster.scheduler_address)
        assert rc == 0
        outs.append(json.loads(out))
    assert outs[0]["goodput_rps"] > 0
    assert all(o == outs[0] for o in outs), outs


def test_goodput_search_parallel_equals_the_sequential_search():
    from pdlab.metrics import goodput_search, goodput_search_parallel
    for threshold in (0.0, 3e-5, 0.37, 1.0, 5.3, 77.7, 2e5):
        meets = lambda r: r <= threshold  # noqa: E731
        seq = goodput_search(meets)
        for width in (1, 2, 3, 7, 16):
            calls = []

            def many(rates):
                calls.append(len(rates))
                return [meets(r) for r in rates]
            got, asked = goodput_search_parallel(many, width=width)
            assert got == seq
            assert max(calls) <= width


def test_one_pool_size_states_the_other(capsys):
    rc, out, err = run(capsys, "simulate", "--mode", "disaggregated", "--prefill-gpus", "2",
                       "--num-requests", "30", "--json")
    assert rc == 0 and json.loads(out)["gpus"] == 3
    assert err.strip() == "pdlab: note: --prefill-gpus given without --decode-gpus: --decode-gpus 1 (the default)"
    rc, out, err = run(capsys, "simulate", "--mode", "disaggregated", "--decode-gpus", "3",
                       "--num-requests", "30", "--json")
    assert json.loads(out)["gpus"] == 4 and "--prefill-gpus 1 (the default)" in err


def test_nothing_served_says_why_and_exits_non_zero(capsys):
    rc, out, err = run(capsys, "simulate", "--num-blocks", "10", "--num-requests", "20")
    assert rc == 1
    assert "20 of 20 requests rejected:" in out
    assert "20 rejected: needs" in out and "but the cache holds 10 (the largest of 20)" in out
    assert err.strip() == "pdlab: error: nothing was served: all 20 requests were rejected"
    rc, out, err = run(capsys, "simulate", "--num-blocks", "10", "--num-requests", "20", "--json")
    assert rc == 1 and json.loads(out)["rejected"] == 20
    # some served: the reasons still show, and the run succeeds
    rc, out, _ = run(capsys, "simulate", "--num-blocks", "120", "--num-requests", "50")
    d = [ln for ln in out.splitlines() if ln.endswith("requests rejected:")]
    assert rc == 0 and len(d) == 1 and not d[0].startswith("50 of")


def test_overload_warning_names_offered_and_served_rates(capsys):
    rc, out, err = run(capsys, "simulate", "--trace", "data/traces/mooncake_conv.jsonl", "--num-requests", "200")
    assert rc == 0
    assert "at its own timestamps" in out
    (line,) = [ln for ln in err.splitlines() if "overloaded" in ln]
    import re
    m = re.search(r"offer ([\d,]+) tok/s .* served ([\d,]+) tok/s .*\(([\d.]+)x more", line)
    offered, served, ratio = (float(g.replace(",", "")) for g in m.groups())
    assert offered > served and ratio == pytest.approx(offered / served, rel=0.05)
    # a deployment that keeps up gets no warning, even on a short run whose last answers lag
    for argv in (["--num-requests", "60", "--rate", "3"], ["--trace", "data/traces/azure_conv.csv", "--num-requests", "300"]):
        rc, _, err = run(capsys, "simulate", *argv)
        assert rc == 0 and "overloaded" not in err


def test_header_names_the_workload_and_rate(capsys):
    rc, out, _ = run(capsys, "simulate", "--num-requests", "20")
    assert out.splitlines()[0].endswith("20 requests: workload sharegpt (the default), "
                                        "Poisson arrivals at 4 req/s (the default)")
    rc, out, _ = run(capsys, "simulate", "--num-requests", "20", "--workload", "arxiv", "--rate", "2",
                     "--burstiness", "4")
    assert "workload arxiv, bursty (CV^2 4) arrivals at 2 req/s" in out.splitlines()[0]


def test_help_describes_every_serving_flag(capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, words in (("--prefill-gpus", "prefill pool"), ("--decode-gpus", "decode pool"),
                        ("--max-num-seqs", "most sequences a worker runs"), ("--block-size", "tokens per paged KV block"),
                        ("--workload", "(default sharegpt)")):
        assert words in text.split(flag, 2)[-1][:200], flag


def test_ctrl_c_is_one_line_and_exit_130(capsys, monkeypatch):
    import pdlab.run

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(pdlab.run, "run_serving", interrupted)
    rc, out, err = run(capsys, "simulate", "--num-requests", "20")
    assert rc == 130 and err == "pdlab: interrupted\n" and out == ""


@pytest.mark.parametrize("argv,msg", [
    (["generate", "--max-new-tokens", "-3"], "--max-new-tokens must be >= 1, got -3"),
    (["generate", "--weights", "."], "no config.json there"),
    (["calibrate", "--repeats", "0"], "--repeats must be >= 1, got 0"),
    (["calibrate", "--serve-rate", "-1"], "--serve-rate must be > 0"),
])
def test_engine_commands_check_arguments_before_torch_loads(argv, msg):
    code = ("import sys; from pdlab.cli import main; rc = main(sys.argv[1:]); "
            "print(rc, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    assert r.stdout.split() == ["2", "False"] and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1
