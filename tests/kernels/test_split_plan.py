"""FlashDecoding's split plan, by properties: the splits cover the context in whole block steps,
none is empty, and the count is the one asked for (so a wave of blocks fills every SM slot)."""

from hypothesis import given, settings, strategies as st

from pdlab.kernels import decode_attention as da


@settings(max_examples=300, deadline=None)
@given(context=st.integers(1, 200_000), asked=st.integers(1, 400), head_dim=st.sampled_from(da.HEAD_DIMS),
       group=st.sampled_from([1, 2, 4, 8]))
def test_splits_cover_the_context_in_whole_steps(context, asked, head_dim, group):
    splits, steps = da.split_plan(context, asked, head_dim, group)
    step = da.tokens_per_step(head_dim, group)
    assert steps * step >= context > (steps - 1) * step
    assert splits == min(asked, da.MAX_SPLITS, steps)
    # the kernel's split i covers tokens [i * steps // P * STEP, (i + 1) * steps // P * STEP)
    bounds = [i * steps // splits * step for i in range(splits + 1)]
    assert bounds[0] == 0 and bounds[-1] == steps * step
    sizes = [b - a for a, b in zip(bounds, bounds[1:])]
    assert min(sizes) >= step and max(sizes) - min(sizes) <= step   # as even as whole steps allow


def test_one_long_sequence_fills_every_slot(monkeypatch):
    """1 x 32768 with 8 KV heads on an H200 (132 SMs x 2 blocks): 33 splits, 264 blocks (rounding
    the split length up to whole steps used to give 32 splits and leave 8 SMs one block each)."""
    monkeypatch.setattr(da.nb, "num_sms", lambda: 132)
    want = da.choose_splits(1, 8, 32768, blocks_per_sm=2)
    assert want == 33
    assert da.split_plan(32768, want, 128, 4)[0] == 33
