"""The robot simulator's browsers and heartbeats against the real orchestrator's processes."""

from __future__ import annotations

from orchestrator.local.processes import wait_until

from .harness import System, orders

# ROBOT_SECONDS_PER_ITEM=1 and a 4 s margin in the harness: a two-order job has 6 s.


def test_heartbeats_are_accepted_and_change_nothing(robot: System) -> None:
    robot.robot_config(mode="never_finish", heartbeat=0.3)
    job_id = robot.submit(orders(2)).json()["id"]
    wait_until(lambda: robot.robot_stats()["heartbeatsSent"] >= 1, 20, "a heartbeat")
    job = robot.job(job_id)
    sent = robot.robot_stats()["heartbeatsSent"]
    wait_until(lambda: robot.robot_stats()["heartbeatsSent"] >= sent + 3, 20, "three more")
    assert robot.robot_stats()["heartbeatsFailed"] == 0  # each answered 2xx: signed and valid
    assert robot.job(job_id) == job
    assert job["status"] == "processing"
    # Heartbeats never move the deadline: the job still fails at it.
    final = robot.wait_final(job_id, timeout=60)
    assert final["status"] == "failed" and "deadline" in final["error"]
    assert final["deadline"] == job["deadline"]


def test_a_two_browser_robot_without_a_limit_holds_every_batch_and_works_two(
    robot: System,
) -> None:
    robot.robot_config(browsers=2, item_delay=0.3)
    ids = [robot.submit(orders(2)).json()["id"] for _ in range(4)]
    jobs = [robot.wait_final(job_id, timeout=60) for job_id in ids]
    assert [j["status"] for j in jobs] == ["completed"] * 4
    stats = robot.robot_stats()
    assert stats["maxWorkingJobs"] == 2
    assert stats["maxHeldJobs"] >= 3  # no ROBOT_MAX_ACTIVE_JOBS here: they all arrive at once
    assert sorted(stats["dispatches"][j] for j in ids) == [1, 1, 1, 1]
