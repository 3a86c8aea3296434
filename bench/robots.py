"""Several robots: next dispatch and submit at growing queue depths, and the robots' utilization.

``python -m bench.robots [--quick] [--redis private|shared]`` (or ``python -m bench robots``)

Three robots (``ROBOTS=north,south,east``), each its own simulator answering at once
(``--item-delay 0``) and ``ROBOT_MAX_ACTIVE_JOBS=2``, on a fresh PostgreSQL database and a
private Redis (release, web, worker, beat).

1. **Queue depth.** Dispatching is paused for every robot (``POST /api/dispatch/pause``) and
   one-order jobs are submitted, round robin over the robots, until DEPTH jobs wait (1,000,
   then 10,000; ``--quick``: 300, then 3,000); each is parked by its chain. At each depth:
   *submit latency*, 50 more jobs submitted one at a time (``POST /api/jobs`` → 202);
   the claim's query plans (``EXPLAIN ANALYZE`` on PostgreSQL, at the deepest level); then
   dispatching resumes, each robot takes its K jobs and holds them (simulator mode
   ``never_finish``), and the *next-dispatch latency* is measured HANDOFFS times per robot,
   round robin, one hand-off at a time: from the 200 answer to a signed
   ``robot.batch.completed`` of one held job (its slot frees) to that robot's simulator
   receiving the next dispatch (its own clock; same host). Then dispatching pauses again, the
   held jobs are completed and the next depth is filled. Goals: next-dispatch p50 <= 100 ms at every
   depth, and the p50 at the deepest level <= 1.5 x the p50 at the first (the ratio).
2. **Utilization.** The same three robots, each a simulator with 2 browsers and 0.2 s per order
   (``--browsers 2 --item-delay 0.2``), ``ROBOT_MAX_ACTIVE_JOBS=2``; JOBS jobs of ORDERS orders
   submitted to each robot at once. Per robot, while jobs wait (from its first dispatch to its
   last), busy browser-seconds (the simulator's own record of when a browser worked each job)
   / (2 browsers x that time). Goal: >= 0.95 for every robot.
"""

from __future__ import annotations

import argparse
import enum
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from orchestrator.local.processes import wait_until

from .common import MachineLoad, Stack, emit, note, quiet_until, ratio, summary

NAME = "robots"
ROBOTS = ("north", "south", "east")
K = 2
PROBES = 50  # sequential submits timed at each depth
BROWSERS = 2
PER_ORDER = 0.2


def _api(stack: Stack, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    answer = stack.http().request(
        method, f"{stack.base}{path}", headers=stack.auth(), timeout=60, **kwargs
    )
    if answer.status_code != 200:
        raise RuntimeError(f"{method} {path} answered {answer.status_code}: {answer.text[:300]}")
    return answer.json()


def _sim(stack: Stack, robot: str, path: str, method: str = "GET") -> dict[str, Any]:
    return stack.http().request(method, f"{stack.robot_urls[robot]}{path}", timeout=30).json()


def _waiting_parked(stack: Stack) -> int:
    return int(
        stack.scalar(
            "SELECT count(*) FROM jobs WHERE status = 'pending' AND parked_at IS NOT NULL "
            "AND dispatched_at IS NULL"
        )
    )


def _active(stack: Stack) -> int:
    return int(
        stack.scalar(
            "SELECT count(*) FROM jobs WHERE status = 'processing' AND dispatched_at IS NOT NULL"
        )
    )


def _fill(stack: Stack, depth: int, threads: int = 8) -> float:
    """Submit jobs (round robin over the robots) until ``depth`` wait parked; return seconds."""
    started = time.monotonic()
    missing = depth - int(stack.scalar("SELECT count(*) FROM jobs WHERE status = 'pending'"))
    note(f"{NAME}: submitting {max(missing, 0)} jobs while paused (to {depth} waiting)")
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda n: stack.submit(1, robot=ROBOTS[n % len(ROBOTS)]), range(missing)))
    # Every chain must have run its claim and parked its job: a busy worker's broker queue
    # still holds chains long after the last submit answered.
    wait_until(lambda: _waiting_parked(stack) >= depth, 900, f"{depth} jobs parked", interval=1.0)
    return time.monotonic() - started


def _submit_latency(stack: Stack) -> dict[str, Any]:
    latencies = []
    for n in range(PROBES):
        began = time.monotonic()
        stack.submit(1, robot=ROBOTS[n % len(ROBOTS)])
        latencies.append((time.monotonic() - began) * 1000)
    return summary(latencies)


def _claim_plan(stack: Stack) -> dict[str, list[str]]:
    """EXPLAIN ANALYZE, on PostgreSQL, of the hand-off's window (a robot's first waiting jobs)
    and of the claim's check (fewer than ``free`` waiting jobs ahead of this one), for the
    last waiting job of one robot: the two queries a freed slot runs at this depth."""
    from sqlalchemy import select

    from orchestrator import dispatch_control
    from orchestrator.models import Job

    jobs = Job.__table__
    robot = ROBOTS[0]
    window = (
        select(jobs.c.id)
        .where(jobs.c.robot == robot, dispatch_control.WAITING)
        .order_by(jobs.c.robot, *dispatch_control.QUEUE_ORDER)
        .limit(K)
    )
    with stack.engine.connect() as conn:
        last = conn.execute(
            select(jobs.c.id, jobs.c.priority, jobs.c.created_at)
            .where(jobs.c.robot == robot, dispatch_control.WAITING)
            .order_by(jobs.c.priority, jobs.c.created_at.desc(), jobs.c.id.desc())
            .limit(1)
        ).one()
        params = {
            "the_robot": robot,
            "the_priority": last.priority,
            "the_created_at": last.created_at,
            "the_id": last.id,
            "free": K,
        }
        plans = {}
        for label, statement, values in (
            ("hand-off window", window, {}),
            (
                "claim: jobs ahead within the free slots",
                dispatch_control._COUNT_FIRST_AHEAD,
                params,
            ),
        ):
            compiled = statement.compile(dialect=conn.dialect)
            expanded = compiled.construct_expanded_state(compiled.construct_params(values))
            bound = {
                name: value.value if isinstance(value, enum.Enum) else value
                for name, value in expanded.parameters.items()
            }
            sql = f"EXPLAIN (ANALYZE, BUFFERS) {expanded.statement}"
            rows = conn.exec_driver_sql(sql, bound).all()
            plans[label] = [row[0] for row in rows]
    return plans


def _arrivals(stack: Stack, robot: str) -> list[dict[str, Any]]:
    return _sim(stack, robot, "/_sim/timeline")["dispatches"]


def _handoffs(stack: Stack, count: int) -> dict[str, Any]:
    """Resume; then ``count`` times per robot, round robin: report one of the robot's held jobs
    completed (signed as the robot) and time its next dispatch at its simulator. Pause again
    and finish the held jobs; return the latencies.

    The simulators hold every job (``never_finish``), so each hand-off is alone: the figure is
    what one freed slot costs at this depth, not the queueing of a saturated worker.
    """
    for robot in ROBOTS:
        _sim(stack, robot, "/_sim/reset", "POST")
        stack.http().post(
            f"{stack.robot_urls[robot]}/_sim/config", json={"mode": "never_finish"}, timeout=10
        )
    quiet_until(stack.worker_pid(), 60)
    _api(stack, "POST", "/api/dispatch/resume")
    for robot in ROBOTS:
        wait_until(lambda r=robot: len(_arrivals(stack, r)) >= K, 60, f"{K} jobs at {robot}")
    held = {robot: [d["jobId"] for d in _arrivals(stack, robot)] for robot in ROBOTS}
    load = MachineLoad()
    latencies: dict[str, list[float]] = {robot: [] for robot in ROBOTS}
    try:
        for _ in range(count):
            for robot in ROBOTS:
                seen = len(_arrivals(stack, robot))
                answer = stack.send_event(
                    held[robot].pop(0), "robot.batch.completed", {"items": []}
                )
                freed = time.time()
                if answer.status_code != 200:
                    raise RuntimeError(f"report answered {answer.status_code}: {answer.text}")
                arrived = wait_until(
                    lambda r=robot, n=seen: (a := _arrivals(stack, r))[n:] and a[n],
                    30,
                    f"the next dispatch at {robot}",
                    interval=0.002,
                )
                held[robot].append(arrived["jobId"])
                latencies[robot].append((arrived["at"] - freed) * 1000)
    finally:
        _api(stack, "POST", "/api/dispatch/pause", json={"reason": "bench: next depth"})
        busy = load.close()
        for robot in ROBOTS:  # finish what the robots hold: the slots are free for the next depth
            for job_id in held[robot]:
                stack.send_event(job_id, "robot.batch.completed", {"items": []})
    wait_until(lambda: _active(stack) == 0, 120, "the active jobs to finish", interval=0.5)
    dispatches: set[int] = set()
    for robot in ROBOTS:
        dispatches |= set(_sim(stack, robot, "/_sim/stats")["dispatches"].values())
    return {
        "next_dispatch_ms": summary(v for values in latencies.values() for v in values),
        "next_dispatch_ms_per_robot": {r: summary(v) for r, v in latencies.items()},
        "dispatches_per_job": sorted(dispatches),
        "machine_busy_pct": busy,
    }


def queue_depth(redis_mode: str, depths: tuple[int, ...], handoffs: int) -> dict[str, Any]:
    env = {
        "ROBOT_MAX_ACTIVE_JOBS": str(K),
        "ROBOT_SECONDS_PER_ITEM": "30",
        "ROBOT_DEADLINE_MARGIN_SECONDS": "600",
    }
    levels = []
    plan: dict[str, list[str]] = {}
    with Stack(
        NAME, redis_mode, robot="simulator", robot_args="--workers 64", robots=ROBOTS, **env
    ) as stack:
        _api(stack, "POST", "/api/dispatch/pause", json={"reason": "bench: filling the queue"})
        for depth in depths:
            filled_s = _fill(stack, depth)
            submit = _submit_latency(stack)
            want = depth + PROBES
            wait_until(lambda: _waiting_parked(stack) >= want, 120, "probes parked")  # noqa: B023
            waiting = _waiting_parked(stack)
            if depth == depths[-1]:
                plan = _claim_plan(stack)
                for label, lines in plan.items():
                    note(f"{NAME}: {label} at {waiting} waiting:\n  " + "\n  ".join(lines))
            note(f"{NAME}: {waiting} waiting; resuming for {handoffs} hand-offs per robot")
            figures = {
                "waiting": waiting,
                "fill_s": round(filled_s, 1),
                "submit_ms": submit,
                **_handoffs(stack, handoffs),
            }
            emit(NAME, f"depth_{depth}", depth=depth, robots=len(ROBOTS), k=K, **figures)
            levels.append(figures)
    return {"levels": levels, "plan": plan}


def utilization(redis_mode: str, jobs: int, orders: int) -> dict[str, Any]:
    env = {
        "ROBOT_MAX_ACTIVE_JOBS": str(K),
        "ROBOT_SECONDS_PER_ITEM": str(PER_ORDER * 10),
        "ROBOT_DEADLINE_MARGIN_SECONDS": "120",
    }
    robot_args = f"--browsers {BROWSERS} --item-delay {PER_ORDER}"
    with Stack(
        f"{NAME}_utilization",
        redis_mode,
        robot="simulator",
        robot_args=robot_args,
        robots=ROBOTS,
        **env,
    ) as stack:
        note(f"{NAME}: utilization, {jobs} jobs of {orders} orders to each of {len(ROBOTS)}")
        load = MachineLoad()
        with ThreadPoolExecutor(6) as pool:
            ids = list(
                pool.map(
                    lambda n: stack.submit(orders, robot=ROBOTS[n % len(ROBOTS)]),
                    range(jobs * len(ROBOTS)),
                )
            )
        bound = 3 * jobs * orders * PER_ORDER / BROWSERS + 120
        wait_until(lambda: not stack.open_jobs(ids), bound, "every job final", interval=0.5)
        busy_machine = load.close()
        per_robot = {}
        for robot in ROBOTS:
            timeline = _sim(stack, robot, "/_sim/timeline")
            arrivals = sorted(d["at"] for d in timeline["dispatches"])
            # Jobs wait from the first dispatch until the last one is sent.
            start, end = arrivals[0], arrivals[-1]
            busy = sum(
                max(0.0, min(w["end"], end) - max(w["start"], start)) for w in timeline["work"]
            )
            per_robot[robot] = {
                "window_s": round(end - start, 2),
                "busy_browser_s": round(busy, 2),
                "utilization": round(busy / (BROWSERS * (end - start)), 3) if end > start else None,
                "dispatches": len(arrivals),
                "max_working": _sim(stack, robot, "/_sim/stats")["maxWorkingJobs"],
            }
        with stack.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT status, count(*) FROM jobs GROUP BY status")
            statuses = {status: count for status, count in rows}
    figures = {
        "jobs_per_robot": jobs,
        "orders_per_job": orders,
        "browsers": BROWSERS,
        "seconds_per_order": PER_ORDER,
        "per_robot": per_robot,
        "statuses": statuses,
        "machine_busy_pct": busy_machine,
    }
    emit(NAME, "utilization", **figures)
    return figures


def run(quick: bool, redis_mode: str) -> bool:
    depths = (300, 3000) if quick else (1000, 10_000)
    handoffs = 30 if quick else 100
    deep = queue_depth(redis_mode, depths, handoffs)
    used = utilization(redis_mode, jobs=6 if quick else 20, orders=10)
    levels = deep["levels"]
    p50s = [level["next_dispatch_ms"].get("p50", float("inf")) for level in levels]
    submit_p50s = [level["submit_ms"].get("p50", float("inf")) for level in levels]
    depth_ratio = ratio(p50s[-1], p50s[0])
    lowest = min((r["utilization"] or 0.0) for r in used["per_robot"].values())
    met = (
        all(p50 <= 100 for p50 in p50s)
        and depth_ratio is not None
        and depth_ratio <= 1.5
        and lowest >= 0.95
    )
    emit(
        NAME,
        "summary",
        target=(
            f"next dispatch p50 <= 100 ms at {', '.join(map(str, depths))} waiting "
            f"({len(ROBOTS)} robots, K={K}), p50 ratio {depths[-1]}/{depths[0]} <= 1.5; "
            f"utilization >= 0.95 ({BROWSERS} browsers, {PER_ORDER} s an order)"
        ),
        depths=list(depths),
        next_dispatch_p50_ms=p50s,
        next_dispatch_p95_ms=[level["next_dispatch_ms"].get("p95") for level in levels],
        submit_p50_ms=submit_p50s,
        submit_p95_ms=[level["submit_ms"].get("p95") for level in levels],
        next_dispatch_p50_ratio_deep_to_shallow=depth_ratio,
        submit_p50_ratio_deep_to_shallow=ratio(submit_p50s[-1], submit_p50s[0]),
        utilization_per_robot={r: v["utilization"] for r, v in used["per_robot"].items()},
        claim_plan=deep["plan"],
        met=met,
    )
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.robots", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="300 and 3,000 waiting")
    parser.add_argument("--redis", choices=("private", "shared"), default="private")
    args = parser.parse_args(argv)
    return 0 if run(args.quick, args.redis) else 1


if __name__ == "__main__":
    raise SystemExit(main())
