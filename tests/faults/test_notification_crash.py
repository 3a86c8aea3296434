"""A worker killed between the finalize commit and the notification's send (CONTRACT §8)."""

from __future__ import annotations

import base64

import pytest

from tests.integration.receiver import Receiver

from .conftest import record, rig
from .tools import Stopwatch

pytestmark = pytest.mark.faults

SECRET = "whsec_" + base64.b64encode(b"faults-notify-secret-0123456789ab").decode()


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_worker_killed_before_the_send_still_delivers_once_the_system_runs(
    log_dir, database
) -> None:
    receiver = Receiver(SECRET).start()
    try:
        with rig(
            log_dir,
            database=database,
            NOTIFY_URL=receiver.url,
            NOTIFY_SECRET=SECRET,
            NOTIFY_BACKOFF_SECONDS="0.5",
        ) as r:
            (log_dir / "hold-notifications").write_text("")
            [job_id] = r.submit_many(1, items=2)
            # The job is final (committed, notification written) and its send is held.
            r.wait(
                lambda: list(log_dir.glob("held-notification-*")),
                60,
                "the notification's send to be held",
            )
            assert r.db.scalar("SELECT status FROM jobs WHERE id = :j", j=job_id) == "completed"
            [(notification_id, status)] = r.db.rows(
                "SELECT id, status FROM notifications WHERE job_id = :j", j=job_id
            )
            assert status == "pending" and receiver.for_job(job_id) == []

            r.system.processes["worker"].kill()
            (log_dir / "hold-notifications").unlink()
            recovery = Stopwatch()
            r.system.start_process("worker", label="worker-2")
            # The killed attempt's lease runs out (30 s); housekeeping then enqueues it.
            r.wait(lambda: receiver.delivered(job_id), 90, "the notification to arrive")
            took = recovery.seconds()
            r.wait(
                lambda: (
                    r.db.scalar("SELECT status FROM notifications WHERE id = :n", n=notification_id)
                    == "delivered"
                ),
                30,
                "delivered in the database",
            )
            got = receiver.for_job(job_id)
            assert [g.webhook_id for g in got] == [notification_id]
            assert got[0].verified and got[0].body["data"]["status"] == "completed"
            record(f"worker killed before a notification's send ({r.kind})", recovered_s=took)
    finally:
        receiver.stop()
