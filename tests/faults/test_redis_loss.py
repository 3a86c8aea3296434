"""Scenario 3: Redis loses everything (broker messages, completion keys, poller tokens)."""

from __future__ import annotations

import time

import pytest

from .conftest import record, rig
from .tools import Stopwatch, attempts

pytestmark = pytest.mark.faults


def test_redis_losing_everything_loses_no_job(log_dir) -> None:
    with rig(
        log_dir,
        database="postgres",
        private_redis=True,
        robot_args="--workers 64",
        REKICK_AFTER_SECONDS="3",
        ROBOT_SECONDS_PER_ITEM="3",
        ROBOT_DEADLINE_MARGIN_SECONDS="8",
    ) as r:
        assert r.redis is not None
        # A: the robot works slowly and will report after the loss.
        r.system.robot_config(item_delay=2.0)
        reported = r.submit_many(10, items=3)
        r.wait(lambda: len(r.robot_dispatches()) == 10, 60, "A dispatched")
        # B: the robot never reports; only the deadline can settle them.
        r.system.robot_config(mode="never_finish")
        silent = r.submit_many(4, items=3)
        r.wait(lambda: len(r.robot_dispatches()) == 14, 60, "B dispatched")
        r.system.robot_config(mode="normal", item_delay=0.1)
        # Each job's first item.started is in: callbacks accepted before the loss.
        r.wait(lambda: r.db.scalar("SELECT count(*) FROM events") >= 14, 30, "callbacks accepted")
        accepted = set(r.db.rows("SELECT job_id, webhook_id FROM events"))
        reports_before = r.db.scalar("SELECT count(*) FROM jobs WHERE report IS NOT NULL")

        r.redis.kill()
        outage = Stopwatch()
        # C: submitted while Redis is gone: committed, started once Redis is back.
        started = time.monotonic()
        during = r.submit_many(5, items=1, threads=5)
        slowest_submit = round(time.monotonic() - started, 2)
        r.wait(
            lambda: (
                r.db.scalar("SELECT count(*) FROM jobs WHERE report IS NOT NULL") > reports_before
            ),
            30,
            "a batch report accepted while Redis is down",
        )
        reports_during = (
            r.db.scalar("SELECT count(*) FROM jobs WHERE report IS NOT NULL") - reports_before
        )
        r.redis.start()  # same port, empty
        down_for = outage.seconds()
        recovery = Stopwatch()
        r.wait(lambda: r.db.all_final(19), 90, "every job to finish or fail")
        recovered_in = recovery.seconds()

        assert accepted <= set(r.db.rows("SELECT job_id, webhook_id FROM events"))
        finals = {
            job_id: (status, error)
            for job_id, status, error in r.db.rows("SELECT id, status, error FROM jobs")
        }
        assert {finals[j][0] for j in reported + during} == {"completed"}
        assert {finals[j][0] for j in silent} == {"failed"}
        assert all("deadline" in finals[j][1] for j in silent)
        items = dict(
            r.db.rows("SELECT job_id, string_agg(DISTINCT status, ',') FROM items GROUP BY job_id")
        )
        assert {items[j] for j in reported + during} == {"success"}
        assert {items[j] for j in silent} == {"unknown"}
        stats = r.system.robot_stats()
        assert stats["totalDispatches"] == 19
        assert set(stats["dispatches"].values()) == {1}
        assert set(attempts(log_dir).values()) == {1}
        assert len(attempts(log_dir)) == 19
        record(
            "3 Redis restarted empty",
            jobs=19,
            callbacks_accepted_before_loss=len(accepted),
            reports_accepted_while_down=reports_during,
            submitted_while_down=5,
            slowest_submit_while_down_s=slowest_submit,
            redis_down_s=down_for,
            robot_dispatches=stats["totalDispatches"],
            restart_to_all_final_s=recovered_in,
        )
