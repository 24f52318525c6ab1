"""Disaggregated serving across processes on the CPU (gloo): the prompt is prefilled in one
worker process, its KV crosses to another over torch.distributed, decoding continues there.
Scheduling and the transport change latency, never the answer; a full decode worker holds
transfers back without losing anything; a dead worker stops the run with a clear error."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pdlab import ServingConfig, run_serving
from pdlab.engine.executor import factory
from pdlab.request import Status

from engine_support import story_requests

pytestmark = pytest.mark.slow     # starting worker processes takes seconds; still runs in CI

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runtime():
    from pdlab.dist.launch import Runtime
    rt = Runtime.spawn(2, ["prefill0", "decode0"], timeout=60, num_blocks=64, block_size=16)
    yield rt
    rt.close()


def _cfg(mode="disaggregated", num_blocks=64, block_size=16):
    return ServingConfig(mode=mode, model="tiny", gpu="cpu", num_blocks=num_blocks, block_size=block_size)


@pytest.fixture(scope="module")
def workload():
    return story_requests(gap=0.01)


@pytest.fixture(scope="module")
def aggregated(tiny, workload):
    """The same requests served in one process by the aggregated scheduler."""
    res = run_serving(workload, _cfg("aggregated"), executor_factory=factory(tiny, device="cpu"))
    return res.summary(), {s.id: list(s.output_ids) for s in res.sequences}


@pytest.mark.parametrize("transfer", ["per-layer", "per-block"])
def test_1p1d_tokens_match_aggregated(runtime, workload, aggregated, transfer):
    from pdlab.dist.serve import serve
    res, summary, log = serve(runtime, workload, _cfg(), transfer)
    agg_summary, agg_tokens = aggregated
    assert all(s.status is Status.FINISHED for s in res.sequences)
    assert {s.id: list(s.output_ids) for s in res.sequences} == agg_tokens
    assert set(agg_summary) - {"mode"} <= set(summary)           # the same metrics JSON, plus extras
    handed = [r for r in workload if r.max_new_tokens > 1]
    # one transfer per prefill step and decode worker: the sequences it completed travel together
    assert res.transfers == len(handed) == sum(rec["sequences"] for rec in log)
    for rec in log:
        assert rec["bytes"] == rec["blocks"] * 16 * runtime.kv_bytes_per_token > 0
    # the prefill worker emitted every first token; nothing else was prefilled on the decode side
    roles = res.roles
    assert all(s.worker == "prefill0" for s in res.sequences)
    assert sum(st.prefill_tokens for st in res.steps if roles[st.worker] == "decode") == 0
    if transfer == "per-layer":
        assert any(rec["overlapped"] for rec in log)            # sent while the prefill ran
    else:
        assert not any(rec["overlapped"] for rec in log)
    assert summary["kv_transfer"]["count"] == len(log)
    assert all(r["nccl_nvls_enable"] == "0" for r in runtime.ready)   # NVLink multicast stays off


def test_full_decode_worker_loses_nothing(runtime, workload, aggregated):
    """12 blocks of 16 tokens hold about two streams: the others' KV waits on the prefill worker
    (held, not dropped) until decode blocks free up, and every answer is still the same."""
    from pdlab.dist.serve import serve
    burst = story_requests(gap=0.0)
    res, _, log = serve(runtime, burst, _cfg(num_blocks=12), "per-layer")
    assert all(s.status is Status.FINISHED for s in res.sequences)
    assert all(len(s.output_ids) == s.max_new_tokens for s in res.sequences)
    assert {s.id: list(s.output_ids) for s in res.sequences} == aggregated[1]
    held = [rec for rec in log if not rec["overlapped"]]
    assert held, "no transfer had to wait for decode memory"
    # a held sequence got its first token from the prefill worker well before its KV could move
    waited = [s for s in res.sequences if s.transfer_start is not None and s.transfer_start > s.token_times[0]]
    assert waited
    dec = res.roles.index("decode")
    assert max(st.kv_blocks_used for st in res.steps if st.worker == dec) <= 12


def test_dead_worker_stops_the_run(tmp_path):
    """decode0 SIGKILLs itself after 2 steps: the launcher names it, stops the prefill worker
    and exits 1 long before the timeout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t = time.time()
    p = subprocess.run([sys.executable, "-m", "pdlab", "serve-disagg", "--kill-worker", "decode0:2",
                        "--num-requests", "6", "--input-len", "24", "--output-len", "12", "--rate", "50",
                        "--timeout", "120", "--num-blocks", "32"],
                       capture_output=True, text=True, timeout=200, env=env, cwd=tmp_path)
    took = time.time() - t
    assert p.returncode == 1, p.stderr
    err = p.stderr.strip().splitlines()
    assert err and "decode0" in err[-1] and "killed by signal 9" in err[-1] and "stopped all workers" in err[-1], p.stderr
    assert "Traceback" not in p.stderr
    assert took < 100


def test_bad_flags_get_one_line(capsys):
    from pdlab.cli import main
    for argv, what in ((["serve-disagg", "--backend", "nccl"], "--backend nccl needs --device cuda"),
                       (["serve-disagg", "--kill-worker", "decode7:2"], "--kill-worker decode7:2"),
                       (["serve-disagg", "--mode", "chunked", "--transfer", "per-block"], "--transfer per-block"),
                       (["serve-disagg", "--replicas", "2"], "--replicas is for --mode aggregated|chunked")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert what in err and len(err.strip().splitlines()) == 1, err


def test_torchrun_starts_the_same_run(tmp_path):
    """Under torchrun rank 0 coordinates and ranks 1.. are the workers (the multi-host path)."""
    import json
    import shutil
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not installed")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "3", "-m", "pdlab", "serve-disagg",
                        "--num-requests", "4", "--input-len", "24", "--output-len", "6", "--rate", "50",
                        "--json", "--timeout", "120"], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["completed"] == 4 and out["mode"] == "disaggregated"
    assert out["kv_transfer"]["count"] >= 1 and out["workers"] == ["prefill0", "decode0"]
