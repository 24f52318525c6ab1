"""Lab-02 figures: assert on the data the figures carry."""

import numpy as np
import pytest

from pdlab.lab import results as measured
from pdlab.viz import kernels as vk


@pytest.fixture(scope="module")
def results():
    return measured.load()


def test_results_file_has_the_promised_fields(results):
    for key in ("gpu", "driver", "versions", "copy_tbps", "decode", "prefill", "launch_us"):
        assert key in results
    assert {(r["batch"], r["context"]) for r in results["decode"]} == {(16, 4096), (64, 1024), (1, 32768)}
    for r in results["decode"]:
        assert {"tbps", "ratio_to_copy", "sdpa_tbps"} <= set(r)
    assert {"tokens", "tflops", "sdpa_tflops", "ratio_to_sdpa"} <= set(results["prefill"][0])
    assert {"eager", "graph"} <= set(results["launch_us"])


def test_decode_traffic_counts():
    t = vk.decode_traffic(16, 4096, 32, 8, 128, 2)
    assert t["bytes"] == 2 * 16 * 4096 * 8 * 128 * 2
    assert t["flops"] == 4 * 16 * 4096 * 32 * 128
    assert t["intensity"] == pytest.approx(4.0)   # = query heads per KV head (GQA group)
    assert vk.decode_traffic(1, 4096)["intensity"] == vk.decode_traffic(64, 4096)["intensity"]


def test_prefill_traffic_counts():
    t = vk.prefill_traffic(4, 4, num_heads=1, num_kv_heads=1, head_dim=2, bytes_per_el=2)
    assert t["flops"] == 4 * 1 * 2 * (4 * 5 // 2)
    assert vk.prefill_traffic(4096)["intensity"] > 100 * vk.decode_traffic(16, 4096)["intensity"]


def test_roofline_figure(results):
    live = [dict(label="live", intensity=4.0, tflops=0.001)]
    fig = vk.roofline_figure(results, live)
    names = [t.name for t in fig.data]
    assert names[:2] == ["fp32 CUDA-core roof", "bf16 tensor-core roof"]
    x, y = np.array(fig.data[0].x), np.array(fig.data[0].y)
    i = np.argmin(abs(x - 1.0))
    assert y[i] == pytest.approx(results["copy_tbps"] * x[i])       # memory roof: TB/s x FLOP/B
    assert max(fig.data[0].y) == pytest.approx(vk.H200_FP32_TFLOPS)
    numba = fig.data[names.index("Numba (measured, H200)")]
    assert len(numba.x) == len(results["decode"]) + len(results["prefill"])
    assert sorted(numba.x)[0] == pytest.approx(4.0)                   # decode sits at intensity 4
    assert fig.data[-1].name == "live, this machine" and list(fig.data[-1].y) == [0.001]
    assert "H200" in fig.layout.title.text


def test_thread_map():
    z = vk.thread_map(head_dim=128, threads=128, unroll=2)      # 16 dims per lane, 8 lanes per row
    assert z.shape == (32, 128)
    assert sorted(np.unique(z)) == list(range(128))
    assert (z[0, :8] == 0).all() and (z[0, 8:16] == 1).all()   # 8 consecutive dims per load ...
    assert (z[0, 64:72] == 0).all()                             # ... and the same in the row's other half
    assert (z[16] == z[0]).all()                                 # second token of each thread, 16 rows on
    z8 = vk.thread_map(head_dim=128, threads=128, unroll=2, lane_dims=8)   # groups of 8 heads
    assert z8.shape == (16, 128) and (z8[0, 8:16] == 1).all() and (z8[8] == z8[0]).all()
    fig = vk.thread_map_figure(64, 128, 2)
    assert np.array(fig.data[0].z).shape == (64, 64)


def test_explorer_slider_updates_figure(results):
    box, fig, sliders = vk.decode_explorer(results, batch=16, context=4096)
    y_before = list(fig.data[0].y)
    sliders["batch"].value = 64
    assert list(fig.data[0].y) == pytest.approx([4 * v for v in y_before])   # time scales with batch
    sliders["context"].value = 32768
    assert list(fig.data[2].x) == [32768]
    assert "batch 64 x context 32768" in fig.layout.title.text


def test_fragment_figure_shows_every_lane_and_register():
    from pdlab.kernels import fragments as fr
    from pdlab.viz import kernels as vk

    fig = vk.fragment_figure()
    a, b, c = fig.data
    assert np.array_equal(np.array(a.z), fr.owners("A")) and np.array(a.z).shape == (16, 16)
    assert np.array(b.z).shape == (16, 8) and np.array(c.z).shape == (16, 8)
    # every lane holds 8 A values, 4 B values and 4 accumulators
    for tr, per_lane in ((a, 8), (b, 4), (c, 4)):
        assert np.bincount(np.array(tr.z).ravel(), minlength=32).tolist() == [per_lane] * 32
    assert a.text[0][0] == "a0" and a.text[8][0] == "a1" and a.text[0][8] == "a2" and c.text[8][0] == "c2"
