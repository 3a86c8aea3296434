"""The chain and its errback on a real worker: free waiting, crashes, redelivered polls."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import Celery

from orchestrator.local.processes import procfile

from .conftest import flush_redis
from .harness import System, orders, wait_until

pytestmark = pytest.mark.integration


def dispatched(system: System, job_ids: list[str]) -> bool:
    counts = system.robot_stats()["dispatches"]
    return all(counts.get(job_id) == 1 for job_id in job_ids)


def test_waiting_jobs_hold_no_worker_slot(robot: System) -> None:
    robot.robot_config(mode="never_finish")
    waiting = [robot.submit(orders(1)).json()["id"] for _ in range(30)]
    wait_until(lambda: dispatched(robot, waiting), 60, "30 dispatches")
    robot.robot_config(mode="normal")

    job = robot.wait_final(robot.submit(orders(2)).json()["id"], timeout=30)

    assert job["status"] == "completed"
    assert {robot.job(job_id)["status"] for job_id in waiting} == {"processing"}
    assert "worker" in robot.processes and robot.processes["worker"].alive()


def test_redelivered_and_duplicate_polls_stop_and_finalize_happens_once(robot: System) -> None:
    robot.robot_config(mode="never_finish")
    job_id = robot.submit(orders(1)).json()["id"]
    wait_until(lambda: dispatched(robot, [job_id]), 30, "the dispatch")
    worker = robot.processes["worker"]
    wait_until(lambda: "wait_for_report" in worker.log(), 30, "the first poll")
    app = Celery(broker=robot.redis_url)
    app.conf.task_default_queue = "orchestrator"
    try:
        app.send_task("orchestrator.wait_for_report", args=(job_id,))
        app.send_task("orchestrator.wait_for_report", args=(job_id, 0.0, "stale-token"))
        app.send_task("orchestrator.finalize", args=(job_id,))
    finally:
        app.close()
    stopped = f"job {job_id}: another poll owns this job; this poll stops"
    wait_until(lambda: worker.log().count(stopped) >= 2, 30, "both extra polls to stop")

    item = robot.job(job_id)["items"][0]
    robot.send_event(
        job_id,
        "robot.batch.completed",
        {"items": [{"itemId": item["id"], "status": "success", "trackingNumber": "CO-1"}]},
    )
    job = robot.wait_final(job_id, timeout=30)

    assert job["status"] == "completed"
    assert worker.log().count(f"job {job_id} completed") == 1


def test_killed_worker_loses_no_job(robot: System) -> None:
    robot.robot_config(mode="never_finish")
    jobs = [robot.submit(orders(1)).json()["id"] for _ in range(5)]
    wait_until(lambda: dispatched(robot, jobs), 60, "5 dispatches")
    wait_until(lambda: all(robot.job(j)["dispatchedAt"] for j in jobs), 30, "dispatches recorded")

    robot.processes["worker"].kill()
    for job_id in jobs[:3]:
        item = robot.job(job_id)["items"][0]
        answer = robot.send_event(
            job_id,
            "robot.batch.completed",
            {"items": [{"itemId": item["id"], "status": "success", "trackingNumber": "CO-K"}]},
        )
        assert answer.status_code == 200  # recorded while no worker runs
    robot.start_process("worker")

    finished = [robot.wait_final(job_id, timeout=40) for job_id in jobs]

    assert [job["status"] for job in finished[:3]] == ["completed"] * 3
    assert all(job["items"][0]["trackingNumber"] == "CO-K" for job in finished[:3])
    # The two never reported settle at their deadline (1 item: 1 s + 4 s margin).
    assert [job["status"] for job in finished[3:]] == ["failed"] * 2
    assert {job["items"][0]["status"] for job in finished[3:]} == {"unknown"}
    assert all(robot.robot_stats()["dispatches"][job_id] == 1 for job_id in jobs)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory) -> Iterator[System]:
    """A system whose worker loads tests.integration.hooks (injected faults)."""
    log_dir = tmp_path_factory.mktemp("system-faulty")
    flush_redis(12)
    system = System(log_dir, f"sqlite:///{log_dir / 'faulty.db'}", redis_db=12)
    worker = procfile()["worker"] + " --include tests.integration.hooks"
    try:
        system.start(("robot", "web"))
        system.start_process("worker", command=worker)
        yield system
    finally:
        system.stop()
        flush_redis(12)


@pytest.mark.parametrize(
    ("where", "item_status", "dispatches"),
    [("before_claim", "error", 0), ("after_claim", "unknown", 0)],
)
def test_unexpected_error_reaches_the_errback(
    faulty: System, where: str, item_status: str, dispatches: int
) -> None:
    job_id = faulty.submit(orders(2, _explode=where)).json()["id"]

    job = faulty.wait_final(job_id, timeout=30)

    assert job["status"] == "failed"
    assert job["error"] == "unexpected error in dispatch: RuntimeError; see the worker log"
    assert [item["status"] for item in job["items"]] == [item_status] * 2
    assert faulty.robot_stats()["dispatches"].get(job_id, 0) == dispatches
