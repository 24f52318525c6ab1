"""sweep.map returns [fn(x) for x in items] in order, in-process, on local processes and on Dask."""
import pytest

from pdlab import sweep
from pdlab.errors import PdlabError


def _square_after(x):
    import time
    time.sleep(0.01 * (5 - x % 5))        # later items finish first: the order must still hold
    return x * x


def test_in_process_and_local_processes_agree_in_order():
    items = list(range(12))
    expected = [x * x for x in items]
    assert sweep.map(_square_after, items, jobs=1) == expected
    assert sweep.map(_square_after, items, jobs=2) == expected


def test_jobs_must_be_positive():
    with pytest.raises(PdlabError, match="--jobs 0"):
        sweep.map(_square_after, [1], jobs=0)
    assert sweep.default_jobs() >= 1


def test_dask_local_cluster_gives_the_same_list():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        assert sweep.map(_square_after, range(10), dask=client) == [x * x for x in range(10)]


def test_unreachable_dask_scheduler_is_one_clear_error():
    pytest.importorskip("distributed")
    with pytest.raises(PdlabError, match="cannot reach the Dask scheduler"):
        sweep.map(_square_after, [1], dask="tcp://127.0.0.1:9")
