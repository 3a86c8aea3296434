"""The housekeeping task's run: settles, restarts and applies retention, and counts each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from celery._state import get_current_app
from sqlalchemy import update

from orchestrator import lifecycle, metrics, tasks
from orchestrator.celery_app import create_celery
from orchestrator.db import session_scope
from orchestrator.models import Job
from orchestrator.robot_events import BATCH_COMPLETED, apply_event

ORDERS = [{"orderId": "A", "pedidoInput": {}}]


def sample(name: str) -> float:
    return metrics._registry(metrics._worker).get_sample_value(name) or 0.0


@pytest.fixture
def worker_app(sqlite_url, make_settings):
    """The housekeeping task's Celery app, current as in a worker (no broker is used)."""
    previous = get_current_app()
    app = create_celery(make_settings(database_url=sqlite_url, retention_days=1.0))
    app.set_current()
    yield app
    previous.set_current()


def test_housekeeping_settles_a_lost_report_and_deletes_what_retention_says(
    worker_app, sqlite_url, make_settings
) -> None:
    settings = worker_app.conf["orchestrator_settings"]
    with session_scope(sqlite_url) as session:
        reported = lifecycle.create_job(session, ORDERS).id
        expired = lifecycle.create_job(session, ORDERS).id
        kept = lifecycle.create_job(session, ORDERS).id
    for job_id in (reported, expired, kept):
        with session_scope(sqlite_url) as session:
            lifecycle.claim_dispatch(session, job_id, settings)
    for job_id in (reported, expired, kept):
        with session_scope(sqlite_url) as session:  # the report's wake-up never came
            apply_event(session, job_id, f"msg-{job_id}", BATCH_COMPLETED, {})
    for job_id in (expired, kept):
        with session_scope(sqlite_url) as session:
            lifecycle.finalize(session, job_id)
    with session_scope(sqlite_url) as session:
        session.execute(
            update(Job)
            .where(Job.id == expired)
            .values(finished_at=datetime.now(UTC) - timedelta(days=1, minutes=1))
        )
    settled = sample("orchestrator_housekeeping_settled_jobs_total")
    deleted = sample("orchestrator_retention_deleted_jobs_total")

    result = tasks.run_housekeeping()

    assert result == {
        "settled": 1,
        "silent": 0,
        "restarted": 0,
        "handedOff": 0,
        "resumed": 0,
        "purgedKeys": 0,
        "notificationStreams": 0,
        "deletedJobs": 1,
    }
    assert sample("orchestrator_housekeeping_settled_jobs_total") == settled + 1
    assert sample("orchestrator_retention_deleted_jobs_total") == deleted + 1
    with session_scope(sqlite_url) as session:
        assert session.get(Job, reported).status == "completed"
        assert session.get(Job, expired) is None
        assert session.get(Job, kept) is not None
