"""Scenarios 1 and 2: a worker killed with SIGKILL while jobs wait, and inside the dispatch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.harness import orders

from .conftest import Rig, record, rig
from .tools import Stopwatch, attempts, held

pytestmark = pytest.mark.faults


def test_worker_killed_while_50_jobs_wait_loses_none_and_dispatches_each_once(log_dir) -> None:
    with rig(
        log_dir,
        robot_args="--workers 64",
        ROBOT_SECONDS_PER_ITEM="10",
        ROBOT_DEADLINE_MARGIN_SECONDS="60",
    ) as r:
        r.system.robot_config(item_delay=2.0)  # 2 items: each job takes the robot ~4 s
        jobs = r.submit_many(50, items=2)
        r.wait(lambda: len(r.robot_dispatches()) == 50, 60, "50 dispatches")
        waiting = r.db.open_jobs()

        r.system.processes["worker"].kill()
        down = Stopwatch()
        # Reports keep landing while no worker runs: recorded, but nobody finalizes them.
        r.wait(
            lambda: (
                r.db.scalar(
                    "SELECT count(*) FROM jobs WHERE report IS NOT NULL AND status = 'processing'"
                )
                >= min(5, waiting)
            ),
            60,
            "reports recorded while no worker runs",
        )
        reported_without_worker = r.db.scalar(
            "SELECT count(*) FROM jobs WHERE report IS NOT NULL AND status = 'processing'"
        )
        worker_down = down.seconds()
        recovery = Stopwatch()
        r.system.start_process("worker", label="worker-2")
        r.wait(lambda: r.db.all_final(50), 90, "all 50 jobs to finish")
        recovered_in = recovery.seconds()

        statuses = r.db.rows("SELECT status, count(*) FROM jobs GROUP BY status")
        assert statuses == [("completed", 50)]
        items = r.db.rows(
            "SELECT status, count(*), count(tracking_number) FROM items GROUP BY status"
        )
        assert items == [("success", 100, 100)]
        stats = r.system.robot_stats()
        assert stats["totalDispatches"] == 50
        assert {stats["dispatches"][job] for job in jobs} == {1}
        assert set(attempts(log_dir).values()) == {1}
        record(
            "1 worker SIGKILL, 50 jobs waiting",
            jobs=50,
            open_at_kill=waiting,
            reported_while_no_worker=reported_without_worker,
            worker_down_s=worker_down,
            robot_dispatches=stats["totalDispatches"],
            new_worker_start_to_all_final_s=recovered_in,
        )


@pytest.fixture(scope="module")
def crashing(tmp_path_factory) -> Iterator[Rig]:
    with rig(tmp_path_factory.mktemp("crash-in-dispatch")) as r:
        yield r


@pytest.mark.parametrize(
    ("where", "status", "item_status", "robot_count"),
    [
        # Claimed and committed, never sent: never sent again; settled at the deadline.
        ("before", "failed", "unknown", 0),
        # Sent and accepted, the answer never recorded: the robot's report still finishes it.
        ("after", "completed", "success", 1),
    ],
)
def test_worker_killed_inside_dispatch_never_dispatches_twice(
    crashing: Rig, where: str, status: str, item_status: str, robot_count: int
) -> None:
    r = crashing
    r.system.robot_reset()
    answer = r.system.submit(orders(2, _fault=f"hold_{where}_send"))
    job_id = answer.json()["id"]
    r.wait(lambda: held(r.log_dir, job_id) == where, 30, f"the dispatch held {where} the send")

    worker = next(
        p for name, p in r.system.processes.items() if name.startswith("worker") and p.alive()
    )
    worker.kill()
    settle = Stopwatch()
    r.system.start_process("worker", label=f"worker-after-{where}")
    job = r.system.wait_final(job_id, timeout=60)
    settled_in = settle.seconds()
    # Let housekeeping run a few more times: a job must not be restarted or dispatched again.
    runs = r.system.processes[f"worker-after-{where}"].log().count("orchestrator.housekeeping")
    r.wait(
        lambda: (
            r.system.processes[f"worker-after-{where}"].log().count("orchestrator.housekeeping")
            >= runs + 6
        ),
        30,
        "three more housekeeping runs",
    )

    assert job["status"] == status
    assert [item["status"] for item in job["items"]] == [item_status] * 2
    if where == "before":
        assert "deadline" in job["error"]
    assert r.system.robot_stats()["dispatches"].get(job_id, 0) == robot_count
    assert attempts(r.log_dir)[job_id] == 1
    assert r.system.job(job_id)["status"] == status
    record(
        f"2 worker SIGKILL {where} the dispatch's HTTP call",
        final=f"{status}, items {item_status}",
        attempts=attempts(r.log_dir)[job_id],
        robot_dispatches=robot_count,
        new_worker_start_to_final_s=settled_in,
    )
