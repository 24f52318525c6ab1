"""pdlab calibrate (grid, fit, profile the simulator can load) and pdlab generate (streams text,
clear errors)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from pdlab.engine import calibrate as C
from pdlab.engine import generate as G
from pdlab.engine import grid as grid_mod
from pdlab.config import ServingConfig
from pdlab.hardware import GPUS
from pdlab.models import MODELS
from pdlab.sim import CostModel, Efficiency, StepShape
from pdlab.sim.fit import shape_of


def _args(module, argv):
    p = argparse.ArgumentParser()
    module.add_arguments(p)
    return p.parse_args(argv)


def test_fit_recovers_known_efficiencies():
    """Points 'measured' by a cost model with known factors are fitted back to them."""
    truth = dict(mfu=0.45, attn_eff=0.2, mbu=0.7, step_overhead_s=2e-3, seq_overhead_s=5e-5,
                 prefill_overhead_s=7e-4)
    cm_true = CostModel(GPUS["h200"], MODELS["llama-3-8b"]).with_efficiency(**truth)
    f = grid_mod.BatchFactory(num_blocks=1 << 16, block_size=16, vocab=1000)
    points = []
    for p in grid_mod.grid(fast=False, max_tokens=1 << 17):
        b = grid_mod.build_batch(f, p)
        points.append({**p, "measured_s": cm_true.step_time(b), "_batch": b})
    cm, pred = C.fit(CostModel(GPUS["h200"], MODELS["llama-3-8b"]), points)
    meas = np.array([p["measured_s"] for p in points])
    assert np.max(np.abs(pred / meas - 1)) < 0.02
    assert cm.eff.mfu == pytest.approx(truth["mfu"], rel=0.1)
    assert cm.eff.mbu == pytest.approx(truth["mbu"], rel=0.1)
    assert cm.eff.step_overhead_s == pytest.approx(truth["step_overhead_s"], rel=0.1)
    assert cm.eff.prefill_overhead_s == pytest.approx(truth["prefill_overhead_s"], rel=0.2)


def test_grid_has_serving_like_steps():
    """The grid holds steps as the schedulers issue them: several prefill chunks (one after
    cached context) beside a decode batch."""
    pts = [p for p in grid_mod.grid(fast=False, max_tokens=1 << 17) if p["kind"] == "serving"]
    assert any(len(p["chunks"]) >= 2 and p["decodes"] > 0 for p in pts)
    assert any(ctx > 0 for p in pts for _, ctx in p["chunks"])
    f = grid_mod.BatchFactory(num_blocks=1 << 14, block_size=16, vocab=258)
    for p in pts:
        b = grid_mod.build_batch(f, p)
        assert len(b.prefills) == len(p["chunks"]) and len(b.decodes) == p["decodes"]
        assert b.num_prefill_tokens == p["tokens"]
        assert [(s.num_computed, n) for s, n in b.prefills] == [(c, n) for n, c in p["chunks"]]


def test_grid_batches_have_the_requested_shapes():
    f = grid_mod.BatchFactory(num_blocks=64, block_size=16, vocab=258)
    b = grid_mod.build_batch(f, {"kind": "mixed", "tokens": 32, "decodes": 3, "context": 40})
    assert b.num_prefill_tokens == 32 and len(b.decodes) == 3 and b.decode_context == 120
    assert len(b.sampling()) == 4
    b = f.prefill(16, context=48, seqs=2)
    assert [(s.num_computed, n) for s, n in b.prefills] == [(48, 16), (48, 16)]


def test_calibrate_on_this_cpu_writes_a_profile_the_simulator_loads(tmp_path):
    out = tmp_path / "cpu-tiny.json"
    rc = C.run(_args(C, ["--model", "tiny", "--device", "cpu", "--fast", "--repeats", "1", "--out", str(out)]))
    assert rc == 0
    prof = json.loads(out.read_text())
    assert prof["gpu"] == "cpu" and prof["model"] == "tiny" and prof["device"] == "cpu"
    assert len(prof["points"]) == prof["fit"]["points"] >= 8
    assert all(p["measured_s"] > 0 and p["predicted_s"] > 0 for p in prof["points"])
    assert {"serving", "decode", "prefill"} <= set(prof["fit"]["by_kind"])
    assert prof["fit"]["max_abs_rel_error"] >= prof["fit"]["median_abs_rel_error"] >= 0
    eff = Efficiency.load(out)
    assert 0 < eff.mfu <= 1 and eff.step_overhead_s >= 0 and eff.prefill_overhead_s >= 0
    assert "prefill_overhead_s" in prof["efficiency"]
    ServingConfig(model="tiny", gpu="cpu", profile=str(out)).validate()


def test_committed_h200_profile_loads():
    eff = Efficiency.load(C.PROFILES_DIR / "h200-llama-3.2-1b-numba.json")
    assert 0 < eff.mfu <= 1 and 0 < eff.mbu <= 1


def test_generate_streams_story_text(capsys):
    rc = G.run(_args(G, ["Once upon a time", "--max-new-tokens", "30"]))
    assert rc == 0
    out, err = capsys.readouterr()
    assert out.startswith("Once upon a time, there was a")
    assert "measured" in err and "prefill of 17 tokens" in err


def test_generate_missing_weights_is_one_clear_line(tmp_path, capsys):
    from pdlab.cli import main
    assert main(["generate", "hi", "--weights", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no config.json there" in err and str(tmp_path) in err


def _served_workload(seed=1):
    """Short chats plus one long prompt (the shape of bench/interference_engine.py's workload)."""
    from pdlab.request import Request
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1 / 8.0, 24))
    reqs = [Request(i, float(t[i]), int(rng.integers(64, 513)), int(rng.integers(8, 25))) for i in range(24)]
    return reqs + [Request(24, float(t[8]), 4096, 8)]


def test_calibrate_from_serving_recovers_a_known_efficiency():
    """Steps served through run_serving by a synthetic executor whose times come from a known
    Efficiency (mixed-phase overhead included) are logged and fitted back to it."""
    from pdlab.sim import CostModelExecutor

    truth = dict(mfu=0.5, attn_eff=0.05, mbu=0.3, step_overhead_s=15e-3, seq_overhead_s=2e-5,
                 prefill_overhead_s=5e-4, mixed_overhead_s=6e-3)
    cm_true = CostModel(GPUS["h200"], MODELS["llama-3.2-1b"]).with_efficiency(**truth)
    log = []
    for mode, chunk in C.SERVE_MODES:
        conf = ServingConfig(mode=mode, model="llama-3.2-1b", gpu="h200", chunk_size=chunk, num_blocks=4096)
        C.serve_and_log(_served_workload(), conf, lambda *a: CostModelExecutor(cm_true), log)
    kinds = {r["kind"] for r in log}
    assert kinds == {"prefill", "decode", "mixed"} and {r["mode"] for r in log} == {m for m, _ in C.SERVE_MODES}
    assert all(r["measured_s"] == pytest.approx(cm_true.time_for(shape_of(r))) for r in log)
    f = grid_mod.BatchFactory(num_blocks=1 << 14, block_size=16, vocab=1000)
    grid = [{"kind": p["kind"], "measured_s": cm_true.step_time(b), "_batch": b}
            for p in grid_mod.grid(fast=True, max_tokens=4096) for b in [grid_mod.build_batch(f, p)]]
    out = C.calibrate_from_serving(CostModel(GPUS["h200"], MODELS["llama-3.2-1b"]), log, grid)
    eff, served = out["efficiency"], out["fit"]["served"]
    assert served["steps"] == len(log) and served["p90_abs_rel_error"] < 0.01
    assert out["fit"]["grid"]["p90_abs_rel_error"] < 0.01
    for k in ("step_overhead_s", "mixed_overhead_s", "mfu"):
        assert eff[k] == pytest.approx(truth[k], rel=0.1), k
    assert eff["prefill_overhead_s"] == pytest.approx(truth["prefill_overhead_s"], abs=5e-4)
    assert set(eff) == set(C.FIT_PARAMS)


def test_batch_shape_is_what_step_time_times():
    cm = CostModel(GPUS["h200"], MODELS["llama-3.2-1b"])
    f = grid_mod.BatchFactory(num_blocks=1024, block_size=16, vocab=1000)
    for b in (f.prefill(100, 32), f.decode(4, 64), f.serving([(48, 0), (32, 16)], 3, 40)):
        s = cm.shape(b)
        assert cm.time_for(shape_of(s._asdict())) == cm.step_time(b)     # a logged shape times the same
        assert s.mixed == bool(b.prefills and b.decodes)
    assert cm.shape(f.serving([(48, 0)], 3, 40)).kind == "mixed"
    assert cm.shape(f.prefill(10)).kind == "prefill" and cm.shape(f.decode(2, 9)).kind == "decode"
    # the shape constructors agree with the batches the scheduler would build
    assert cm.shape(f.prefill(100, 32)) == StepShape.prefill(100, 32)
    assert cm.shape(f.decode(4, 64)) == StepShape.decode(4, 64)
    both = cm.shape(f.serving([(48, 0)], 3, 40))
    assert both == StepShape.prefill(48) + StepShape.decode(3, 40)
