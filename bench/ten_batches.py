"""Ten batches on a two-browser robot, with ``ROBOT_MAX_ACTIVE_JOBS=2`` and without a limit.

``python -m bench.ten_batches [--redis private|shared] [--per-item 0.3]``

Real processes (release, web, worker, beat and the robot simulator with ``--browsers 2``) on a
fresh PostgreSQL database and a private Redis, started twice: once with the limit, once without.
Each run submits the same ten batches (5 to 20 orders, 130 in all) one after the other, waits
until every job is final, then until the robot has worked through what it holds (its late
results fill in ``unknown`` items), and stops by itself: every wait is bounded.

Time is scaled down 100-fold, the deadline with it: the robot takes ``--per-item`` seconds per
order (0.3 s for the real ~30 s), ``ROBOT_SECONDS_PER_ITEM`` is the same and
``ROBOT_DEADLINE_MARGIN_SECONDS`` is 300 s scaled the same way (3 s), so a batch of N orders
has N x 0.3 s + 3 s from its dispatch, as a real one has N x 30 s + 5 min.

Figures per run: jobs completed / failed (and how many at their deadline), items success /
error / unknown when the last job became final, unknown items the robot's late reports filled in
afterwards, the wall time (first submit to the last job final; and to the robot done with
everything it held), the most batches the robot held at once and worked at once (the
simulator's own counts), dispatches per job (always 1).
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from typing import Any

from orchestrator.local.processes import wait_until

from .common import FINAL, MachineLoad, Stack, emit, note, ratio

NAME = "ten_batches"
SIZES = (12, 7, 20, 15, 5, 18, 9, 14, 20, 10)  # the same ten batches in both runs
SCALE = 100  # real seconds per scaled second
BROWSERS = 2


def _jobs(stack: Stack, ids: list[str]) -> list[dict[str, Any]]:
    return [stack.job(job_id) for job_id in ids]


def _robot(stack: Stack) -> dict[str, Any]:
    return stack.http().get(f"{stack.robot}/_sim/stats", timeout=5).json()


def _all_final(jobs: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    return jobs if all(j["status"] in FINAL for j in jobs) else None


def _items(jobs: list[dict[str, Any]]) -> dict[str, int]:
    return {k: sum(j["counts"][k] for j in jobs) for k in ("success", "error", "unknown")}


def _seconds(later: str | None, earlier: str | None) -> float | None:
    if not later or not earlier:
        return None
    return round(
        (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds(), 2
    )


def one_run(redis_mode: str, per_item: float, limit: int | None) -> dict[str, Any]:
    """Run the ten batches once; return the figures."""
    margin = 300 / SCALE
    env = {
        "ROBOT_SECONDS_PER_ITEM": str(per_item),
        "ROBOT_DEADLINE_MARGIN_SECONDS": str(margin),
        "ROBOT_SETTLE_SECONDS": "0.3",
    }
    if limit is not None:
        env["ROBOT_MAX_ACTIVE_JOBS"] = str(limit)
    robot_args = f"--item-delay {per_item} --browsers {BROWSERS}"
    # The robot alone needs sum(N) x per_item / browsers; three times that plus every margin
    # bounds a run that works, and a broken one stops there.
    bound = 3 * (sum(SIZES) * per_item / BROWSERS + len(SIZES) * margin) + 60
    case = f"limit_{limit}" if limit is not None else "no_limit"
    with Stack(NAME, redis_mode, robot="simulator", robot_args=robot_args, **env) as stack:
        note(f"{NAME}: {case}: submitting {len(SIZES)} batches ({sum(SIZES)} orders)")
        load = MachineLoad()
        started = time.time()
        ids = [stack.submit(size) for size in SIZES]
        try:
            jobs = wait_until(
                lambda: _all_final(_jobs(stack, ids)),
                bound,
                "every job to be final",
                interval=0.25,
            )
        except TimeoutError:
            jobs = _jobs(stack, ids)
            note(f"{NAME}: {case}: not every job was final after {bound:.0f} s")
        final_at = time.time()
        at_final = _items(jobs)
        sim = _robot(stack)
        # The robot goes on with what it holds; its late results fill in unknown items.
        try:
            wait_until(
                lambda: _robot(stack)["heldJobs"] == 0,
                bound,
                "the robot to finish what it holds",
                interval=0.25,
            )
        except TimeoutError:
            note(f"{NAME}: {case}: the robot still held jobs after {bound:.0f} s")
        robot_done_at = time.time()
        sim_after = _robot(stack)
        after = _items(_jobs(stack, ids))
        busy = load.close()
    finished = [j["finishedAt"] for j in jobs if j.get("finishedAt")]
    last_final = max(finished) if finished else None
    per_job = [
        {
            "orders": size,
            "status": job["status"],
            "deadline_failure": bool(job["error"] and "deadline" in job["error"]),
            "waited_s": _seconds(job.get("dispatchedAt"), job["createdAt"]),
            "ran_s": _seconds(job.get("finishedAt"), job.get("dispatchedAt")),
            "unknown": job["counts"]["unknown"],
        }
        for size, job in zip(SIZES, jobs, strict=True)
    ]
    figures = {
        "max_active_jobs": limit,
        "browsers": BROWSERS,
        "per_item_s": per_item,
        "deadline_margin_s": margin,
        "orders": sum(SIZES),
        "completed": sum(1 for j in jobs if j["status"] == "completed"),
        "failed": sum(1 for j in jobs if j["status"] == "failed"),
        "failed_at_deadline": sum(1 for j in per_job if j["deadline_failure"]),
        "not_final": sum(1 for j in jobs if j["status"] not in FINAL),
        "items_at_final": at_final,
        "unknown_filled_in_late": at_final["unknown"] - after["unknown"],
        "items_after_robot_done": after,
        "wall_s": _seconds(last_final, jobs[0]["createdAt"]) if last_final else None,
        "harness_wall_s": round(final_at - started, 2),
        "robot_done_s": round(robot_done_at - started, 2),
        "robot_max_held": sim["maxHeldJobs"],
        "robot_max_working": sim["maxWorkingJobs"],
        "dispatches_per_job": sorted(set(sim_after["dispatches"].values())),
        "robot_jobs_accepted": sim_after["jobsAccepted"],
        "jobs": per_job,
        "machine_busy_pct": busy,
    }
    emit(NAME, case, **figures)
    return figures


def _table(case: str, f: dict[str, Any]) -> None:
    items = f["items_at_final"]
    note(
        f"{case:>9}: {f['completed']} completed, {f['failed']} failed "
        f"({f['failed_at_deadline']} at the deadline); items {items['success']} success, "
        f"{items['error']} error, {items['unknown']} unknown "
        f"({f['unknown_filled_in_late']} filled in later by the robot's late reports); "
        f"wall {f['wall_s']} s (robot done after {f['robot_done_s']} s); at the robot at once: "
        f"{f['robot_max_held']} held, {f['robot_max_working']} worked"
    )


def run(quick: bool, redis_mode: str, per_item: float = 0.3) -> bool:
    """Both runs, limited first; True when the limit avoided every deadline failure."""
    limited = one_run(redis_mode, per_item, BROWSERS)
    unlimited = one_run(redis_mode, per_item, None)
    met = (
        limited["completed"] == len(SIZES)
        and limited["failed_at_deadline"] == 0
        and limited["robot_max_held"] <= BROWSERS
    )
    emit(
        NAME,
        "summary",
        target=(
            f"ROBOT_MAX_ACTIVE_JOBS={BROWSERS}: all {len(SIZES)} complete, none at its deadline; "
            "no limit: deadline failures with unknown items"
        ),
        completed={"limit": limited["completed"], "no_limit": unlimited["completed"]},
        failed_at_deadline={
            "limit": limited["failed_at_deadline"],
            "no_limit": unlimited["failed_at_deadline"],
        },
        unknown_items={
            "limit": limited["items_at_final"]["unknown"],
            "no_limit": unlimited["items_at_final"]["unknown"],
        },
        wall_s={"limit": limited["wall_s"], "no_limit": unlimited["wall_s"]},
        wall_ratio_limit_to_no_limit=ratio(limited["wall_s"] or 0, unlimited["wall_s"] or 0),
        robot_max_held={
            "limit": limited["robot_max_held"],
            "no_limit": unlimited["robot_max_held"],
        },
        met=met,
    )
    _table(f"limit {BROWSERS}", limited)
    _table("no limit", unlimited)
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ten_batches", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--redis", choices=("private", "shared"), default="private")
    parser.add_argument("--per-item", type=float, default=0.3, help="robot seconds per order")
    args = parser.parse_args(argv)
    return 0 if run(quick=False, redis_mode=args.redis, per_item=args.per_item) else 1


if __name__ == "__main__":
    raise SystemExit(main())
