"""Measured serving runs: reading both formats, one-line errors naming file and line, the step
profile kind, the new cost terms, the fit to measured quantiles and ``pdlab compare``."""

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pdlab.cli import main
from pdlab.config import ServingConfig
from pdlab.errors import PdlabError
from pdlab.measured import read_measured
from pdlab.metrics import per_request
from pdlab.paths import MEASURED, PROFILES
from pdlab.run import run_serving
from pdlab.sim import CostModel, StepShape
from pdlab.sim.profiles import load_profile
from pdlab.sim.servefit import fit_measured, quantile_residuals
from pdlab.sim.stepprofile import StepProfileModel

DS = MEASURED / "distserve-opt13b-a100"
VLLM_STEP = DS / "step-profile-a100-80g-vllm.json"
HEADER = "arrived_at,num_prefill_tokens,num_decode_tokens,measured_ttft_ms,measured_tpot_ms\n"


def _csv(tmp_path, body, header=HEADER, name="run.csv"):
    p = tmp_path / name
    p.write_text(header + body)
    return p


# ---- reading ---------------------------------------------------------------------------------
def test_reads_the_shipped_runs():
    run = read_measured(DS / "vllm-300-3.csv")
    assert len(run.requests) == 300 and run.requests[0].arrival == 0.0
    assert run.rate == pytest.approx(3.0, rel=0.05)
    assert run.ttft[0] == pytest.approx(0.041713) and run.tpot[0] == pytest.approx(0.025229)
    n = np.array([r.max_new_tokens for r in run.requests])
    assert np.allclose(run.e2e, run.ttft + np.nan_to_num(run.tpot) * (n - 1))


def test_seconds_columns_and_one_token_answers(tmp_path):
    p = _csv(tmp_path, "10.0,5,1,0.2,\n10.5,7,3,0.3,0.05\n", "arrived_at,num_prefill_tokens,num_decode_tokens,ttft_s,tpot_s\n")
    run = read_measured(p)
    assert [r.arrival for r in run.requests] == [0.0, 0.5]
    assert np.isnan(run.tpot[0]) and run.tpot[1] == 0.05 and run.ttft[1] == 0.3


@pytest.mark.parametrize("body, header, msg", [
    ("0.0,5,3,10\n", "arrived_at,num_prefill_tokens,num_decode_tokens,measured_ttft_ms\n", "run.csv:1: missing column"),
    ("0.0,5,3,10,2\n0.5,,3,10,2\n", HEADER, "run.csv:3: 'num_prefill_tokens' is missing"),
    ("0.0,5,3,10,2\n0.5,5,3,-1,2\n", HEADER, "run.csv:3: 'measured_ttft_ms' must be >= 0"),
    ("0.0,5,3,10,2\n1.0,5,3,10,2\n0.5,5,3,10,2\n", HEADER, "run.csv:4: arrivals are not sorted"),
    ("0.0,5,3,10,2\n0.5,5,0,10,2\n", HEADER, "run.csv:3: 'num_decode_tokens' must be > 0"),
])
def test_bad_csv_names_file_and_line(tmp_path, body, header, msg):
    with pytest.raises(PdlabError, match=msg):
        read_measured(_csv(tmp_path, body, header))


def _vllm_json(tmp_path, **over):
    d = {"input_lens": [20, 30, 40], "output_lens": [3, 1, 4], "ttfts": [0.1, 0.2, 0.15],
         "itls": [[0.02, 0.04], [], [0.01, 0.01, 0.04]], "start_times": [100.0, 100.5, 101.0],
         "errors": ["", "", ""]}
    d.update(over)
    p = tmp_path / "bench.json"
    p.write_text(json.dumps(d))
    return p


def test_reads_vllm_bench_serve_detailed_json(tmp_path):
    run = read_measured(_vllm_json(tmp_path))
    assert [r.arrival for r in run.requests] == [0.0, 0.5, 1.0]
    assert [(r.prompt_len, r.max_new_tokens) for r in run.requests] == [(20, 3), (30, 1), (40, 4)]
    assert run.tpot[0] == pytest.approx(0.03) and np.isnan(run.tpot[1]) and run.tpot[2] == pytest.approx(0.02)
    failed = read_measured(_vllm_json(tmp_path, errors=["", "timeout", ""], output_lens=[3, 0, 4]))
    assert len(failed.requests) == 2 and failed.failed == 1


@pytest.mark.parametrize("over, msg", [
    ({"itls": None}, "missing per-request list"),
    ({"start_times": [100.0, 99.0, 101.0]}, "request 1: arrivals are not sorted"),
    ({"ttfts": [0.1, -0.2, 0.1]}, "request 1: 'ttfts' must be > 0"),
    ({"output_lens": [3, 1]}, "'output_lens' has 2 entries"),
])
def test_bad_vllm_json_names_file_and_request(tmp_path, over, msg):
    with pytest.raises(PdlabError, match=msg):
        read_measured(_vllm_json(tmp_path, **over))


def test_compare_bad_file_is_one_line_exit_2(capsys, tmp_path):
    bad = _csv(tmp_path, "0.0,5,3,10,2\n0.5,5,3,abc,2\n")
    rc = main(["compare", "--measured", str(bad), "--model", "opt-13b", "--gpu", "a100-80gb", "--mode", "aggregated"])
    err = capsys.readouterr()[1]
    assert rc == 2 and "run.csv:3" in err and err.count("\n") == 1


# ---- step profiles ----------------------------------------------------------------------------
def test_step_profile_prices_steps_with_distservs_formulas():
    cm = load_profile(VLLM_STEP).cost_model("a100-80gb", "opt-13b", 1)
    assert isinstance(cm, StepProfileModel)
    c = json.loads(VLLM_STEP.read_text())["facebook/opt-13b"]["1"]
    a, b, q = c["prefill"]
    assert cm.prefill_time(500) == pytest.approx(1e-3 * (a + b * 500 + q * 500 ** 2))
    for bs, key in ((8, "decoding_smallbs"), (200, "decoding_largebs")):
        a, b, q = c[key]
        assert cm.decode_time(bs, 700) == pytest.approx(1e-3 * (a + b * bs * 700 + q * bs))
    # a served run goes through it: the same shapes, the profile's times
    cfg = ServingConfig(mode="aggregated", model="opt-13b", gpu="a100-80gb", profile=str(VLLM_STEP))
    seen = []
    run_serving(read_measured(DS / "vllm-100-1.csv").requests[:30], cfg,
                on_step=lambda w, batch, res: seen.append((CostModel.shape(batch), res.seconds)))
    assert seen and all(sec == cm.time_for(s) for s, sec in seen)


def test_step_profile_errors():
    prof = load_profile(VLLM_STEP)
    with pytest.raises(PdlabError, match="no TP 8 for opt-13b"):
        prof.cost_model("a100-80gb", "opt-13b", 8)
    with pytest.raises(PdlabError, match="no model 'llama-3-8b'"):
        prof.cost_model("a100-80gb", "llama-3-8b", 1)
    fitted = load_profile(PROFILES / "a100-80gb-opt-13b-vllm.json")
    assert fitted.kind == "step-profile" and fitted.gpu == "a100-80gb"
    with pytest.raises(PdlabError, match="times steps on a100-80gb, not h100"):
        fitted.cost_model("h100", "opt-13b", 1)


@pytest.mark.parametrize("name", ["a100-80gb-opt-13b-vllm", "a100-80gb-opt-13b-distserve"])
def test_shipped_profiles_run_and_are_named(capsys, name):
    extra = ["--mode", "disaggregated", "--prefill-tp", "2"] if "distserve" in name else ["--mode", "aggregated"]
    argv = ["simulate", "--model", "opt-13b", "--gpu", "a100-80gb", *extra, "--num-requests", "40", "--rate", "2",
            "--profile", str(PROFILES / f"{name}.json")]
    assert main([*argv, "--json"]) == 0
    d = json.loads(capsys.readouterr()[0])
    assert d["profile"] == name and d["completed"] == 40
    data = json.loads((PROFILES / f"{name}.json").read_text())
    assert data["fitted_on"]["runs"] and data["fitted_on"]["params"]
    assert main(argv) == 0
    assert f"profile {name}" in capsys.readouterr()[0].splitlines()[0]
    assert main(["simulate", "--num-requests", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr()[0])["profile"] == "ideal"


# ---- the new cost terms ----------------------------------------------------------------------
def test_new_cost_terms_are_plain_additions_and_default_to_zero():
    cm = CostModel.from_names("a100-80gb", "opt-13b")
    s = StepShape(600, 9, 9, 500 * 501 // 2, 500, 500, 8 * 700, 1, True, 20)
    base = cm.time_for(s)
    assert cm.with_efficiency(token_overhead_s=1e-4).time_for(s) == pytest.approx(base + 9e-4)
    assert cm.with_efficiency(running_overhead_s=1e-4).time_for(s) == pytest.approx(base + 20e-4)
    assert cm.with_efficiency(block_overhead_s=1e-4).time_for(s) == pytest.approx(base + 1e-4 * (500 + 8) / 16)
    # decode attention's own bandwidth share: equal to mbu changes nothing, half of it doubles the decode reads
    d = StepShape.decode(64, 2048)
    assert cm.with_efficiency(decode_mbu=cm.eff.mbu).time_for(d) == pytest.approx(cm.time_for(d))
    kv = cm.model.kv_bytes_per_token * 64 * 2048 / (cm.gpu.hbm_tbps * 1e12 * cm.eff.mbu)
    assert cm.with_efficiency(decode_mbu=cm.eff.mbu / 2).time_for(d) == pytest.approx(cm.time_for(d) + kv)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(0, 10 ** 6), st.floats(0, 1e-3), st.floats(0, 1e-3), st.floats(0, 1e-3),
       st.sampled_from([0.0, 0.3, 0.9]), st.sampled_from([1, 2]))
def test_fast_forward_decode_time_includes_the_new_terms_bit_for_bit(n, ctx, tok, run, blk, dmbu, tp):
    cm = CostModel.from_names("a100-80gb", "opt-13b", tp).with_efficiency(
        token_overhead_s=tok, running_overhead_s=run, block_overhead_s=blk, decode_mbu=dmbu)
    assert cm.decode_step_time(n, ctx) == cm.time_for(StepShape(n, n, n, decode_ctx=ctx, running=n))
    sp = load_profile(VLLM_STEP).cost_model("a100-80gb", "opt-13b", tp).with_efficiency(running_overhead_s=run)
    assert sp.decode_step_time(n, ctx) == sp.time_for(StepShape(n, n, n, decode_ctx=ctx, running=n))


def test_fitted_profile_runs_the_same_with_and_without_fast_forward():
    cfg = dict(mode="aggregated", model="opt-13b", gpu="a100-80gb", profile=str(PROFILES / "a100-80gb-opt-13b-vllm.json"))
    reqs = read_measured(DS / "vllm-200-2.csv").requests
    fast = run_serving(reqs, ServingConfig(**cfg)).summary()
    exact = run_serving(reqs, ServingConfig(**cfg, exact_steps=True)).summary()
    assert fast == exact


def test_running_count_reaches_the_cost_model():
    cfg = ServingConfig(mode="aggregated", model="opt-13b", gpu="a100-80gb")
    seen = []
    run_serving(read_measured(DS / "vllm-100-1.csv").requests[:40], cfg,
                on_step=lambda w, batch, res: seen.append((batch.num_running, len(w.sched.running))))
    assert max(r for r, _ in seen) > 1 and all(r == n for r, n in seen)


# ---- the fit -----------------------------------------------------------------------------------
def _synthetic_run(tmp_path, true_running=3e-4, n=60):
    """A 'measured' run made by the simulator itself with a known per-running-sequence cost."""
    cfg = ServingConfig(mode="aggregated", model="opt-13b", gpu="a100-80gb")
    base = read_measured(DS / "vllm-300-3.csv").requests[:n]
    cms = {"mixed": load_profile(VLLM_STEP).cost_model("a100-80gb", "opt-13b").with_efficiency(
        running_overhead_s=true_running)}
    arr = per_request(run_serving(base, cfg, cost_models=cms).sequences)
    rows = "".join(f"{r.arrival},{r.prompt_len},{r.max_new_tokens},{1e3 * a},{1e3 * b if np.isfinite(b) else ''}\n"
                   for r, a, b in zip(base, arr["ttft"], arr["tpot"]))
    return _csv(tmp_path, rows), cfg


def test_fit_recovers_a_known_cost_from_quantiles(tmp_path):
    path, cfg = _synthetic_run(tmp_path)
    run = read_measured(path)
    fit = fit_measured([run], cfg, load_profile(VLLM_STEP), ["running_overhead_s"], maxfev=80)
    assert fit.converged and fit.loss < fit.start_loss
    assert fit.efficiency["running_overhead_s"] == pytest.approx(3e-4, rel=0.15)
    cms = {"mixed": load_profile(VLLM_STEP).cost_model("a100-80gb", "opt-13b").with_efficiency(**fit.efficiency)}
    sim = per_request(run_serving(run.requests, cfg, cost_models=cms).sequences)
    assert np.max(np.abs(quantile_residuals(sim, run))) < 0.05


def test_calibrate_measured_writes_a_profile_or_nothing(tmp_path, capsys):
    path, _ = _synthetic_run(tmp_path)
    out = tmp_path / "prof.json"
    argv = ["calibrate", "--measured", str(path), "--model", "opt-13b", "--gpu", "a100-80gb", "--mode", "aggregated",
            "--profile", str(VLLM_STEP), "--params", "running_overhead_s", "-o", str(out), "--quiet"]
    rc = main([*argv, "--max-evals", "2"])
    err = capsys.readouterr()[1]
    assert rc == 2 and "did not converge" in err and not out.exists()
    assert main([*argv, "--max-evals", "80"]) == 0
    assert "wrote" in capsys.readouterr()[0]
    prof = json.loads(out.read_text())
    assert prof["kind"] == "step-profile" and prof["fitted_on"]["runs"][0]["file"] == str(path)
    assert prof["efficiency"]["running_overhead_s"] == pytest.approx(3e-4, rel=0.15)
    # the written profile drives simulate and compare
    assert main(["compare", "--measured", str(path), "--model", "opt-13b", "--gpu", "a100-80gb", "--mode",
                 "aggregated", "--profile", str(out), "--json", "--html", str(tmp_path / "c.html")]) == 0
    d = json.loads(capsys.readouterr()[0])
    assert d["profile"] == "prof" and (tmp_path / "c.html").stat().st_size > 1000
    row = d["runs"][0]
    for m in ("ttft", "tpot", "e2e"):
        assert {"p50", "p90", "p99"} == row[m].keys()
    assert abs(row["ttft"]["p50"]["rel_error"]) < 0.1


# ---- the figure --------------------------------------------------------------------------------
def test_cdf_overlay_draws_measured_and_simulated_per_metric():
    from pdlab.viz.fidelity import cdf_overlay
    meas = {"ttft": np.array([0.3, 0.1, 0.2]), "tpot": np.array([0.02, np.nan, 0.03]), "e2e": np.array([1.0, 2.0, 3.0])}
    sim = {"step+fit": {k: v * 1.1 for k, v in meas.items()}, "ideal": {k: v * 0.5 for k, v in meas.items()}}
    f = cdf_overlay(meas, sim, clock="simulated (cost model: opt-13b on a100-80gb)")
    assert len(f.data) == 3 * 3
    first = f.data[0]
    assert first.name == "measured" and list(first.x) == pytest.approx([100, 200, 300]) and first.y[-1] == 1.0
    assert list(f.data[3].x) == pytest.approx([20, 30])          # TPOT: the NaN is left out
    assert f.data[1].line.dash == "dash" and list(f.data[1].x) == pytest.approx([110, 220, 330])
    assert "opt-13b on a100-80gb" in f.layout.title.text
    assert sum(t.showlegend for t in f.data) == 3


def test_roofline_fit_recovers_mbu_and_writes_an_efficiency_profile(tmp_path, capsys):
    cfg = ServingConfig(mode="aggregated", model="opt-13b", gpu="a100-80gb")
    base = read_measured(DS / "vllm-200-2.csv").requests[:50]
    cms = {"mixed": CostModel.from_names("a100-80gb", "opt-13b").with_efficiency(mbu=0.5)}
    arr = per_request(run_serving(base, cfg, cost_models=cms).sequences)
    rows = "".join(f"{r.arrival},{r.prompt_len},{r.max_new_tokens},{a},{b if np.isfinite(b) else ''}\n"
                   for r, a, b in zip(base, arr["ttft"], arr["tpot"]))
    path = _csv(tmp_path, rows, "arrived_at,num_prefill_tokens,num_decode_tokens,ttft_s,tpot_s\n")
    out = tmp_path / "roof.json"
    assert main(["calibrate", "--measured", str(path), "--model", "opt-13b", "--gpu", "a100-80gb", "--mode",
                 "aggregated", "--params", "mbu", "-o", str(out), "--quiet", "--max-evals", "60"]) == 0
    capsys.readouterr()
    prof = load_profile(out)
    assert prof.kind == "efficiency" and prof.eff.mbu == pytest.approx(0.5, rel=0.05)
    assert json.loads(out.read_text())["fitted_on"]["base_profile"] == "ideal"
