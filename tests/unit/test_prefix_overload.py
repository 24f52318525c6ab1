"""Overload with a prefix cache never loses a request: every request finishes or is rejected,
whatever the memory pressure, replicas and mode (a preempted or unadmitted sequence must not keep
the prefix blocks it matched while it waits)."""

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from pdlab.config import ServingConfig
from pdlab.request import Request, Status
from pdlab.run import run_serving


def shared_prefix_requests(n, seed, prefixes=3):
    """``n`` requests drawing on a few shared prefixes (ids of 512-token blocks, as in Mooncake)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = int(rng.integers(prefixes))
        shared = int(rng.integers(1, 4))
        own = int(rng.integers(0, 3))
        ids = tuple(1000 * p + k for k in range(shared)) + tuple(10**6 + 10 * i + k for k in range(own))
        plen = 512 * len(ids) - int(rng.integers(0, 300))
        out.append(Request(i, 0.05 * i, plen, int(rng.integers(1, 200)), block_hashes=ids, hash_block=512))
    return out


def _all_accounted(res):
    states = {s.status for s in res.sequences}
    assert states <= {Status.FINISHED, Status.REJECTED}, states
    res.summary()             # raises if a request was neither finished nor rejected


def test_overload_never_loses_a_request():
    """The case that hung: chunked + prefix cache + preemption + 3 replicas."""
    reqs = shared_prefix_requests(120, seed=1)
    res = run_serving(reqs, ServingConfig(mode="chunked", num_gpus=3, prefix_cache=True, num_blocks=260))
    assert sum(s.num_preemptions for s in res.sequences) > 0      # the overload did preempt
    _all_accounted(res)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**6), st.sampled_from(["aggregated", "chunked", "disaggregated"]),
       st.integers(1, 3), st.integers(130, 400))
def test_overload_never_loses_a_request_any_mode(seed, mode, replicas, num_blocks):
    reqs = shared_prefix_requests(40, seed)
    cfg = ServingConfig(mode=mode, num_gpus=replicas if mode != "disaggregated" else None,
                        prefill_gpus=replicas, decode_gpus=1, prefix_cache=True, num_blocks=num_blocks)
    _all_accounted(run_serving(reqs, cfg))
