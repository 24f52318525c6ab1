from hypothesis import given, settings, strategies as st

from pdlab.serving.kv import BlockManager, chain_hashes
from pdlab.request import Request, Sequence


def seq(i, prompt, ids=None):
    return Sequence(Request(i, 0.0, prompt, 4, prompt_ids=ids))


def test_allocate_grows_by_blocks_and_free_returns_everything():
    bm = BlockManager(10, block_size=4)
    s = seq(0, 9)
    assert bm.blocks_needed(s, 9) == 3
    bm.allocate(s, 9)
    assert len(s.block_table) == 3 and bm.num_free == 7
    s.num_computed = 9
    assert bm.blocks_needed(s, 3) == 0      # 12 tokens still fit 3 blocks
    assert bm.blocks_needed(s, 4) == 1
    bm.free(s)
    assert bm.num_free == 10 and s.block_table == []
    bm.check()


def test_prefix_cache_reuses_blocks_and_evicts_lru():
    bm = BlockManager(6, block_size=4, enable_prefix_cache=True)
    ids = tuple(range(13))
    a = seq(0, 13, ids)
    assert bm.match_prefix(a) == 0
    bm.allocate(a, 13)
    a.num_computed = 13
    bm.register_prefix(a)
    bm.free(a)
    assert bm.num_free == 6          # cached blocks count as free (evictable)
    b = seq(1, 13, ids)
    assert bm.match_prefix(b) == 12  # 3 full blocks reused
    assert b.num_computed == 12 and b.num_cached == 12
    bm.allocate(b, 1)
    bm.check()
    # a different prompt needing every block evicts the cached ones
    bm.free(b)
    c = seq(2, 24, tuple(range(100, 124)))
    bm.allocate(c, 24)
    assert len(c.block_table) == 6
    bm.check()


def test_match_leaves_one_token_to_compute():
    bm = BlockManager(8, block_size=4, enable_prefix_cache=True)
    ids = tuple(range(8))
    a = seq(0, 8, ids)
    bm.allocate(a, 8)
    a.num_computed = 8
    bm.register_prefix(a)
    b = seq(1, 8, ids)
    assert bm.match_prefix(b) == 4   # not 8: the last prompt token must run to sample a token


def test_chain_hashes_depend_on_prefix():
    x = chain_hashes(list(range(8)), 4)
    y = chain_hashes([99, 1, 2, 3] + list(range(4, 8)), 4)
    assert x[0] != y[0] and x[1] != y[1]   # same second block, different prefix


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.booleans()), min_size=1, max_size=30),
       st.integers(1, 8), st.booleans())
def test_random_alloc_free_never_leaks(ops, block_size, prefix):
    bm = BlockManager(64, block_size, enable_prefix_cache=prefix)
    live = []
    for i, (n, do_free) in enumerate(ops):
        s = seq(i, n, tuple(x % 3 for x in range(n)))
        bm.match_prefix(s)
        rest = n - s.num_computed
        if bm.can_allocate(s, rest):
            bm.allocate(s, rest)
            s.num_computed = n
            bm.register_prefix(s)
            live.append(s)
        else:
            bm.free(s)
        if do_free and live:
            bm.free(live.pop(0))
        bm.check()
    for s in live:
        bm.free(s)
    bm.check()
    assert bm.num_free == 64


def test_prefix_cache_hit_rate_on_shared_prefixes():
    from pdlab import ServingConfig, run_serving
    from pdlab.request import Request
    shared = tuple(range(512))     # a 512-token system prompt every request starts with
    reqs = [Request(i, 0.05 * i, 512 + 64, 8, prompt_ids=shared + tuple(range(1000 + 64 * i, 1064 + 64 * i)))
            for i in range(10)]
    on = run_serving(reqs, ServingConfig(mode="chunked", num_blocks=500, prefix_cache=True)).summary()
    off = run_serving(reqs, ServingConfig(mode="chunked", num_blocks=500)).summary()
    # 9 of 10 requests reuse 512 of their 576 prompt tokens
    assert on["prefix_hit_rate"] == 9 * 512 / (10 * 576)
    assert "prefix_hit_rate" not in off
    assert on["ttft_s"]["mean"] < off["ttft_s"]["mean"]
