"""Scheduler properties on random workloads, for every mode."""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pdlab import ServingConfig, run_serving
from pdlab.serving.kv import BlockManager
from pdlab.request import Batch, Request, Sequence, Status, StepResult
from pdlab.serving.policies import AggregatedScheduler, ChunkedScheduler

requests_st = st.lists(
    st.tuples(st.floats(0, 2), st.integers(1, 300), st.integers(1, 40)), min_size=1, max_size=25)


def make(reqs):
    out, t = [], 0.0
    for i, (gap, p, o) in enumerate(reqs):
        t += gap
        out.append(Request(i, t, p, o))
    return out


class Recording:
    """A cost-model executor that also checks every batch it is given."""

    kv_bytes_per_token = 131072        # llama-3-8b

    def __init__(self, budget=None, block_size=16, num_blocks=None):
        self.budget, self.batches = budget, []

    def run(self, batch: Batch) -> StepResult:
        assert batch, "an empty batch was run"
        seen = [id(s) for s, _ in batch.prefills] + [id(s) for s in batch.decodes]
        assert len(seen) == len(set(seen)), "a sequence appears twice in one batch"
        for s, n in batch.prefills:
            assert 1 <= n <= s.num_tokens - s.num_computed
            assert len(s.block_table) * 16 >= s.num_computed + n, "KV blocks not allocated before the step"
        for s in batch.decodes:
            assert s.num_tokens - s.num_computed == 1
        if self.budget is not None:
            assert batch.num_tokens <= self.budget, f"budget {self.budget} exceeded: {batch.num_tokens}"
        self.batches.append((batch.num_prefill_tokens, len(batch.decodes), [(s, n) for s, n in batch.prefills]))
        return StepResult(1e-3 + 1e-5 * batch.num_tokens + 1e-6 * batch.decode_context)

    def transfer_kv(self, *a):
        pass


def check_run(res, reqs):
    ids = set()
    for s in res.sequences:
        ids.add(s.id)
        if s.status is Status.FINISHED:
            assert s.num_output == s.max_new_tokens
            assert len(s.token_times) == s.max_new_tokens
            assert all(a < b for a, b in zip(s.token_times, s.token_times[1:])), "token times must increase"
            assert s.token_times[0] >= s.request.arrival
            assert s.block_table == []
        else:
            assert s.status is Status.REJECTED and s.reject_reason, f"{s} neither finished nor rejected"
    assert ids == {r.id for r in reqs}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests_st, st.sampled_from(["aggregated", "chunked", "disaggregated"]),
       st.integers(4, 60), st.integers(1, 3), st.sampled_from([None, 1, 7, 64]))
def test_every_request_finishes_or_is_rejected_and_no_block_leaks(reqs, mode, num_blocks, replicas, chunk):
    reqs = make(reqs)
    budget = chunk if mode == "chunked" else None
    execs = []

    def factory(name, role, nb, bs):
        execs.append(Recording(budget=(chunk or 512) if mode == "chunked" else None))
        return execs[-1]

    cfg = ServingConfig(mode=mode, model="llama-3-8b", gpu="h100", num_blocks=num_blocks,
                        num_gpus=replicas if mode != "disaggregated" else None,
                        prefill_gpus=replicas, decode_gpus=max(1, replicas - 1), chunk_size=chunk)
    from pdlab.serving import Cluster
    cl = Cluster(cfg, factory)
    res = cl.run(reqs)
    check_run(res, reqs)
    for w in cl.workers:
        w.sched.bm.check()
        assert w.sched.bm.num_free == num_blocks, f"{w.name} leaked {num_blocks - w.sched.bm.num_free} blocks"
        assert not w.sched.has_work()
    if mode == "chunked":
        for e in execs:
            for p, d, _ in e.batches:
                assert p + d <= (chunk or 512)


@settings(max_examples=30, deadline=None)
@given(requests_st)
def test_unlimited_budget_never_splits_a_prompt(reqs):
    reqs = make(reqs)
    rec = []
    cfg = ServingConfig(mode="chunked", chunk_size=10**9, num_blocks=10**6)

    def factory(*a):
        rec.append(Recording())
        return rec[-1]

    run_serving(reqs, cfg, factory)
    for _, _, prefills in rec[0].batches:
        for s, n in prefills:
            assert n == s.prompt_len      # the whole prompt in one chunk


def test_aggregated_prefill_runs_alone():
    bm = BlockManager(100, 16)
    sch = AggregatedScheduler(bm)
    a, b = Sequence(Request(0, 0, 20, 5)), Sequence(Request(1, 0, 30, 5))
    sch.add(a)
    batch = sch.schedule(0)
    assert batch.phase == "prefill"
    sch.postprocess(batch, StepResult(0.1), 0.1)
    sch.add(b)
    batch = sch.schedule(0.1)
    assert batch.phase == "prefill" and batch.prefills[0][0] is b   # a's stream waits
    sch.postprocess(batch, StepResult(0.1), 0.2)
    batch = sch.schedule(0.2)
    assert batch.phase == "decode" and len(batch.decodes) == 2


def test_chunked_decodes_first_then_chunks():
    bm = BlockManager(100, 16)
    sch = ChunkedScheduler(bm, token_budget=64)
    a = Sequence(Request(0, 0, 10, 5))
    sch.add(a)
    sch.postprocess(sch.schedule(0), StepResult(0.01), 0.01)
    b = Sequence(Request(1, 0, 200, 5))
    sch.add(b)
    batch = sch.schedule(0.01)
    assert batch.decodes == [a] and batch.prefills == [(b, 63)]   # 1 decode + 63-token chunk
    assert batch.phase == "mixed"


def test_preemption_under_memory_pressure_recomputes_and_finishes():
    reqs = [Request(i, 0.0, 40, 60) for i in range(6)]
    cfg = ServingConfig(mode="chunked", num_blocks=14, block_size=16, chunk_size=64)
    res = run_serving(reqs, cfg)
    check_run(res, reqs)
    assert sum(s.num_preemptions for s in res.sequences) > 0


def test_too_long_request_is_rejected_with_reason():
    reqs = [Request(0, 0.0, 500, 10), Request(1, 0.1, 10, 10)]
    for mode in ("aggregated", "chunked", "disaggregated"):
        res = run_serving(reqs, ServingConfig(mode=mode, num_blocks=8, block_size=16))
        s0, s1 = res.sequences
        assert s0.status is Status.REJECTED and "KV blocks" in s0.reject_reason
        assert s1.status is Status.FINISHED


def test_disaggregated_transfers_wait_for_decode_memory():
    reqs = [Request(i, 0.0, 60, 40) for i in range(8)]
    res = run_serving(reqs, ServingConfig(mode="disaggregated", num_blocks=16, block_size=16))
    check_run(res, reqs)
    ends = sorted(s.transfer_end for s in res.sequences)
    firsts = sorted(s.token_times[0] for s in res.sequences)
    assert res.transfers >= 8
    # decode memory holds about 3 sequences: later transfers must wait far past their first token
    assert ends[-1] - firsts[-1] > 10 * (ends[0] - firsts[0])


class Constant:
    """Every iteration takes 10 ms: timelines can be computed by hand."""

    kv_bytes_per_token = 131072        # llama-3-8b: 128 KiB of KV per token

    def run(self, batch):
        return StepResult(0.01)

    def transfer_kv(self, *a):
        pass


def test_hand_computed_timeline_chunked_and_aggregated():
    import pytest
    cfg = ServingConfig(mode="chunked", chunk_size=40, num_blocks=100)
    (s,) = run_serving([Request(0, 0.0, 100, 4)], cfg, lambda *a: Constant()).sequences
    # 3 prefill iterations (40 + 40 + 20 tokens), the last one samples token 1; then 3 decodes
    assert s.token_times == pytest.approx([0.03, 0.04, 0.05, 0.06])
    cfg = ServingConfig(mode="aggregated", num_blocks=100)
    a, b = run_serving([Request(0, 0.0, 10, 3), Request(1, 0.015, 10, 2)], cfg, lambda *a: Constant()).sequences
    # a: prefill [0, .01] -> t1; decode [.01, .02] -> t2; b arrived at .015 so [.02, .03] prefills b
    # (a's stream waits: the stall); then both decode [.03, .04]
    assert a.token_times == pytest.approx([0.01, 0.02, 0.04])
    assert b.token_times == pytest.approx([0.03, 0.04])


def test_hand_computed_timeline_disaggregated():
    import pytest
    cfg = ServingConfig(mode="disaggregated", num_blocks=100, link=1.0)   # 1 GB/s, 10 us latency
    (s,) = run_serving([Request(0, 0.0, 64, 3)], cfg, lambda *a: Constant()).sequences
    kv = 64 * 131072           # llama-3-8b: 128 KiB of KV per token
    arrive = 0.01 + 10e-6 + kv / 1e9
    assert s.token_times == pytest.approx([0.01, arrive + 0.01, arrive + 0.02])
    assert s.transfer_end == pytest.approx(arrive)


class Counting:
    """Samples token ``7`` from each sequence's third output on, ``1`` before: a stop token test."""

    kv_bytes_per_token = 131072

    def run(self, batch):
        return StepResult(0.01, [7 if s.num_output >= 2 else 1 for s in batch.sampling()])

    def transfer_kv(self, *a):
        pass


@pytest.mark.parametrize("mode", ["aggregated", "chunked", "disaggregated"])
def test_a_stop_token_ends_a_request_in_every_mode(mode):
    reqs = [Request(0, 0.0, 20, 50, stop_ids=(7,)), Request(1, 0.0, 30, 4)]
    res = run_serving(reqs, ServingConfig(mode=mode, num_blocks=64), lambda *a: Counting())
    a, b = res.sequences
    assert a.output_ids == [1, 1, 7] and a.status is Status.FINISHED     # stopped well before 50
    assert b.output_ids == [1, 1, 7, 7]                                   # no stop ids: runs to max
    assert len(a.token_times) == 3


def test_the_step_hook_sees_every_iteration_before_postprocess():
    seen = []

    def on_step(worker, batch, result):
        # before postprocess: every decode still lacks the KV of its newest token
        assert all(s.num_tokens - s.num_computed == 1 for s in batch.decodes)
        seen.append((worker.name, batch.num_prefill_tokens, len(batch.decodes), result.seconds))

    reqs = [Request(i, 0.002 * i, 50 + i, 5) for i in range(6)]
    res = run_serving(reqs, ServingConfig(mode="chunked", chunk_size=64, num_blocks=200), on_step=on_step)
    assert [(res.workers[s.worker], s.prefill_tokens, s.decode_tokens, pytest.approx(s.end - s.start))
            for s in sorted(res.steps, key=lambda s: s.start)] == seen
    cols = res.steps.columns()
    assert cols.prefill_tokens.sum() == sum(r.prompt_len for r in reqs)
    assert (cols.end > cols.start).all() and cols.kv_blocks_used.max() <= 200
