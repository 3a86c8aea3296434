"""The report listener's wake-up: it closes the reported job itself, or hands it on."""

from __future__ import annotations

from typing import Any

from orchestrator.celery_app import ReportListener
from orchestrator.rendezvous import Rendezvous, poller_key, report_key
from tests.unit.conftest import REDIS_URL

from .test_lifecycle import claim, job_row, new_job, report


class RecordingApp:
    """Stands in for the Celery app: records the tasks the listener sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[Any, ...]]] = []

    def send_task(self, name: str, args: tuple[Any, ...] = ()) -> None:
        self.sent.append((name, tuple(args)))


def test_the_wake_up_closes_a_reported_job_without_a_finalize_task(
    database_url, make_settings, fake_redis
) -> None:
    settings = make_settings(database_url=database_url, redis_url=REDIS_URL)
    job_id = new_job(database_url, 2)
    assert claim(database_url, job_id, settings) is not None
    report(database_url, job_id, "robot.batch.completed")
    Rendezvous(fake_redis).announce_report(job_id, "completed")
    fake_redis.set(poller_key(job_id), "token")
    app = RecordingApp()

    ReportListener._wake(app, settings, job_id)  # type: ignore[arg-type]

    job = job_row(database_url, job_id)
    assert (job.status, job.finished_at is not None) == ("completed", True)
    assert app.sent == []
    # Its keys are dropped: a poll still scheduled finds its token stale and stops.
    assert not fake_redis.exists(report_key(job_id), poller_key(job_id))


def test_a_wake_up_for_a_closed_job_changes_nothing(database_url, make_settings, fake_redis):
    settings = make_settings(database_url=database_url, redis_url=REDIS_URL)
    job_id = new_job(database_url, 1)
    claim(database_url, job_id, settings)
    report(database_url, job_id, "robot.batch.failed", {"error": "portal down"})
    app = RecordingApp()
    ReportListener._wake(app, settings, job_id)  # type: ignore[arg-type]
    first = job_row(database_url, job_id)

    ReportListener._wake(app, settings, job_id)  # type: ignore[arg-type]

    again = job_row(database_url, job_id)
    assert (again.status, again.finished_at, again.error) == (
        "failed",
        first.finished_at,
        "the robot reported the batch failed: portal down",
    )
    assert app.sent == []


def test_an_unreachable_database_hands_the_job_to_a_finalize_task(make_settings, fake_redis):
    # Port 9 (discard) refuses the connection at once.
    settings = make_settings(
        database_url="postgresql+psycopg://nobody@127.0.0.1:9/none", redis_url=REDIS_URL
    )
    app = RecordingApp()

    ReportListener._wake(app, settings, "job-1")  # type: ignore[arg-type]

    assert app.sent == [("orchestrator.finalize", ("job-1",))]


def test_a_report_for_an_unknown_job_is_dropped(sqlite_url, make_settings, fake_redis, caplog):
    settings = make_settings(database_url=sqlite_url, redis_url=REDIS_URL)
    app = RecordingApp()

    ReportListener._wake(app, settings, "no-such-job")  # type: ignore[arg-type]

    assert app.sent == []
    assert "does not exist" in caplog.text


def test_after_subscribing_it_settles_the_reports_recorded_while_it_was_away(
    database_url, make_settings, fake_redis
) -> None:
    """A failover loses the announcement (pub/sub keeps nothing); the database has it."""
    settings = make_settings(database_url=database_url, redis_url=REDIS_URL)
    reported, waiting = new_job(database_url, 1), new_job(database_url, 1)
    for job_id in (reported, waiting):
        assert claim(database_url, job_id, settings) is not None
    report(database_url, reported, "robot.batch.completed")  # recorded, never announced
    app = RecordingApp()

    ReportListener(None)._settle_missed(app, settings)  # type: ignore[arg-type]

    assert job_row(database_url, reported).status == "completed"
    assert job_row(database_url, waiting).status == "processing"
    assert app.sent == []
