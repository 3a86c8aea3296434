"""Benchmark 2: what waiting jobs cost the worker (concurrency 2, one process tree) and Redis.

Levels: nothing waiting (the baseline), then 1,000, then 10,000 jobs waiting at once (the robot
stand-in accepts every dispatch and never reports; deadlines are 2 h out, so every waiting step
sleeps ``WAIT_POLL_MAX_SECONDS`` between looks: its deployed default, half the broker's
visibility timeout, 3,600 s). At each level, once the worker is quiet:

* a quiet window: worker CPU (% of one core, main process + pool, from /proc), its RSS and PSS,
  Redis commands per second (``total_commands_processed`` delta) and Redis memory;
* probes: new jobs submitted one by one; dispatch latency = from sending ``POST /api/jobs`` to
  the robot stand-in receiving the dispatch request;
* the worker's active (slot-holding) tasks, from ``celery inspect``.

Beat runs as deployed (housekeeping every 15 s): its queries over the open jobs are part of
what waiting costs. The quiet window contains no poll (the sleeps end long after it), so the
polls' own share is measured apart at the end: a burst of real polls (a waiting job's
``wait_for_report`` sent with its current poller token), CPU and Redis commands per poll, and
the amortized cost ``N / WAIT_POLL_MAX_SECONDS`` polls per second added to each level's figure.
"""

from __future__ import annotations

import time
from typing import Any

from orchestrator.config import Settings

from .common import (
    Stack,
    Window,
    emit,
    note,
    paced,
    profiled,
    quiet_until,
    ratio,
    summary,
)

NAME = "free_waiting"
# Not set in the environment: the system runs with its default, which this is.
WAIT_POLL_MAX = Settings.broker_visibility_timeout / 2


def _probe(stack: Stack, count: int) -> dict[str, Any]:
    """Submit ``count`` jobs one by one; dispatch latency and API answer time in ms."""
    dispatch_ms: list[float] = []
    answer_ms: list[float] = []
    for _ in paced(count, 0.5, stop_after=count * 2 + 30):
        sent = time.time()
        job_id = stack.submit()
        answer_ms.append((time.time() - sent) * 1000)
        arrived = None
        end = time.monotonic() + 30
        while arrived is None and time.monotonic() < end:
            arrived = stack.dispatched_at(job_id)
            if arrived is None:
                time.sleep(0.002)
        if arrived is None:
            raise RuntimeError(f"probe job {job_id} was not dispatched within 30 s")
        dispatch_ms.append((arrived - sent) * 1000)
    return {"dispatch_ms": summary(dispatch_ms), "submit_answer_ms": summary(answer_ms)}


def _broker(stack: Stack) -> dict[str, int]:
    """Messages the broker holds: delivered-but-unacked (the worker's ETA tasks) and queued."""
    return {
        "broker_unacked": int(stack.redis.hlen("unacked")),
        "broker_queued": int(stack.redis.llen("orchestrator")),
    }


def _active(stack: Stack) -> int:
    client = stack.celery_client()
    try:
        active = client.control.inspect(timeout=5).active() or {}
        return sum(len(v) for v in active.values())
    finally:
        client.close()


def _level(stack: Stack, waiting: int, window_s: float, probes: int) -> dict[str, Any]:
    pid = stack.worker_pid()
    quiet_until(pid, 180, below_pct=10)
    window = Window(pid, stack.redis)
    time.sleep(window_s)
    figures = window.close()
    figures.update(_broker(stack))
    figures["active_tasks"] = _active(stack)
    figures.update(_probe(stack, probes))
    figures["waiting"] = stack.waiting_count()
    figures["jobs_waiting_target"] = waiting
    return figures


def _poll_cost(stack: Stack, job_ids: list[str], count: int, rate: float) -> dict[str, Any]:
    """CPU seconds and Redis commands per real poll, from a burst of ``count`` polls."""
    pid = stack.worker_pid()
    chosen = job_ids[:count]
    deadlines = {}
    with stack.engine.connect() as conn:
        from sqlalchemy import text

        rows = conn.execute(
            text("SELECT id, EXTRACT(EPOCH FROM deadline) FROM jobs WHERE id = ANY(:ids)"),
            {"ids": chosen},
        )
        deadlines = {row[0]: float(row[1]) for row in rows}
    tokens = stack.redis.mget([f"orchestrator:job:{j}:poller" for j in chosen])
    client = stack.celery_client()
    quiet_until(pid, 120, below_pct=10)
    # The same quiet span just before, as the floor to subtract.
    floor = Window(pid, stack.redis)
    time.sleep(count / rate + 3)
    floor_figures = floor.close()
    window = Window(pid, stack.redis)
    sent = 0
    for n in paced(count, 1 / rate, stop_after=count / rate + 30):
        token = tokens[n]
        if token is None:
            continue
        client.send_task(
            "orchestrator.wait_for_report", args=(chosen[n], deadlines[chosen[n]], token.decode())
        )
        sent += 1
    time.sleep(3)
    burst = window.close()
    client.close()
    extra_cpu_s = (burst["cpu_pct_of_core"] - floor_figures["cpu_pct_of_core"]) / 100
    extra_cpu_s *= burst["seconds"]
    extra_cmds = (burst["redis_cmds_per_s"] - floor_figures["redis_cmds_per_s"]) * burst["seconds"]
    return {
        "polls": sent,
        "cpu_ms_per_poll": round(1000 * extra_cpu_s / max(sent, 1), 2),
        "redis_cmds_per_poll": round(extra_cmds / max(sent, 1), 1),
        "burst": burst,
        "floor": floor_figures,
    }


def _raw_eta(stack: Stack, count: int) -> dict[str, Any]:
    """Celery's own price of holding a countdown message: ``count`` no-op tasks."""
    pid = stack.worker_pid()
    quiet_until(pid, 120, below_pct=10)
    before = Window(pid, stack.redis)
    time.sleep(5)
    floor = before.close()
    client = stack.celery_client()
    for _ in range(count):
        client.send_task("bench.noop", countdown=WAIT_POLL_MAX)
    client.close()
    time.sleep(5)
    quiet_until(pid, 120, below_pct=10)
    after = Window(pid, stack.redis)
    time.sleep(5)
    held = after.close()
    return {
        "eta_messages": count,
        "main_pss_kb_per_message": round(
            1024 * (held["main_pss_mb"] - floor["main_pss_mb"]) / count, 1
        ),
        "redis_kb_per_message": round(
            1024 * (held["redis_used_memory_mb"] - floor["redis_used_memory_mb"]) / count, 2
        ),
    }


def run(quick: bool, redis_mode: str) -> bool:
    levels = (200, 1000) if quick else (1000, 10000)
    window_s = 15.0 if quick else 20.0
    probes = 10 if quick else 20
    env = {"ROBOT_DEADLINE_MARGIN_SECONDS": "7200"}
    with Stack(NAME, redis_mode, robot="accept", **env) as stack:
        note(f"{NAME}: baseline, nothing waiting")
        stack.submit_many(20)  # warm up every process and connection
        time.sleep(5)
        base = _level(stack, 0, window_s, probes)
        # The probes themselves wait too: count them in "waiting".
        emit(NAME, "baseline", **base)
        results = {0: base}
        submitted: list[str] = []
        for level in levels:
            new = level - len(submitted)
            note(f"{NAME}: submitting {new} jobs to reach {level} waiting")
            t0 = time.monotonic()
            submitted += stack.submit_many(new, threads=6)
            submit_s = time.monotonic() - t0
            stack.wait_waiting(submitted, 900)
            setup_s = time.monotonic() - t0
            note(f"{NAME}: {level} waiting after {setup_s:.0f} s; measuring")
            figures = _level(stack, level, window_s, probes)
            figures["setup"] = {
                "submit_seconds": round(submit_s, 1),
                "submits_per_s": round(new / submit_s, 1),
                "all_waiting_after_s": round(setup_s, 1),
            }
            figures["delta_vs_baseline"] = {
                key: round(figures[key] - base[key], 2)
                for key in (
                    "cpu_pct_of_core",
                    "pss_mb",
                    "main_pss_mb",
                    "pool_pss_mb",
                    "rss_mb",
                    "redis_cmds_per_s",
                    "redis_used_memory_mb",
                )
            }
            figures["dispatch_ratio_to_baseline"] = {
                "p50": ratio(figures["dispatch_ms"]["p50"], base["dispatch_ms"]["p50"]),
                "p95": ratio(figures["dispatch_ms"]["p95"], base["dispatch_ms"]["p95"]),
            }
            results[level] = figures
            emit(NAME, f"waiting_{level}", **figures)
        top = levels[-1]
        note(f"{NAME}: poll cost burst")
        with profiled(stack.worker_pid(), "free_waiting-polls-worker"):
            polls = _poll_cost(stack, submitted, 200 if quick else 500, rate=50.0)
        emit(NAME, "poll_cost", wait_poll_max_seconds=WAIT_POLL_MAX, **polls)
        raw = _raw_eta(stack, 1000)
        emit(NAME, "raw_celery_eta", **raw)
        growth = {}
        for level in levels:
            delta = results[level]["delta_vs_baseline"]
            amortized = level / WAIT_POLL_MAX * polls["cpu_ms_per_poll"] / 10  # % of a core
            held = results[level]["waiting"] - base["waiting"]
            growth[str(level)] = {
                "main_pss_kb_per_wait": round(1024 * delta["main_pss_mb"] / max(held, 1), 1),
                "cpu_pct_of_core_holding": delta["cpu_pct_of_core"],
                "cpu_pct_of_core_polls_amortized": round(amortized, 2),
                "cpu_pct_of_core_total": round(delta["cpu_pct_of_core"] + amortized, 2),
                "worker_pss_mb": delta["pss_mb"],
                "worker_main_pss_mb": delta["main_pss_mb"],
                "worker_pool_pss_mb": delta["pool_pss_mb"],
                "worker_rss_mb": delta["rss_mb"],
                "redis_cmds_per_s": round(
                    delta["redis_cmds_per_s"]
                    + level / WAIT_POLL_MAX * polls["redis_cmds_per_poll"],
                    1,
                ),
                "redis_used_memory_mb": delta["redis_used_memory_mb"],
                "dispatch_p50_ratio": results[level]["dispatch_ratio_to_baseline"]["p50"],
            }
        final = growth[str(top)]
        met = (
            final["cpu_pct_of_core_total"] <= 5
            and max(final["worker_pss_mb"], 0) <= 200
            and (final["dispatch_p50_ratio"] or 99) <= 2
        )
        emit(
            NAME,
            "summary",
            target="waits <= 5 % of a core and <= 200 MB; new job's dispatch <= 2x baseline",
            baseline={
                k: base[k] for k in ("cpu_pct_of_core", "pss_mb", "rss_mb", "redis_cmds_per_s")
            },
            baseline_dispatch_ms=base["dispatch_ms"],
            cost_by_waits=growth,
            met=met,
        )
        return met
