"""Benchmark 3: jobs per second, submit to completed, against raw Celery chains.

Orchestrator: 1,000 jobs of 5 items submitted through the API from 8 threads, the robot
stand-in instant (``bench.responder --mode instant``: 202, then one signed batch.completed
carrying the 5 item results), the settle countdown at its default (2 s). Rate = jobs / (last
``finished_at`` - first submit). A second orchestrator case uses a robot that reports every item
(``instant_items``: item.started + item.completed per item, then batch.completed: 11 callbacks a
job, like the simulator with ``--item-delay 0``).

Baseline, same broker and worker, run before and after (A-B-A-B-A, to expose drift on a shared
machine): 1,000 chains of five no-op tasks (``bench.noop`` x 4 + ``bench.stamp``) sent from one
thread; rate = chains / (last chain's last task start - first send).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery import chain
from sqlalchemy import text

from orchestrator.local.processes import Process, answers, free_port, procfile, wait_until

from .common import (
    MachineLoad,
    Stack,
    emit,
    note,
    profiled,
    quiet_until,
    ratio,
    summary,
)

NAME = "throughput"


def _raw_chains(stack: Stack, count: int) -> dict[str, Any]:
    client = stack.celery_client()
    key = f"bench:chain:{uuid.uuid4().hex}"
    noop = client.signature("bench.noop", immutable=True)
    load = MachineLoad()
    start = time.time()
    for _ in range(count):
        chain(
            noop,
            noop,
            noop,
            noop,
            client.signature("bench.stamp", args=(key, time.time()), immutable=True),
        ).apply_async()
    sent_s = time.time() - start
    seen, progress = 0, time.monotonic()
    while seen < count and time.monotonic() - progress < 30:  # stop when stuck for 30 s
        time.sleep(0.05)
        now_seen = int(stack.redis.llen(key))
        if now_seen != seen:
            seen, progress = now_seen, time.monotonic()
    stamps = [tuple(float(v) for v in raw.split()) for raw in stack.redis.lrange(key, 0, -1)]
    client.close()
    stack.redis.delete(key)
    last = max(st for _, st in stamps)
    elapsed = last - start
    return {
        "chains": len(stamps),
        "tasks_per_chain": 5,
        "seconds": round(elapsed, 2),
        "chains_per_s": round(len(stamps) / elapsed, 1),
        "send_seconds": round(sent_s, 2),
        "chain_latency_ms": summary((st - s) * 1000 for s, st in stamps),
        "machine_busy_pct": load.close(),
        "cpu_ms_per_chain": load.cpu_ms_per(len(stamps)),
    }


def _counters(stack: Stack) -> dict[str, int]:
    """Redis commands (the private server: this run only) and this database's transactions
    and written rows, so far."""
    commands = int(stack.redis.info("stats")["total_commands_processed"])
    with stack.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT xact_commit + xact_rollback, tup_inserted + tup_updated + tup_deleted "
                "FROM pg_stat_database WHERE datname = current_database()"
            )
        ).one()
    return {
        "redis_commands": commands,
        "db_transactions": int(row[0]),
        "db_rows_written": int(row[1]),
    }


def _per_job(before: dict[str, int], after: dict[str, int], count: int) -> dict[str, float]:
    return {f"{k}_per_job": round((after[k] - before[k]) / count, 1) for k in before}


def _orchestrator(
    stack: Stack, count: int, items: int, mode: str, base: str | None = None
) -> dict[str, Any]:
    stack.http().post(f"{stack.robot}/_bench/mode", json={"mode": mode}, timeout=5)
    before = stack.robot_stats()
    counted = _counters(stack)
    load = MachineLoad()
    start = time.time()
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: stack.submit(items, base=base), range(count)))
    submit_s = time.time() - start
    pending = set(ids)
    progress = time.monotonic()
    while pending and time.monotonic() - progress < 60:  # stop when stuck for 60 s
        time.sleep(0.25)
        still = stack.open_jobs(pending)
        if len(still) != len(pending):
            progress = time.monotonic()
        pending = still
    rows = stack.job_times(ids)
    with stack.engine.connect() as conn:
        items_ok = conn.execute(
            text("SELECT count(*) FROM items WHERE job_id = ANY(:ids) AND status = 'success'"),
            {"ids": ids},
        ).scalar()
    after = stack.robot_stats()
    time.sleep(1.0)  # PostgreSQL publishes its counters within a second
    costs = _per_job(counted, _counters(stack), count)
    completed = [r for r in rows if r[0] == "completed"]
    last = max(float(r[2]) for r in completed) if completed else time.time()
    elapsed = last - start
    return {
        "jobs": count,
        "items_per_job": items,
        "robot_mode": mode,
        "completed": len(completed),
        "not_completed": count - len(completed),
        "items_success": int(items_ok or 0),
        "seconds": round(elapsed, 2),
        "jobs_per_s": round(len(completed) / elapsed, 1),
        "submit_seconds": round(submit_s, 2),
        "submits_per_s": round(count / submit_s, 1),
        "job_latency_ms": summary((float(r[2]) - float(r[1])) * 1000 for r in completed),
        "dispatches": after["dispatches"] - before["dispatches"],
        "duplicate_dispatches": after["duplicateDispatches"] - before["duplicateDispatches"],
        "callbacks_sent": after["callbacksSent"] - before["callbacksSent"],
        "callbacks_failed": after["callbacksFailed"] - before["callbacksFailed"],
        "machine_busy_pct": load.close(),
        "cpu_ms_per_job": load.cpu_ms_per(count),
        # Include the benchmark's own polls (one query every 0.25 s) and beat's housekeeping.
        **costs,
    }


def run(quick: bool, redis_mode: str) -> bool:
    count = 200 if quick else 1000
    with Stack(NAME, redis_mode, robot="instant") as stack:
        pid = stack.worker_pid()
        # A second web process on the same database, Redis and worker, whose chains have no
        # settle countdown: the countdown must add latency, never limit throughput.
        port = free_port()
        settle0 = Process(
            "web-settle-0",
            procfile()["web"],
            {**stack.env, "PORT": str(port), "ROBOT_SETTLE_SECONDS": "0"},
            stack.log_dir,
        )
        base0 = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: answers(f"{base0}/healthz"), 60, "the settle-0 web")
            note(f"{NAME}: warming up")
            _raw_chains(stack, 20)
            _orchestrator(stack, 20, 5, "instant")
            _orchestrator(stack, 20, 5, "instant", base0)
            baselines: list[dict[str, Any]] = []
            cases: dict[str, list[dict[str, Any]]] = {}
            web_pid = stack.processes["web"].popen.pid
            plan = [
                ("raw", None, None),
                ("instant", "instant", None),
                ("instant_settle_0", "instant", base0),
                ("raw", None, None),
                ("instant_items", "instant_items", None),
                ("raw", None, None),
                ("instant_settle_0", "instant", base0),
                ("instant", "instant", None),
            ]
            for label, mode, base in plan:
                quiet_until(pid, 60)
                if mode is None:
                    note(f"{NAME}: {count} raw chains")
                    baselines.append(_raw_chains(stack, count))
                    emit(NAME, f"raw_chain_{len(baselines)}", **baselines[-1])
                    continue
                # 11 callbacks a job: a quarter of the jobs gives the rate as well.
                jobs = count if mode == "instant" else count // 4
                note(f"{NAME}: {jobs} jobs, {label}")
                first = label not in cases
                with (
                    profiled(pid, f"throughput-{label}-worker") if first else _nothing(),
                    profiled(web_pid, f"throughput-{label}-web") if first else _nothing(),
                ):
                    figures = _orchestrator(stack, jobs, 5, mode, base)
                figures["settle_seconds"] = 0.0 if base else 2.0
                cases.setdefault(label, []).append(figures)
                emit(NAME, f"orchestrator_{label}_{len(cases[label])}", **figures)
        finally:
            settle0.stop()
    rates = [b["chains_per_s"] for b in baselines]
    base_mean = sum(rates) / len(rates)
    mean_rate = {
        label: round(sum(r["jobs_per_s"] for r in runs) / len(runs), 1)
        for label, runs in cases.items()
    }
    met = mean_rate["instant"] >= 0.5 * base_mean and all(
        r["not_completed"] == 0 for r in cases["instant"]
    )
    emit(
        NAME,
        "summary",
        target="orchestrator jobs/s >= 50 % of raw 5-task chains/s (robot instant, settle 2 s)",
        raw_chain_per_s=rates,
        raw_chain_mean_per_s=round(base_mean, 1),
        jobs_per_s={label: [r["jobs_per_s"] for r in runs] for label, runs in cases.items()},
        ratio_to_raw_chain={label: ratio(v, base_mean) for label, v in mean_rate.items()},
        settle_2s_vs_0s_rate=ratio(mean_rate["instant"], mean_rate["instant_settle_0"]),
        met=met,
    )
    return met


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield
