"""Scenario 5: the robot fails in every way CONTRACT §4 names; one attempt, the right outcome."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.harness import orders

from .conftest import Rig, record, rig
from .tools import attempts

pytestmark = pytest.mark.faults

# mode -> (job status, item status, words in the error, robot counts a dispatch)
OUTCOMES = {
    "http_500": ("failed", "error", "HTTP 500", 1),
    "http_400": ("failed", "error", "HTTP 400", 1),
    "redirect_307": ("failed", "error", "HTTP 307", 1),
    "http_503": ("failed", "unknown", "check the portal", 1),
    "slow_answer": ("failed", "unknown", "did not answer within 2 s", 1),
    "not_json_2xx": ("completed", "success", None, 1),
}


@pytest.fixture(scope="module")
def robot(tmp_path_factory) -> Iterator[Rig]:
    # Housekeeping every second and restarts after 2 s: a second attempt would show at once.
    with rig(
        tmp_path_factory.mktemp("robot-failures"),
        REKICK_AFTER_SECONDS="2",
        ROBOT_DISPATCH_TIMEOUT_SECONDS="2",
    ) as r:
        yield r


def _more_housekeeping(r: Rig, runs: int = 3) -> None:
    """Wait for a few more housekeeping runs: time for any second attempt to happen."""
    worker = next(p for n, p in r.system.processes.items() if n.startswith("worker"))
    done = worker.log().count("orchestrator.housekeeping[")
    r.wait(
        lambda: worker.log().count("orchestrator.housekeeping[") >= done + 2 * runs,
        30,
        f"{runs} more housekeeping runs",
    )


@pytest.mark.parametrize("mode", list(OUTCOMES))
def test_robot_failure_gives_the_contract_outcome_after_one_attempt(robot: Rig, mode: str) -> None:
    r = robot
    status, item_status, words, robot_count = OUTCOMES[mode]
    r.system.robot_reset()
    r.system.robot_config(mode=mode, answer_delay=4.0)
    job_id = r.system.submit(orders(2)).json()["id"]

    job = r.system.wait_final(job_id, timeout=30)

    assert job["status"] == status
    assert [item["status"] for item in job["items"]] == [item_status] * 2
    if words:
        assert words in job["error"]
    _more_housekeeping(r)
    assert attempts(r.log_dir)[job_id] == 1
    assert r.system.robot_stats()["dispatches"].get(job_id, 0) == robot_count
    assert r.system.job(job_id)["status"] == status
    if mode == "slow_answer":
        # The robot had it after all: its late results fill the unknown items, the job stays.
        r.wait(lambda: r.system.job(job_id)["counts"]["success"] == 2, 30, "late results")
        assert r.system.job(job_id)["status"] == "failed"
    record(
        f"5 robot {mode}",
        final=f"{status}, items {item_status}",
        attempts=attempts(r.log_dir)[job_id],
        robot_dispatches=robot_count,
    )


def test_connection_refused_fails_at_once_with_items_error_after_one_attempt(robot: Rig) -> None:
    r = robot
    simulator = next(p for n, p in r.system.processes.items() if n.startswith("robot"))
    simulator.stop()
    try:
        job_id = r.system.submit(orders(2)).json()["id"]
        job = r.system.wait_final(job_id, timeout=30)
        _more_housekeeping(r)
    finally:
        r.system.start_process("robot", label="robot-after-refusal")

    assert job["status"] == "failed"
    assert "could not connect" in job["error"]
    assert [item["status"] for item in job["items"]] == ["error", "error"]
    assert attempts(r.log_dir)[job_id] == 1
    assert r.system.robot_stats()["dispatches"].get(job_id, 0) == 0
    record("5 robot connection refused", final="failed, items error", attempts=1)
