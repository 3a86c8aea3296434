"""Hand-off latency with 1,000 jobs queued, and what the capacity check costs in throughput.

``python -m bench.handoff [--quick] [--redis private|shared]`` (or ``python -m bench handoff``)

One stack (release, web, worker, beat, the robot simulator answering instantly: ``--item-delay 0``,
three callbacks a job) on a fresh PostgreSQL database and a private Redis.

1. **Hand-off** with ``ROBOT_MAX_ACTIVE_JOBS=2``: dispatching is paused, 1,002 one-order jobs are
   submitted (they wait), dispatching resumes. Every time the robot's batch report is answered
   200 a slot is free; the hand-off latency is from that 200 to the robot receiving the next
   dispatch, both stamped by the simulator itself (``GET /_sim/timeline``, one clock). The i-th
   answered report frees the slot that the (K + i)-th dispatch takes. Goal: p50 <= 50 ms.
   Split in two with the freeing job's ``finished_at`` (the database's clock, the same host):
   report 200 → job final (the finalize) and job final → next dispatch (the hand-off proper).
   Also: resume → first dispatch at the robot.
   Baseline, same stack: 30 single jobs submitted one at a time onto an empty queue, submit →
   dispatch at the robot (starting a chain: what any hand-off costs at least).
2. **Throughput**, the same stack restarted (web, worker, beat) with ``ROBOT_MAX_ACTIVE_JOBS=50``
   and without a limit, alternating none, 50, none, 50, none: each limited case is compared
   with the mean of the two unlimited cases around it, which cancels a steady drift of the
   shared machine. 500 jobs of 5 orders submitted from 8 threads; rate = completed / (last
   finished - first submit). Goal: the limit costs <= 10 % (ratio >= 0.9).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import text

from orchestrator.local.processes import wait_until

from .common import MachineLoad, Stack, emit, note, quiet_until, ratio, summary

NAME = "handoff"
K = 2
THROUGHPUT_LIMIT = 50


def _api(stack: Stack, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    answer = stack.http().request(
        method, f"{stack.base}{path}", headers=stack.auth(), timeout=30, **kwargs
    )
    if answer.status_code != 200:
        raise RuntimeError(f"{method} {path} answered {answer.status_code}: {answer.text[:300]}")
    return answer.json()


def _robot(stack: Stack, path: str, method: str = "GET") -> dict[str, Any]:
    return stack.http().request(method, f"{stack.robot}{path}", timeout=30).json()


def _wait_final(stack: Stack, ids: list[str], stuck_after: float = 60) -> set[str]:
    """Wait until every job is final or none finished for ``stuck_after`` s; return the open."""
    pending, progress = set(ids), time.monotonic()
    while pending and time.monotonic() - progress < stuck_after:
        time.sleep(0.25)
        still = stack.open_jobs(pending)
        if len(still) != len(pending):
            progress = time.monotonic()
        pending = still
    return pending


def _restart(stack: Stack, limit: int | None) -> None:
    """Restart web, worker and beat with or without ROBOT_MAX_ACTIVE_JOBS."""
    for name in ("beat", "worker", "web"):
        stack.processes.pop(name).stop()
    if limit is None:
        stack.env.pop("ROBOT_MAX_ACTIVE_JOBS", None)
    else:
        stack.env["ROBOT_MAX_ACTIVE_JOBS"] = str(limit)
    for name in ("web", "worker", "beat"):
        stack.start_process(name)


def _arrival(stack: Stack, job_id: str) -> float | None:
    dispatches = _robot(stack, "/_sim/timeline")["dispatches"]
    return next((d["at"] for d in dispatches if d["jobId"] == job_id), None)


def _submit_to_dispatch(stack: Stack, count: int) -> dict[str, Any]:
    """Baseline: one job at a time onto an empty queue, submit → dispatch at the robot."""
    _robot(stack, "/_sim/reset", "POST")
    latencies = []
    for _ in range(count):
        began = time.time()
        job_id = stack.submit(1)
        arrived = wait_until(
            lambda job_id=job_id: _arrival(stack, job_id), 30, "the dispatch", interval=0.005
        )
        latencies.append((arrived - began) * 1000)
        if _wait_final(stack, [job_id], stuck_after=30):
            raise RuntimeError(f"baseline job {job_id} did not finish")
    return summary(latencies)


def _handoff(stack: Stack, queued: int) -> dict[str, Any]:
    _api(stack, "POST", "/api/dispatch/pause", json={"reason": "bench: filling the queue"})
    note(f"{NAME}: submitting {queued + K} jobs while paused")
    ids = stack.submit_many(queued + K, items=1)
    state = wait_until(
        lambda: (s := _api(stack, "GET", "/api/dispatch"))["queuedJobs"] >= queued + K and s,
        120,
        "the queue to fill",
    )
    # Resume only once every job's chain has run and parked it (jobs.parked_at): a CPU-starved
    # worker looks quiet while its broker queue still holds hundreds of chains.
    wait_until(
        lambda: (
            stack.scalar(
                "SELECT count(*) FROM jobs WHERE parked_at IS NOT NULL AND dispatched_at IS NULL"
            )
            >= queued + K
        ),
        300,
        "every waiting job to be parked",
        interval=0.5,
    )
    _robot(stack, "/_sim/reset", "POST")
    quiet_until(stack.worker_pid(), 60)
    load = MachineLoad()
    resumed = time.time()
    _api(stack, "POST", "/api/dispatch/resume")
    note(f"{NAME}: resumed with {state['queuedJobs']} jobs queued, K={K}")
    still_open = _wait_final(stack, ids)
    busy = load.close()
    timeline = _robot(stack, "/_sim/timeline")
    stats = _robot(stack, "/_sim/stats")
    arrivals = sorted(d["at"] for d in timeline["dispatches"])
    reports = sorted((r["at"], r["jobId"]) for r in timeline["reports"])
    finished = stack.finished_at(ids)
    # The i-th answered report frees the slot that the (K + i)-th dispatch takes.
    pairs = list(zip(reports[: max(len(arrivals) - K, 0)], arrivals[K:], strict=True))
    latencies = [(arrived - at) * 1000 for (at, _), arrived in pairs]
    finalize = [(finished[job] - at) * 1000 for (at, job), _ in pairs if job in finished]
    after_final = [
        (arrived - finished[job]) * 1000 for (_, job), arrived in pairs if job in finished
    ]
    negative = sum(1 for v in latencies if v < 0)
    deep = latencies[: queued // 5]  # the first fifth: at least 80 % of the queue still waiting
    with stack.engine.connect() as conn:
        statuses = dict(
            conn.execute(
                text("SELECT status, count(*) FROM jobs WHERE id = ANY(:ids) GROUP BY status"),
                {"ids": ids},
            ).all()
        )
    span = (max(arrivals) - min(arrivals)) if arrivals else 0
    return {
        "max_active_jobs": K,
        "queued_at_resume": state["queuedJobs"],
        "jobs": len(ids),
        "statuses": statuses,
        "not_final": len(still_open),
        "handoff_ms": summary(latencies),
        "handoff_ms_first_fifth": summary(deep),
        "report_to_final_ms": summary(finalize),
        "final_to_next_dispatch_ms": summary(after_final),
        "negative_handoffs": negative,
        "resume_to_first_dispatch_ms": round((arrivals[0] - resumed) * 1000, 1)
        if arrivals
        else None,
        "robot_max_held": stats["maxHeldJobs"],
        "dispatches_per_job": sorted(set(stats["dispatches"].values())),
        "jobs_per_s_at_k": round(len(arrivals) / span, 1) if span else None,
        "machine_busy_pct": busy,
    }


def _throughput(stack: Stack, count: int, items: int = 5) -> dict[str, Any]:
    _robot(stack, "/_sim/reset", "POST")
    load = MachineLoad()
    start = time.time()
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: stack.submit(items), range(count)))
    submit_s = time.time() - start
    still_open = _wait_final(stack, ids)
    busy = load.close()
    rows = stack.job_times(ids)
    stats = _robot(stack, "/_sim/stats")
    completed = [r for r in rows if r[0] == "completed"]
    last = max(float(r[2]) for r in completed) if completed else time.time()
    elapsed = last - start
    return {
        "jobs": count,
        "items_per_job": items,
        "completed": len(completed),
        "not_final": len(still_open),
        "seconds": round(elapsed, 2),
        "jobs_per_s": round(len(completed) / elapsed, 1),
        "submit_seconds": round(submit_s, 2),
        "job_latency_ms": summary((float(r[2]) - float(r[1])) * 1000 for r in completed),
        "robot_max_held": stats["maxHeldJobs"],
        "dispatches_per_job": sorted(set(stats["dispatches"].values())),
        "machine_busy_pct": busy,
    }


def run(quick: bool, redis_mode: str) -> bool:
    queued = 200 if quick else 1000
    count = 100 if quick else 500
    robot_args = "--workers 64"  # the simulator's threads never hold a dispatch back
    with Stack(
        NAME, redis_mode, robot="simulator", robot_args=robot_args, ROBOT_MAX_ACTIVE_JOBS=str(K)
    ) as stack:
        note(f"{NAME}: warming up")
        _throughput(stack, 10, 1)
        note(f"{NAME}: baseline, submit → dispatch of single jobs")
        baseline = _submit_to_dispatch(stack, 30)
        hand = _handoff(stack, queued)
        hand["baseline_submit_to_dispatch_ms"] = baseline
        hand["handoff_p50_to_baseline_p50"] = ratio(
            hand["handoff_ms"].get("p50", 0), baseline.get("p50", 0)
        )
        emit(NAME, "handoff", **hand)
        rates: dict[str, list[float]] = {"no_limit": [], f"limit_{THROUGHPUT_LIMIT}": []}
        for limit in (None, THROUGHPUT_LIMIT, None, THROUGHPUT_LIMIT, None):
            label = "no_limit" if limit is None else f"limit_{limit}"
            _restart(stack, limit)
            _throughput(stack, 10, 1)  # warm the new processes
            quiet_until(stack.worker_pid(), 60)
            note(f"{NAME}: throughput, {count} jobs, {label}")
            figures = _throughput(stack, count)
            rates[label].append(figures["jobs_per_s"])
            emit(NAME, f"throughput_{label}_{len(rates[label])}", max_active_jobs=limit, **figures)
    free, limited = rates["no_limit"], rates[f"limit_{THROUGHPUT_LIMIT}"]
    # Each limited case against the mean of the unlimited cases just before and after it.
    bracketed = [ratio(rate, (free[i] + free[i + 1]) / 2) for i, rate in enumerate(limited)]
    known = [r for r in bracketed if r is not None]
    cost = round(sum(known) / len(known), 3) if known else None
    p50 = hand["handoff_ms"].get("p50", float("inf"))
    met = p50 <= 50 and cost is not None and cost >= 0.9 and hand["not_final"] == 0
    emit(
        NAME,
        "summary",
        target=(
            f"hand-off p50 <= 50 ms with {queued} queued (K={K}); "
            f"throughput with K={THROUGHPUT_LIMIT} >= 0.9 of no limit"
        ),
        handoff_p50_ms=p50,
        handoff_p95_ms=hand["handoff_ms"].get("p95"),
        baseline_submit_to_dispatch_p50_ms=baseline.get("p50"),
        handoff_p50_to_baseline_p50=hand["handoff_p50_to_baseline_p50"],
        jobs_per_s=rates,
        throughput_ratio_each_limited_to_its_neighbours=bracketed,
        throughput_ratio_limit_to_no_limit=cost,
        met=met,
    )
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.handoff", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="200 queued, 100 jobs a case")
    parser.add_argument("--redis", choices=("private", "shared"), default="private")
    args = parser.parse_args(argv)
    return 0 if run(args.quick, args.redis) else 1


if __name__ == "__main__":
    raise SystemExit(main())
