"""Figure builders of labs 00 and 01: right traces, labelled clocks, in-place updates."""

from __future__ import annotations

import pytest

go = pytest.importorskip("plotly.graph_objects")   # the GPU image has no plotly

from pdlab.lab import checks
from pdlab.viz import engine as ve
from pdlab.hardware import GPUS
from pdlab.models import MODELS, arithmetic_intensity
from pdlab.sim import CostModel, ridge_point


def test_step_times_split_prefill_from_decodes():
    fig = ve.step_times_figure([0.02, 0.005, 0.006, 0.004], prompt_len=17, device="cpu")
    assert isinstance(fig, go.Figure) and "measured on cpu" in fig.layout.title.text
    assert list(fig.data[0].y) == [20.0] and len(fig.data[1].y) == 3
    ve.update_step_times(fig, [0.02, 0.005, 0.006, 0.004], upto=2)
    assert list(fig.data[1].x) == [1]


def test_step_times_widget_updates_in_place():
    w = ve.step_times_figure([0.02, 0.005, 0.006], 5, "cpu", widget=True)
    assert isinstance(w, go.FigureWidget)
    ve.update_step_times(w, [0.02, 0.005, 0.006], upto=1)
    assert len(w.data[1].y) == 0


def test_phase_scaling_has_both_phases_and_per_token_lines():
    fig = ve.phase_scaling_figure([16, 64], [0.01, 0.02], [1, 8], [0.005, 0.006], "cpu", context=128)
    assert len(fig.data) == 4
    assert "measured on cpu" in fig.layout.title.text
    assert abs(fig.data[1].y[1] - 0.02 * 1e3 / 64) < 1e-9          # ms per token


def test_roofline_points_place_decode_left_of_the_ridge():
    gpu, m = GPUS["h200"], MODELS["llama-3-8b"]
    dec, pre = ve.roofline_points(gpu, m, decode_batch=16, prefill_tokens=4096)
    assert dec["bound"] == "memory" and pre["bound"] == "compute"
    assert dec["intensity"] == arithmetic_intensity(m, 16) < ridge_point(gpu) < pre["intensity"]
    assert pre["attainable_tflops"] == gpu.tflops
    assert dec["step_s"] == CostModel(gpu, m).decode_time(16, 1024)


def test_roofline_widget_moves_with_the_controls():
    gpu, m = GPUS["h200"], MODELS["llama-3.2-1b"]
    fig = ve.roofline_figure(gpu, m, 8, 1024, widget=True)
    x0 = fig.data[1].x[0]
    ve.update_roofline(fig, GPUS["t4"], m, 64, 1024)
    assert fig.data[1].x[0] > x0
    assert "T4" in fig.layout.title.text and "simulated" in fig.layout.title.text
    assert max(fig.data[0].y) == GPUS["t4"].tflops


def test_lab_checks_accept_the_reference_and_reject_a_wrong_answer(capsys):
    assert checks.check_kv_blocks(checks.reference_kv_blocks)
    assert not checks.check_kv_blocks(lambda p, n, b: -(-(p + n) // b))       # off by one token
    assert checks.check_decode_step_cost(checks.reference_decode_step_cost)
    assert not checks.check_decode_step_cost(lambda m, b, c: (2 * b * m.params, m.weight_bytes))

    def stub(*a):
        raise NotImplementedError
    assert not checks.check_decode_step_cost(stub)
    assert "[TODO]" in capsys.readouterr().out


def test_decode_step_cost_is_memory_bound_on_h200():
    fl, by = checks.reference_decode_step_cost(MODELS["llama-3-8b"], 64, 1024)
    assert fl / by < ridge_point(GPUS["h200"])


def test_engine_steps_figure_lines_per_context():
    rows = [dict(batch=b, context=c, step_ms=1.0 + b / 64 + c / 4096, roofline_ms=0.8 + b * c / 1e6, peer_ms=1.5)
            for c in (512, 2048) for b in (1, 8, 64)]
    fig = ve.engine_steps_figure({"gpu": "NVIDIA H100", "model": "llama-3.2-1b shape", "copy_tbps": 3.0, "decode": rows})
    assert len(fig.data) == 6 and "H100" in fig.layout.title.text
    eng = fig.data[3]
    assert list(eng.x) == [1, 8, 64] and list(eng.y) == [r["step_ms"] for r in rows[3:]]
    assert list(fig.data[4].y) == [r["roofline_ms"] for r in rows[3:]]
