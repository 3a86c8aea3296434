"""A worker killed between a finalize's commit and its hand-off: the queue still moves (§7)."""

from __future__ import annotations

import pytest

from tests.integration.harness import orders

from .conftest import record, rig
from .tools import Stopwatch, attempts

pytestmark = pytest.mark.faults


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_worker_killed_before_the_hand_off_loses_no_waiting_job(log_dir, database) -> None:
    with rig(
        log_dir,
        database=database,
        ROBOT_MAX_ACTIVE_JOBS="1",
        ROBOT_SECONDS_PER_ITEM="5",
        ROBOT_DEADLINE_MARGIN_SECONDS="120",
    ) as r:
        system = r.system
        system.robot_config(mode="never_finish")
        first = system.submit(orders(1)).json()["id"]
        r.wait(lambda: r.robot_dispatches().get(first) == 1, 60, "the first dispatch")
        second = system.submit(orders(1)).json()["id"]
        r.wait(
            lambda: r.db.scalar("SELECT parked_at FROM jobs WHERE id = :i", i=second),
            60,
            "the second job to wait for the slot",
        )
        (log_dir / "hold-hand-off").write_text("")

        answer = system.send_event(first, "robot.batch.completed", {"items": []})
        assert answer.status_code == 200
        r.wait(lambda: (log_dir / "held-hand-off").exists(), 60, "the hand-off to be held")
        r.wait(
            lambda: r.db.scalar("SELECT status FROM jobs WHERE id = :i", i=first) == "completed",
            30,
            "the finalize's commit",
        )
        assert r.db.scalar("SELECT status FROM jobs WHERE id = :i", i=second) == "pending"
        system.processes["worker"].kill()
        (log_dir / "hold-hand-off").unlink()
        assert second not in r.robot_dispatches()

        system.robot_config(mode="normal")
        moved = Stopwatch()
        system.start_process("worker", label="worker-2")
        r.wait(lambda: r.robot_dispatches().get(second) == 1, 90, "housekeeping's hand-off")
        handed_off_in = moved.seconds()
        assert "handed off 1" in system.processes["worker-2"].log()  # by housekeeping
        job = system.wait_final(second, timeout=60)

        assert job["status"] == "completed"
        assert system.robot_stats()["totalDispatches"] == 2
        assert attempts(log_dir)[second] == 1
        record(
            f"worker killed before the hand-off ({database})",
            new_worker_start_to_next_dispatch_s=handed_off_in,
        )
