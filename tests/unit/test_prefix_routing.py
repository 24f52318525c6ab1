"""Prefix reuse across replicas: the block manager's books with sharing, eviction and a host tier;
the KV-event index against the caches it mirrors; the kv-aware router's cost; the host tier's
break-even; per-request disaggregation; sessions and their trace formats."""

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pdlab.cli import main
from pdlab.config import ServingConfig
from pdlab.errors import PdlabError
from pdlab.prefixmetrics import upper_bound_hit_rate
from pdlab.request import Request, Sequence
from pdlab.run import run_serving
from pdlab.serving import Cluster
from pdlab.serving.kv import BlockManager, prefix_hashes
from pdlab.serving.kvindex import ApproxIndex, EventIndex
from pdlab.serving.offload import HostTier
from pdlab.serving.router import Router
from pdlab.sessions import SessionSpec, make_sessions
from pdlab.sim import CostModel, CostModelExecutor
from pdlab.traces import read_trace, write_trace

BS = 4


# ---- the block manager's books ---------------------------------------------------------------------
def _prompt(prefix: int, extra: int, tail: int):
    """Token ids: one of a few shared prefixes, then a per-request tail."""
    return tuple([prefix] * (BS * extra)) + tuple(range(100 + prefix, 100 + prefix + tail))


ops_st = st.lists(st.tuples(st.integers(0, 2), st.integers(1, 4), st.integers(1, 9), st.booleans()),
                  min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(ops_st, st.integers(6, 30), st.integers(0, 12))
def test_refcounts_balance_and_hits_serve_only_their_own_prefix(ops, num_blocks, host_blocks):
    bm = BlockManager(num_blocks, BS, enable_prefix_cache=True)
    if host_blocks:
        bm.host = HostTier(host_blocks, BS, bytes_per_token=1, gbps=1.0)
    content: dict[int, int] = {}       # block -> the prefix hash its KV was computed for
    live: list[Sequence] = []
    for i, (prefix, extra, tail, finish_one) in enumerate(ops):
        ids = _prompt(prefix, extra, tail)
        s = Sequence(Request(i, 0.0, len(ids), 3, prompt_ids=ids))
        hashes = bm.prefix_hashes(s)
        bm.match_prefix(s)
        dev = (s.num_cached - s.num_reloaded) // BS
        for k, b in enumerate(s.block_table[:dev]):     # a device hit is the KV of this very prefix
            assert content[b] == hashes[k]
        if not bm.can_allocate(s, s.num_tokens - s.num_computed):
            bm.unmatch(s)
            assert s.block_table == [] and s.num_computed == 0
        else:
            bm.allocate(s, s.num_tokens - s.num_computed)
            s.num_computed = s.num_tokens                 # the step computed (or reloaded) the prompt
            bm.register_prefix(s)
            for k in range(min(len(hashes), s.prompt_len // BS)):
                if bm._hash_of.get(s.block_table[k]) == hashes[k]:
                    content[s.block_table[k]] = hashes[k]
            live.append(s)
        if finish_one and live:
            bm.free(live.pop(0))
        bm.check()
        refs = np.zeros(num_blocks, int)
        for t in live:
            for b in t.block_table:
                refs[b] += 1
        assert list(refs) == bm.ref                       # every reference is a table entry, and back
        if bm.host is not None:
            assert len(bm.host) <= host_blocks
    for t in live:
        bm.free(t)
    assert bm.num_free == num_blocks and not any(bm.ref)
    bm.check()


def test_unmatch_undoes_the_lookup():
    bm = BlockManager(8, BS, enable_prefix_cache=True)
    a = Sequence(Request(0, 0.0, 9, 2, prompt_ids=tuple(range(9))))
    bm.allocate(a, 9)
    a.num_computed = 9
    bm.register_prefix(a)
    bm.free(a)
    b = Sequence(Request(1, 0.0, 9, 2, prompt_ids=tuple(range(9))))
    assert bm.match_prefix(b) == 8 and bm.hits == 8 and bm.queries == 9
    bm.unmatch(b)
    assert (bm.hits, bm.queries, b.num_computed, b.block_table) == (0, 0, 0, [])
    assert bm.num_free == 8
    bm.check()


# ---- the router's view of the caches --------------------------------------------------------------------
def shared_requests(n=60, seed=0, prefixes=4, rate=3.0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = int(rng.integers(prefixes))
        ids = tuple(1000 * p + k for k in range(int(rng.integers(1, 5)))) + (10**6 + i,)
        out.append(Request(i, i / rate, 512 * len(ids) - int(rng.integers(1, 200)), int(rng.integers(1, 60)),
                           block_hashes=ids))
    return out


def _cluster(**kw):
    cfg = ServingConfig(**{"mode": "chunked", "num_gpus": 3, "prefix_cache": True, "router": "kv-aware", **kw})
    cm = CostModel.from_names(cfg.gpu, cfg.model)
    ex = CostModelExecutor(cm)
    return Cluster(cfg, lambda *a: ex, kw.get("num_blocks", 600),
                   recompute_s=lambda t, c: cm.prefill_time(t + 1, c) - cm.prefill_time(1, c + t))


@pytest.mark.parametrize("offload", [0.0, 0.05])
def test_event_index_mirrors_every_cache(offload):
    c = _cluster(num_blocks=500, offload_gb=offload)
    c.run(shared_requests(80, seed=3))
    assert c.index.events > 0
    for w in c.workers:
        assert c.index.device[w.index] == set(w.sched.bm._block_of)
        host = w.sched.bm.host
        assert c.index.host[w.index] == (set(host._lru) if host else set())


class _Fake:
    def __init__(self, i, queued, active, overlap):
        self.index, self.name = i, f"w{i}"
        self.sched = SimpleNamespace(kv_load=lambda: (queued, active), load=queued + active)
        self.overlap = overlap


class _FakeIndex:
    def __init__(self, workers):
        self.w = workers

    def overlap(self, i, hashes, now):
        return self.w[i].overlap

    def routed(self, *a):
        pass


loads_st = st.lists(st.tuples(st.integers(0, 500), st.integers(0, 5000), st.integers(0, 40), st.integers(0, 10)),
                    min_size=1, max_size=8)


@settings(max_examples=80, deadline=None)
@given(loads_st, st.floats(0.0, 4.0))
def test_kv_aware_with_overlap_weight_zero_is_least_loaded_on_blocks(loads, lw):
    workers = [_Fake(i, q, a, (d, h)) for i, (q, a, d, h) in enumerate(loads)]
    cfg = ServingConfig(router="kv-aware", overlap_weight=0.0, load_weight=lw if lw > 0 else 1.0)
    r = Router("kv-aware", workers, cfg, _FakeIndex(workers))
    seq = Sequence(Request(0, 0.0, 700, 5, block_hashes=(1, 2)))
    expected = min(workers, key=lambda w: w.sched.kv_load()[1])     # fewest active blocks, first wins ties
    assert r.pick(seq) is expected


@settings(max_examples=60, deadline=None)
@given(loads_st)
def test_kv_aware_cost_is_dynamos(loads):
    workers = [_Fake(i, q, a, (d, h)) for i, (q, a, d, h) in enumerate(loads)]
    cfg = ServingConfig(router="kv-aware", overlap_weight=2.5)
    r = Router("kv-aware", workers, cfg, _FakeIndex(workers))
    seq = Sequence(Request(0, 0.0, 700, 5, block_hashes=(1, 2)))
    need = -(-700 // 16)
    want = [2.5 * (max(0.0, need - d - 0.75 * h) + q) + a for q, a, d, h in loads]
    assert r.costs(seq, 0.0, workers) == pytest.approx(want)
    assert r.pick(seq) is workers[int(np.argmin(want))]


def test_temperature_samples_every_replica_but_favours_the_cheap_one():
    workers = [_Fake(i, 0, a, (0, 0)) for i, a in enumerate([100, 400, 400])]
    r = Router("kv-aware", workers, ServingConfig(router="kv-aware", router_temperature=0.3), _FakeIndex(workers))
    seq = Sequence(Request(0, 0.0, 64, 5))
    picks = [r.pick(seq).index for _ in range(600)]
    counts = np.bincount(picks, minlength=3)
    assert counts.min() > 0 and counts[0] > counts[1] and counts[0] > counts[2]


def test_approximate_index_forgets_after_its_ttl():
    idx = ApproxIndex(2, ttl_s=10.0)
    idx.routed(1, (5, 6, 7), now=0.0)
    assert idx.overlap(1, (5, 6, 8), 9.0) == (2, 0) and idx.overlap(0, (5, 6), 9.0) == (0, 0)
    assert idx.overlap(1, (5, 6), 10.5) == (0, 0)


def test_kv_aware_beats_round_robin_on_hits_and_the_load_term_prevents_a_hot_spot():
    reqs = shared_requests(90, seed=5)
    hit = {r: run_serving(reqs, ServingConfig(num_gpus=3, prefix_cache=True, router=r, num_blocks=2000)).summary()
           for r in ("round-robin", "kv-aware")}
    assert hit["kv-aware"]["prefix_hit_rate"] > hit["round-robin"]["prefix_hit_rate"]
    # one popular prefix: pure affinity (load weight 0) sends everything to the replica that has it
    hot = [Request(i, i / 20.0, 4000, 100, block_hashes=(7, 8, 9, 10 + i)) for i in range(60)]
    share = {}
    for lw in (0.0, 1.0):
        s = run_serving(hot, ServingConfig(num_gpus=3, prefix_cache=True, router="kv-aware", load_weight=lw)).summary()
        share[lw] = max(s["replica_load"]["requests"]) / len(hot)
    assert share[0.0] > 0.95 and share[1.0] < 0.6


def test_events_and_approximate_both_find_the_cache():
    reqs = shared_requests(90, seed=6)
    runs = {ev: run_serving(reqs, ServingConfig(num_gpus=3, prefix_cache=True, router="kv-aware", kv_events=ev,
                                                num_blocks=3000)).summary() for ev in (True, False)}
    rr = run_serving(reqs, ServingConfig(num_gpus=3, prefix_cache=True, router="round-robin",
                                         num_blocks=3000)).summary()
    for s in runs.values():
        assert s["prefix_hit_rate"] > rr["prefix_hit_rate"]
    assert runs[False]["prefix_counters"]["router_index"].startswith("approximate")


# ---- the host tier --------------------------------------------------------------------------------------
def test_host_tier_reloads_only_when_the_copy_beats_recompute_and_charges_it():
    reqs = shared_requests(120, seed=7, prefixes=12, rate=2.0)
    base = dict(num_gpus=1, prefix_cache=True, num_blocks=400)
    none = run_serving(reqs, ServingConfig(**base)).summary()
    fast = run_serving(reqs, ServingConfig(**base, offload_gb=1.0, offload_link="pcie5")).summary()
    slow = run_serving(reqs, ServingConfig(**base, offload_gb=1.0, offload_link="0.001")).summary()
    assert fast["prefix_hit_rate_host"] > 0 and fast["ttft_split_s"]["transfer"]["p99"] > 0
    assert fast["prefill_tokens_computed"] < none["prefill_tokens_computed"]
    assert slow["prefix_hit_rate_host"] == 0 and slow["prefix_counters"]["host_reloads_declined"] > 0
    assert fast["prefix_hit_rate_device"] + fast["prefix_hit_rate_host"] <= fast["prefix_hit_rate_upper_bound"] + 1e-9


def test_upper_bound_is_what_an_unbounded_cache_reaches():
    reqs = shared_requests(60, seed=8, rate=0.2)            # spaced out: no two prompts in flight together
    s = run_serving(reqs, ServingConfig(num_gpus=1, prefix_cache=True, num_blocks=100000)).summary()
    assert s["prefix_hit_rate"] == pytest.approx(upper_bound_hit_rate(reqs, 16))
    assert 0 < s["prefix_hit_rate_upper_bound"] < 1


# ---- per-request disaggregation ---------------------------------------------------------------------------
@pytest.mark.parametrize("threshold,local", [(0, False), (10**6, True)])
def test_disagg_threshold_prefills_short_prompts_on_the_decode_worker(threshold, local):
    reqs = shared_requests(40, seed=9)
    s = run_serving(reqs, ServingConfig(mode="disaggregated", prefix_cache=True, disagg_threshold=threshold)).summary()
    assert s["completed"] == 40
    if local:
        assert s["prefix_counters"]["local_prefills"] == 40 and s["kv_transfers"] == 0
    else:
        moved = sum(r.max_new_tokens > 1 for r in reqs)          # a one-token answer never leaves its prefill worker
        assert "local_prefills" not in s["prefix_counters"] and s["kv_transfers"] == moved


def test_a_sessions_next_turn_is_prefilled_where_its_history_landed():
    """The KV that crossed the link is named on the decode worker, so the next turn's uncached
    part (the last answer and the new question) is short enough to prefill there."""
    spec = SessionSpec(turns=4, user_len=100, answer_len=100, think_s=5.0, system_len=1000)
    reqs = make_sessions(60, 1.0, spec, seed=4)
    assert min(r.prompt_len for r in reqs) > 600           # nothing is short without its history cached
    s = run_serving(reqs, ServingConfig(mode="disaggregated", decode_gpus=2, prefix_cache=True,
                                        disagg_threshold=600)).summary()
    later_turns = 60 - len({r.session_id for r in reqs})
    assert s["completed"] == 60 and later_turns > 10
    assert 0.5 * later_turns <= s["prefix_counters"].get("local_prefills", 0) <= later_turns


def test_bad_flag_combinations_are_one_line():
    with pytest.raises(PdlabError, match="needs --prefix-cache"):
        ServingConfig(offload_gb=10).validate()
    with pytest.raises(PdlabError, match="needs --mode disaggregated"):
        ServingConfig(disagg_threshold=512).validate()
    with pytest.raises(PdlabError, match="unknown router"):
        ServingConfig(router="sticky").validate()


# ---- sessions and their traces ------------------------------------------------------------------------------
def test_a_sessions_next_turn_extends_its_history():
    spec = SessionSpec(turns=5, system_len=64, shared_system=True)
    reqs = make_sessions(200, 2.0, spec, seed=1)
    by = {}
    for r in reqs:
        by.setdefault(r.session_id, []).append(r)
    multi = [t for t in by.values() if len(t) > 1]
    assert multi
    for turns in multi:
        for a, b in zip(turns, turns[1:]):
            assert b.arrival >= a.arrival and b.prompt_len > a.prompt_len + a.max_new_tokens - 1
            full = a.prompt_len // 16
            assert b.block_hashes[:full] == a.block_hashes[:full]      # the history is the same blocks
    firsts = [t[0].block_hashes[:4] for t in by.values()]
    assert all(f == firsts[0] for f in firsts)                          # one shared system prompt


def test_session_trace_round_trip(tmp_path):
    reqs = make_sessions(50, 1.0, "chat-sessions", seed=2)
    p = tmp_path / "s.csv"
    write_trace(reqs, p)
    back = read_trace(p)
    assert [(r.session_id, r.prompt_len, r.block_hashes) for r in back] == \
           [(str(r.session_id), r.prompt_len, r.block_hashes) for r in reqs]
    assert [r.arrival for r in back] == pytest.approx([r.arrival for r in reqs], abs=1e-6)


def test_prefix_len_sessions_share_blocks(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("session_id,arrived_at,num_prefill_tokens,num_decode_tokens,prefix_len\n"
                 "a,0,100,50,0\nb,1,80,5,0\na,5,300,20,150\n")
    a1, b1, a2 = read_trace(p)
    # the 6 whole blocks of turn 1's prompt carry over; its partial 7th block is completed by the answer
    assert a2.block_hashes[:6] == a1.block_hashes[:6] and a2.block_hashes[6] != a1.block_hashes[6]
    assert not set(b1.block_hashes) & set(a1.block_hashes)
    s = Sequence(a2)
    assert len(prefix_hashes(s, 16)) == 300 // 16


@pytest.mark.parametrize("name,text,msg", [
    ("back.csv", "session_id,arrived_at,num_prefill_tokens,num_decode_tokens,prefix_len\n"
                 "a,5,100,50,0\nb,1,100,5,0\na,4,300,20,100\n", "back.csv:4: session a goes back in time"),
    ("ids.csv", "session_id,arrived_at,num_prefill_tokens,num_decode_tokens,hash_ids\n"
                "a,0,100,50,1 2 x\n", "ids.csv:2: 'hash_ids' must be integers"),
    ("long.csv", "session_id,arrived_at,num_prefill_tokens,num_decode_tokens,prefix_len\n"
                 "a,0,100,50,0\na,1,300,5,200\n", "long.csv:3: prefix_len 200 must be between 0 and 150"),
    ("ids.jsonl", '{"timestamp": 0, "input_length": 9, "output_length": 2, "hash_ids": [1, true]}\n',
     "ids.jsonl:1: 'hash_ids' must be a list of integers"),
    ("str.jsonl", '{"timestamp": 0, "input_length": 9, "output_length": 2, "hash_ids": "0 1"}\n',
     "str.jsonl:1: 'hash_ids' must be a list of integers"),
    ("back.jsonl", '{"timestamp": 900, "input_length": 9, "output_length": 2, "session_id": 3}\n'
                   '{"timestamp": 100, "input_length": 9, "output_length": 2, "session_id": 3}\n',
     "back.jsonl:2: session 3 goes back in time"),
])
def test_bad_session_traces_are_one_line_naming_file_and_line(tmp_path, capsys, name, text, msg):
    p = tmp_path / name
    p.write_text(text)
    assert main(["simulate", "--trace", str(p), "--prefix-cache"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and msg in err and str(p) in err


def test_simulate_json_has_the_prefix_keys(capsys):
    assert main(["simulate", "--workload", "agent-sessions", "--num-requests", "80", "--num-gpus", "2",
                 "--prefix-cache", "--router", "kv-aware", "--offload-gb", "5", "--json"]) == 0
    import json
    d = json.loads(capsys.readouterr().out)
    for k in ("prefix_hit_rate_device", "prefix_hit_rate_host", "prefix_hit_rate_upper_bound",
              "prefill_tokens_recomputed", "ttft_split_s", "replica_load", "router"):
        assert k in d
    assert set(d["ttft_split_s"]) == {"queueing", "transfer", "compute"}
    assert len(d["replica_load"]["kv_blocks"]) == 2 and sum(d["replica_load"]["requests"]) == 80


def test_lab07_quotes_the_replicas_kv_capacity():
    from pathlib import Path

    from pdlab.lab.routing import LAB07
    from pdlab.run import cost_model_for
    text = (Path(__file__).resolve().parents[2] / "labs" / "src" / "07_prefix_and_routing.py").read_text()
    tokens = cost_model_for(LAB07).num_blocks(LAB07.block_size) * LAB07.block_size
    assert f"~{round(tokens, -4) // 1000}k tokens of KV each" in text.replace("\n# ", " ")
