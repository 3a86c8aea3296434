"""Housekeeping finds, from the database alone, what a crash or a lost Redis left behind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from orchestrator import housekeeping, lifecycle
from orchestrator.db import session_scope
from orchestrator.models import IdempotencyKey, Job
from orchestrator.robot_events import BATCH_COMPLETED, apply_event

ORDERS = [{"orderId": "A", "pedidoInput": {}}]


def make_job(url: str) -> str:
    with session_scope(url) as session:
        return lifecycle.create_job(session, ORDERS).id


def age(url: str, job_id: str, **columns: datetime) -> None:
    with session_scope(url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(**columns))


def test_reported_and_overdue_jobs_are_due_and_waiting_ones_are_not(
    database_url, make_settings
) -> None:
    settings = make_settings()
    reported, overdue, waiting, pending = (make_job(database_url) for _ in range(4))
    for job_id in (reported, overdue, waiting):
        with session_scope(database_url) as session:
            lifecycle.claim_dispatch(session, job_id, settings)
    with session_scope(database_url) as session:
        apply_event(session, reported, "msg-1", BATCH_COMPLETED, {})
    age(database_url, overdue, deadline=datetime.now(UTC) - timedelta(seconds=5))

    with session_scope(database_url) as session:
        due = housekeeping.jobs_to_settle(session)

    assert sorted(due) == sorted([reported, overdue])
    assert pending not in due and waiting not in due


def test_stalled_jobs_are_claimed_once_per_period(database_url, make_settings) -> None:
    fresh = make_job(database_url)
    stalled = make_job(database_url)
    dispatched = make_job(database_url)
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    age(database_url, stalled, created_at=long_ago)
    age(database_url, dispatched, created_at=long_ago)
    with session_scope(database_url) as session:
        lifecycle.claim_dispatch(session, dispatched, make_settings())

    with session_scope(database_url) as session:
        first = housekeeping.claim_stalled(session, after_seconds=120)
    with session_scope(database_url) as session:
        second = housekeeping.claim_stalled(session, after_seconds=120)

    assert first == [stalled]
    assert second == []  # kicked just now: not again until another period passed
    assert fresh not in first


def test_old_idempotency_keys_are_purged(database_url) -> None:
    job_id = make_job(database_url)
    with session_scope(database_url) as session:
        session.add_all(
            [
                IdempotencyKey(
                    token_digest="t",
                    key="old",
                    request_digest="d",
                    job_id=job_id,
                    created_at=datetime.now(UTC) - timedelta(hours=49),
                ),
                IdempotencyKey(
                    token_digest="t",
                    key="new",
                    request_digest="d",
                    job_id=job_id,
                    created_at=datetime.now(UTC) - timedelta(hours=23),
                ),
            ]
        )
    with session_scope(database_url) as session:
        assert housekeeping.purge_idempotency_keys(session) == 1


def test_a_parked_job_is_not_stalled_the_hand_off_starts_it(database_url, make_settings) -> None:
    settings = make_settings(robot_max_active_jobs=1)
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    active, parked = make_job(database_url), make_job(database_url)
    age(database_url, active, created_at=long_ago - timedelta(minutes=1))
    age(database_url, parked, created_at=long_ago)
    for job_id in (active, parked):
        with session_scope(database_url) as session:
            lifecycle.claim_dispatch(session, job_id, settings)

    with session_scope(database_url) as session:
        assert housekeeping.claim_stalled(session, after_seconds=120) == []
