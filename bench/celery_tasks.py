"""Baseline tasks loaded into the benchmark's worker with ``--include bench.celery_tasks``.

They run in the very worker process (same broker, same pool, same settings) as the
orchestrator's chain, so the two can be compared in one run.
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from typing import Any

from celery import current_app, shared_task
from celery.signals import worker_process_init

from orchestrator.rendezvous import get_redis


@shared_task(name="bench.noop")
def noop() -> None:
    """Do nothing."""


@shared_task(name="bench.stamp")
def stamp(key: str, sent: float) -> None:
    """Record when this task started, next to when it was sent, on a Redis list."""
    started = time.time()
    settings = current_app.conf["orchestrator_settings"]
    get_redis(settings.redis_url).rpush(key, f"{sent!r} {started!r}")


# --- memory diagnosis: BENCH_TRACEMALLOC=1 in the worker's environment ------------------------

if os.environ.get("BENCH_TRACEMALLOC"):

    @worker_process_init.connect
    def _trace_allocations(**_: Any) -> None:
        tracemalloc.start(12)


@shared_task(name="bench.memtop")
def memtop(key: str, limit: int = 12) -> None:
    """Push this pool process's largest live allocation sites (tracemalloc) to a Redis list."""
    settings = current_app.conf["orchestrator_settings"]
    client = get_redis(settings.redis_url)
    if not tracemalloc.is_tracing():
        client.rpush(key, json.dumps({"pid": os.getpid(), "tracing": False}))
        return
    snapshot = tracemalloc.take_snapshot()
    total = sum(stat.size for stat in snapshot.statistics("filename"))
    top = [
        {
            "kb": round(stat.size / 1024, 1),
            "count": stat.count,
            "where": [
                f"{f.filename.split('site-packages/')[-1]}:{f.lineno}" for f in stat.traceback
            ],
        }
        for stat in snapshot.statistics("traceback")[:limit]
    ]
    client.rpush(
        key, json.dumps({"pid": os.getpid(), "traced_mb": round(total / 2**20, 1), "top": top})
    )
