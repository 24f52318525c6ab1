"""Serving, independent of any clock: requests' KV blocks, the scheduling policies, the router,
KV links, workers and the event loop. Nothing here knows what a step costs; an executor says."""

from .cluster import Cluster, ExecutorFactory, RunResult
from .events import StepLog, StepRecord
from .kv import BlockManager
from .policies import AggregatedScheduler, ChunkedScheduler, DecodeOnlyScheduler, PrefillOnlyScheduler
from .router import ROUTERS, Router
from .scheduler import INF, Scheduler
from .worker import Executor, Worker

__all__ = ["AggregatedScheduler", "BlockManager", "ChunkedScheduler", "Cluster", "DecodeOnlyScheduler",
           "Executor", "ExecutorFactory", "INF", "PrefillOnlyScheduler", "ROUTERS", "Router", "RunResult",
           "Scheduler", "StepLog", "StepRecord", "Worker"]
