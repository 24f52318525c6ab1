"""Numbers a lab's text quotes are the ones its own functions compute."""

from pathlib import Path

from pdlab.hardware import GPUS
from pdlab.lab import checks
from pdlab.models import MODELS
from pdlab.sim import ridge_point

LABS = Path(__file__).resolve().parents[2] / "labs" / "src"


def test_lab01_decode_roofline_paragraph():
    text = " ".join((LABS / "01_two_phases.py").read_text().replace("#", " ").split())
    spec, ridge = MODELS["llama-3-8b"], ridge_point(GPUS["h200"])
    kv = checks.kv_intensity(spec)
    # 4 x heads x head_dim FLOPs per context token and layer over 2 x kv_heads x head_dim x 2 bytes
    assert kv == 4 * spec.heads * spec.head_dim / (2 * spec.kv_heads * spec.head_dim * 2) == 4.0
    assert f"about **{kv:.0f} FLOPs per byte**" in text
    assert f"`4 x {spec.heads} x {spec.head_dim}` FLOPs" in text and f"`2 x {spec.kv_heads} x {spec.head_dim} x 2`" in text
    linear = checks.decode_ridge_batch(spec, ridge, 0)
    assert linear == int(ridge) + 1                      # the linear layers' intensity is the batch
    assert f"ridge at a batch of about **{linear}**" in text
    short = checks.decode_ridge_batch(spec, ridge, 128)
    assert f"(128 tokens of context) crosses it at about **{short}**" in text
    assert checks.decode_ridge_batch(spec, ridge, 1024) is None
    fl, by = checks.reference_decode_step_cost(spec, 1 << 20, 1024)
    assert f"levels off near **{fl / by:.0f} FLOP/byte**" in text
    assert "~2 FLOPs per byte" not in text and "however large the batch" not in text
    # the key points quote the same ridge and KV intensity
    key = text.split("Key points")[1].split("Going further")[0]
    assert "(~200 FLOP/byte on an H200)" in key and abs(ridge - 200) < 10
    assert "(~200 sequences on an H200 for the linear layers)" in key and abs(linear - 200) < 10
    assert f"(~{kv:.0f} FLOP/byte with llama-3-8b's grouped-query attention)" in key
