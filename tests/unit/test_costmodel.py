import pytest

from pdlab.hardware import GPUS

from pdlab.models import MODELS, arithmetic_intensity

from pdlab.sim import CostModel, Efficiency, ridge_point
from pdlab.errors import PdlabError
from pdlab.serving.kv import BlockManager
from pdlab.request import Batch, Request, Sequence


def test_model_shapes_match_published_sizes():
    # parameter counts of the published checkpoints, within 2%
    for name, billions in [("llama-3-8b", 8.03), ("llama-3.2-1b", 1.24), ("mistral-7b", 7.24),
                           ("llama-2-7b", 6.74), ("llama-2-70b", 69.0), ("opt-13b", 12.9)]:
        assert MODELS[name].params / 1e9 == pytest.approx(billions, rel=0.03), name
    # KV per token: llama-3-8b 32 layers x 8 kv heads x 128 x 2 (K,V) x 2 bytes = 128 KiB
    assert MODELS["llama-3-8b"].kv_bytes_per_token == 131072


def test_prefill_is_compute_bound_above_a_few_hundred_tokens_decode_memory_bound():
    cm = CostModel.from_names("h100", "llama-3-8b")
    ridge = ridge_point(GPUS["h100"])
    assert arithmetic_intensity(cm.model, 1) < ridge < arithmetic_intensity(cm.model, 512)
    # time per token falls steeply until the ridge, then flattens (compute-bound)
    per_tok = {n: cm.prefill_time(n) / n for n in (16, 128, 1024, 4096)}
    assert per_tok[16] > 5 * per_tok[1024]
    assert per_tok[4096] == pytest.approx(per_tok[1024], rel=0.35)
    # decode: 64 sequences cost far less than 64x one sequence (weights read once)
    assert cm.decode_time(64, 1024) < 3 * cm.decode_time(1, 1024)


def _batch(prefill, decodes, ctx=1024):
    bm = BlockManager(10**6, 16)
    b = Batch()
    if prefill:
        b.add_prefill(Sequence(Request(0, 0, prefill, 8)), prefill)
    for i in range(decodes):
        s = Sequence(Request(i + 1, 0, ctx, 8))
        s.num_computed = ctx
        s.num_tokens = ctx + 1
        b.add_decode(s)
    del bm
    return b


def test_decodes_riding_on_a_prefill_chunk_are_nearly_free():
    # Sarathi-Serve's observation: 1021 prefill + 3 decodes ~ 1024 prefill tokens alone
    cm = CostModel.from_names("a100-80gb", "llama-2-7b")
    alone = cm.step_time(_batch(1024, 0))
    mixed = cm.step_time(_batch(1021, 3))
    decode_only = cm.step_time(_batch(0, 3))
    assert mixed == pytest.approx(alone, rel=0.03)
    assert mixed - alone < 0.2 * decode_only


def test_tensor_parallelism_speeds_up_and_adds_capacity():
    one = CostModel.from_names("h100", "llama-2-70b", tp=2)
    four = CostModel.from_names("h100", "llama-2-70b", tp=4)
    assert four.prefill_time(2048) < one.prefill_time(2048)
    assert four.kv_capacity_tokens() > 2 * one.kv_capacity_tokens()
    with pytest.raises(PdlabError, match="no room"):
        CostModel.from_names("h100", "llama-2-70b", tp=1).num_blocks(16)


def test_unknown_presets_name_the_choices():
    with pytest.raises(PdlabError, match="unknown GPU 'b300'.*h100"):
        CostModel.from_names("b300", "llama-3-8b")
    with pytest.raises(PdlabError, match="unknown model"):
        CostModel.from_names("h100", "gpt-9")


def test_profile_loads_and_bad_profile_is_a_clear_error(tmp_path):
    p = tmp_path / "prof.json"
    p.write_text('{"efficiency": {"mfu": 0.3, "step_overhead_s": 0.004}}')
    e = Efficiency.load(p)
    assert e.mfu == 0.3 and e.step_overhead_s == 0.004 and e.mbu == Efficiency().mbu
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(PdlabError, match="bad.json"):
        Efficiency.load(tmp_path / "bad.json")
