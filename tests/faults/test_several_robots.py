"""Several robots, one of them dead (CONTRACT §11, §7, §4).

Robots ``a`` and ``b`` on the real processes (PostgreSQL, web, worker, beat), each with one
slot. Robot a's service is not running (its port refuses connections) while robot b works:
a pauses itself after its failures, b's freed slots still reach b within 2 s, and nothing
reaches a robot twice (counted at the simulators). Then a's service starts, a person resumes
a (``POST /api/robots/a/resume``) and its waiting jobs go to it.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.integration.harness import orders

from .conftest import Rig, record, rig

pytestmark = pytest.mark.faults

ROBOTS = ("a", "b")
PAUSE_AFTER = 2


def api(r: Rig, method: str, path: str, expect: int = 200, **kwargs: Any) -> dict[str, Any]:
    system = r.system
    answer = system.http.request(
        method, f"{system.base}{path}", headers=system.headers(), timeout=10, **kwargs
    )
    assert answer.status_code == expect, answer.text
    return answer.json()


def submit(r: Rig, robot: str) -> str:
    answer = r.system.submit(orders(1), robot=robot)
    assert answer.status_code == 202, answer.text
    assert answer.json()["robot"] == robot
    return str(answer.json()["id"])


def at_robot(r: Rig, robot: str, job_id: str) -> int:
    return r.robot_dispatches(robot).get(job_id, 0)


def hand_off(r: Rig, finished: str, following: str) -> float:
    """Report ``finished`` completed (signed as robot b); return seconds until ``following``
    reaches robot b."""
    started = time.monotonic()
    answer = r.system.send_event(finished, "robot.batch.completed", {"items": []})
    assert answer.status_code == 200, answer.text
    r.wait(lambda: at_robot(r, "b", following) == 1, 30, f"{following} at robot b")
    return time.monotonic() - started


@pytest.mark.timeout(300)
def test_a_dead_robot_pauses_itself_and_never_delays_the_other(log_dir) -> None:
    with rig(
        log_dir,
        database="postgres",
        robots=ROBOTS,
        names=("robot-b", "web", "worker", "beat"),  # robot a's service is down
        ROBOT_MAX_ACTIVE_JOBS="1",
        ROBOT_A_PAUSE_AFTER_FAILURES=str(PAUSE_AFTER),
        ROBOT_SECONDS_PER_ITEM="5",
        ROBOT_DEADLINE_MARGIN_SECONDS="120",
    ) as r:
        _scenario(r)


def _scenario(r: Rig) -> None:
    # Robot b takes one job and holds it; four more wait behind it for b's one slot. The
    # first hand-off, while robot a has nothing to do, is the baseline of this run.
    r.system.robot_config("b", mode="never_finish")
    b_jobs = [submit(r, "b") for _ in range(5)]
    r.wait(lambda: at_robot(r, "b", b_jobs[0]) == 1, 30, "b's first job at robot b")
    alone = hand_off(r, b_jobs[0], b_jobs[1])
    b_first, b_jobs = b_jobs[0], b_jobs[1:]

    # Robot a: every dispatch is refused at the connection; b hands its slot on meanwhile.
    a_jobs = [submit(r, "a") for _ in range(PAUSE_AFTER + 2)]
    while_failing = hand_off(r, b_jobs[0], b_jobs[1])

    def a_paused() -> dict[str, Any] | None:
        state = api(r, "get", "/api/robots/a")
        return state if state["paused"] else None

    state_a = r.wait(a_paused, 60, "robot a to pause itself")
    assert (state_a["name"], state_a["pausedBy"]) == ("a", "failures")
    assert state_a["failuresInARow"] == PAUSE_AFTER
    assert state_a["pausedReason"]
    failed = [api(r, "get", f"/api/jobs/{job}") for job in a_jobs[:PAUSE_AFTER]]
    assert [job["status"] for job in failed] == ["failed"] * PAUSE_AFTER
    assert {item["status"] for job in failed for item in job["items"]} == {"error"}
    waiting = [api(r, "get", f"/api/jobs/{job}") for job in a_jobs[PAUSE_AFTER:]]
    assert [(job["status"], job["queuePosition"]) for job in waiting] == [
        ("pending", 1),
        ("pending", 2),
    ]
    assert state_a["queuedJobs"] == 2

    # Robot b is untouched: not paused, no failure counted, its slot handed on promptly.
    state_b = api(r, "get", "/api/robots/b")
    assert (state_b["paused"], state_b["failuresInARow"]) == (False, 0)
    combined = api(r, "get", "/api/dispatch")
    assert combined["paused"] is False  # not every robot is paused
    while_paused = hand_off(r, b_jobs[1], b_jobs[2])
    figures = f"alone {alone:.2f} s, a failing {while_failing:.2f} s, a paused {while_paused:.2f} s"
    assert max(alone, while_failing, while_paused) <= 2.0, f"b's hand-offs: {figures}"

    # Robot a's service comes back: nothing goes to it until a person resumes it.
    r.system.start_process("robot-a")
    assert r.system.robot_stats("a")["totalDispatches"] == 0
    resumed = api(r, "post", "/api/robots/a/resume")
    assert (resumed["name"], resumed["paused"], resumed["failuresInARow"]) == ("a", False, 0)
    for job in a_jobs[PAUSE_AFTER:]:
        assert r.system.wait_final(job, timeout=60)["status"] == "completed"

    # b's last jobs finish; then count what reached each robot.
    r.system.robot_config("b", mode="normal")
    hand_off(r, b_jobs[2], b_jobs[3])
    assert r.system.wait_final(b_jobs[3], timeout=60)["status"] == "completed"
    at_a, at_b = r.robot_dispatches("a"), r.robot_dispatches("b")
    assert at_a == dict.fromkeys(a_jobs[PAUSE_AFTER:], 1)  # never the failed ones, once each
    assert at_b == dict.fromkeys([b_first, *b_jobs], 1)
    assert r.db.open_jobs() == 0
    record(
        "several robots, one dead",
        b_hand_off_alone_s=round(alone, 3),
        b_hand_off_while_a_failing_s=round(while_failing, 3),
        b_hand_off_while_a_paused_s=round(while_paused, 3),
        a_failures_before_pause=PAUSE_AFTER,
        dispatches_per_job=1,
    )
