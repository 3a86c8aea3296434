"""Benchmark 1: wake latency, from the answered batch.completed callback to the final state.

For each measured job (waiting: its poller token is in Redis, its next poll up to
``WAIT_POLL_MAX_SECONDS`` = 900 s away, so only the pub/sub wake-up can finish it in time):
send a signed ``robot.batch.completed``; once it is answered 200, poll ``GET /api/jobs/<id>``
(2 ms apart) until the status is final. Figures: the time to the first final answer
(``wake_ms``, includes one GET round trip) and ``finishedAt`` minus the answer time
(``wake_server_ms``, the server's own clock, no polling error).

Baseline in the same run, interleaved sample by sample: enqueue-to-start latency of an empty
task (``bench.stamp``) on the same broker, queue and worker.

Twice: idle (only the measured jobs wait), and loaded (1,000 more jobs wait and their
completions arrive concurrently, from another process, paced over the measurement).
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from datetime import datetime
from typing import Any

import requests

from .common import (
    FINAL,
    MachineLoad,
    Stack,
    emit,
    note,
    paced,
    profiled,
    quiet_until,
    ratio,
    signed_event,
    summary,
)

NAME = "wake_latency"
INTERVAL = 0.1  # one measured job (and one baseline sample) every 100 ms
WARM_UP = 10  # jobs woken before the idle measurement, not counted


def _complete_background(
    stack_base: str, master: str, job_ids: list[str], rate: float, limit_s: float, out: Any
) -> None:
    """Send batch.completed to every job at ``rate`` per second (another process)."""
    session = requests.Session()
    session.trust_env = False
    ok = failed = 0
    start = time.monotonic()
    for n, job_id in enumerate(job_ids):
        target = start + n / rate
        now = time.monotonic()
        if now - start > limit_s:
            break
        if target > now:
            time.sleep(target - now)
        body, headers = signed_event(master, job_id, "robot.batch.completed", {"items": []})
        try:
            answer = session.post(
                f"{stack_base}/api/robot/jobs/{job_id}/events",
                data=body,
                headers=headers,
                timeout=10,
            )
            ok += answer.status_code == 200
            failed += answer.status_code != 200
        except requests.RequestException:
            failed += 1
    out.put({"sent_ok": ok, "failed": failed, "seconds": round(time.monotonic() - start, 1)})


def _warm_up(stack: Stack, job_ids: list[str]) -> None:
    """Wake a few jobs first, uncounted: every gunicorn thread and pool connection is open."""
    for job_id in job_ids:
        stack.send_event(job_id, "robot.batch.completed", {"items": []})
        for _ in range(500):
            if stack.job(job_id)["status"] in FINAL:
                break
            time.sleep(0.01)


def _measure(
    stack: Stack, job_ids: list[str], background: list[str] | None, rate: float
) -> dict[str, Any]:
    from .common import MASTER_SECRET

    client = stack.celery_client()
    key = f"bench:stamp:{uuid.uuid4().hex}"
    for _ in range(5):  # warm the producer connection
        client.send_task("bench.stamp", args=(key, time.time()))
        stack.redis.blpop([key], timeout=10)
    wake_ms: list[float] = []
    server_ms: list[float] = []
    base_ms: list[float] = []
    polls: list[int] = []
    bg_result: dict[str, Any] = {}
    proc = None
    queue: Any = None
    if background:
        duration = len(job_ids) * INTERVAL
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        proc = ctx.Process(
            target=_complete_background,
            args=(
                stack.base,
                MASTER_SECRET,
                background,
                rate,
                duration + 30,
                queue,
            ),
            daemon=True,
        )
        proc.start()
    session = stack.http()
    started = time.monotonic()
    for i in paced(len(job_ids), INTERVAL, stop_after=len(job_ids) * INTERVAL * 4 + 60):
        sent = time.time()
        client.send_task("bench.stamp", args=(key, sent))
        popped = stack.redis.blpop([key], timeout=10)
        if popped:
            s, st = (float(v) for v in popped[1].split())
            base_ms.append((st - s) * 1000)
        job_id = job_ids[i]
        answer = stack.send_event(job_id, "robot.batch.completed", {"items": []}, session)
        answered_wall, answered = time.time(), time.monotonic()
        if answer.status_code != 200:
            raise RuntimeError(f"callback answered {answer.status_code}: {answer.text[:200]}")
        count = 0
        job: dict[str, Any] = {}
        while time.monotonic() - answered < 60:
            job = stack.job(job_id)
            count += 1
            if job["status"] in FINAL:
                break
            time.sleep(0.002)
        seen = time.monotonic()
        if job.get("status") != "completed":
            raise RuntimeError(f"job {job_id} did not complete: {job.get('status')}")
        wake_ms.append((seen - answered) * 1000)
        finished = datetime.fromisoformat(job["finishedAt"].replace("Z", "+00:00")).timestamp()
        server_ms.append((finished - answered_wall) * 1000)
        polls.append(count)
    measured_s = time.monotonic() - started
    if proc is not None:
        proc.join(timeout=120)
        bg_result = queue.get(timeout=5) if not proc.is_alive() else {"error": "still running"}
        if proc.is_alive():
            proc.kill()
    client.close()
    wake = summary(wake_ms)
    base = summary(base_ms)
    return {
        "jobs_measured": len(wake_ms),
        "wake_ms": wake,
        "wake_server_ms": summary(server_ms),
        "api_reads_per_wake": summary(polls, 1),
        "baseline_empty_task_ms": base,
        "ratio_to_baseline": {
            "p50": ratio(wake.get("p50", 0), base.get("p50", 0)),
            "p95": ratio(wake.get("p95", 0), base.get("p95", 0)),
        },
        "measured_seconds": round(measured_s, 1),
        "background_completions": bg_result or None,
        "target_met": {
            "p50_le_25ms": wake.get("p50", 1e9) <= 25,
            "p95_le_100ms": wake.get("p95", 1e9) <= 100,
        },
    }


def _burst(stack: Stack, job_ids: list[str], threads: int = 8) -> dict[str, Any]:
    """Send every job's batch.completed at once; time until the last one is final."""
    from concurrent.futures import ThreadPoolExecutor

    start = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        codes = list(
            pool.map(
                lambda j: stack.send_event(j, "robot.batch.completed", {"items": []}).status_code,
                job_ids,
            )
        )
    answered = time.monotonic() - start
    pending = set(job_ids)
    while pending and time.monotonic() - start < 120:
        open_ids = stack.open_jobs(pending)
        pending = open_ids
        if pending:
            time.sleep(0.005)
    return {
        "completions": len(job_ids),
        "all_answered_ms": round(answered * 1000, 1),
        "all_final_ms": round((time.monotonic() - start) * 1000, 1),
        "not_final": len(pending),
        "non_200": sum(c != 200 for c in codes),
    }


def _slots(stack: Stack) -> dict[str, Any]:
    """What the worker holds while jobs wait: executing (slots) and scheduled (ETA) tasks."""
    client = stack.celery_client()
    try:
        inspect = client.control.inspect(timeout=5)
        active = inspect.active() or {}
        scheduled = inspect.scheduled() or {}
        return {
            "active_tasks": sum(len(v) for v in active.values()),
            "scheduled_tasks": sum(len(v) for v in scheduled.values()),
            "worker_concurrency": 2,
        }
    finally:
        client.close()


def run(quick: bool, redis_mode: str) -> bool:
    measured = 40 if quick else 200
    others = 100 if quick else 1000
    rates = (10, 25) if quick else (10, 50)  # background completions per second
    bursts, burst_size = (1, 50) if quick else (3, 100)
    duration = measured * INTERVAL
    env = {"ROBOT_DEADLINE_MARGIN_SECONDS": "3600"}
    results: dict[str, Any] = {}
    with Stack(NAME, redis_mode, robot="accept", **env) as stack:
        pid = stack.worker_pid()
        note(f"{NAME}: submitting {measured} jobs (idle case)")
        idle_ids = stack.submit_many(measured + WARM_UP)
        stack.wait_waiting(idle_ids, 120)
        quiet_until(pid, 60)
        note(f"{NAME}: measuring idle")
        _warm_up(stack, idle_ids[:WARM_UP])
        load = MachineLoad()
        idle = _measure(stack, idle_ids[WARM_UP:], None, 0)
        idle["machine_busy_pct"] = load.close()
        results["idle"] = idle
        emit(NAME, "idle", jobs_waiting=measured, wait_poll_max_seconds=900, **idle)

        groups = {rate: int(rate * duration) for rate in rates}
        total = others + sum(groups.values()) + measured * len(rates) + bursts * burst_size
        note(f"{NAME}: submitting {total} jobs for the loaded cases")
        stay = stack.submit_many(others)
        ids = {
            rate: (stack.submit_many(count), stack.submit_many(measured))
            for rate, count in groups.items()
        }
        burst_ids = [stack.submit_many(burst_size) for _ in range(bursts)]
        everything = stay + [j for a, b in ids.values() for j in a + b]
        everything += [j for group in burst_ids for j in group]
        stack.wait_waiting(everything, 600)
        quiet_until(pid, 120)
        slots = _slots(stack)
        for rate, (background, measured_ids) in ids.items():
            waiting = stack.waiting_count(everything)
            note(f"{NAME}: measuring with {waiting} waiting, {rate} completions/s ({slots})")
            load = MachineLoad()
            with profiled(pid, f"wake_latency-loaded-{rate}-worker"):
                loaded = _measure(stack, measured_ids, background, rate)
            loaded["machine_busy_pct"] = load.close()
            results[f"loaded_{rate}"] = loaded
            emit(
                NAME,
                f"loaded_{rate}_per_s",
                jobs_waiting=waiting,
                background_rate_per_s=rate,
                wait_poll_max_seconds=900,
                while_waiting=slots,
                **loaded,
            )
            quiet_until(pid, 60)
        runs = []
        for group in burst_ids:
            quiet_until(pid, 60)
            runs.append(_burst(stack, group))
        finals = sorted(r["all_final_ms"] for r in runs)
        emit(
            NAME,
            "burst",
            jobs_waiting=stack.waiting_count(everything),
            bursts=runs,
            all_final_ms_p50=finals[len(finals) // 2],
            hosted_engine_p50_ms=1900,
        )
        stats = stack.robot_stats()
        met = all(all(r["target_met"].values()) for r in results.values())
        emit(
            NAME,
            "summary",
            target="p50 <= 25 ms and p95 <= 100 ms, idle and loaded, no worker slot held",
            wake_ms={
                k: {"p50": r["wake_ms"]["p50"], "p95": r["wake_ms"]["p95"]}
                for k, r in results.items()
            },
            baseline_ms={
                k: {
                    "p50": r["baseline_empty_task_ms"]["p50"],
                    "p95": r["baseline_empty_task_ms"]["p95"],
                }
                for k, r in results.items()
            },
            slots_held_while_waiting=slots["active_tasks"],
            duplicate_dispatches=stats["duplicateDispatches"],
            met=met and slots["active_tasks"] == 0,
        )
        return met
