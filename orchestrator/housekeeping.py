"""Find jobs a crash or a lost Redis left behind, from the database alone."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from .models import IdempotencyKey, Job, JobStatus, utcnow

IDEMPOTENCY_KEY_LIFETIME = timedelta(hours=48)


def jobs_to_settle(session: Session, limit: int = 500) -> list[str]:
    """Return processing jobs with a recorded batch report or a passed deadline."""
    now = utcnow()
    rows = session.scalars(
        select(Job.id)
        .where(
            Job.status == JobStatus.PROCESSING,
            or_(Job.report.is_not(None), Job.deadline <= now),
        )
        .order_by(Job.deadline)
        .limit(limit)
    )
    return list(rows)


def silent_jobs(
    session: Session, cutoff: datetime, dispatch_timeout_seconds: float, limit: int = 500
) -> list[str]:
    """Return dispatched, unreported jobs from which no event arrived since ``cutoff``.

    Not a job whose dispatch request may still be on its way (no answer recorded yet, and
    the request's timeout not yet over): the robot cannot have spoken before it got the job.
    """
    last_sign_of_life = func.coalesce(Job.last_event_at, Job.dispatched_at)
    request_over = cutoff - timedelta(seconds=dispatch_timeout_seconds)
    rows = session.scalars(
        select(Job.id)
        .where(
            Job.status == JobStatus.PROCESSING,
            Job.dispatched_at.is_not(None),
            Job.report.is_(None),
            last_sign_of_life <= cutoff,
            or_(Job.dispatch_result.is_not(None), Job.dispatched_at <= request_over),
        )
        .order_by(last_sign_of_life)
        .limit(limit)
    )
    return list(rows)


def claim_stalled(session: Session, after_seconds: float, limit: int = 200) -> list[str]:
    """Claim open jobs never dispatched for ``after_seconds``, for their chain to start again.

    Re-sending the chain is safe: the dispatch claim lets only one copy reach the robot.
    A parked job (waiting for a slot or the end of a pause) is not stalled: the hand-off
    starts it (``lifecycle.next_waiting``).
    """
    threshold = utcnow() - timedelta(seconds=after_seconds)
    last_touch = func.coalesce(Job.kicked_at, Job.created_at)
    candidates = session.scalars(
        select(Job.id)
        .where(
            Job.status.in_((JobStatus.PENDING, JobStatus.PROCESSING)),
            Job.dispatched_at.is_(None),
            Job.parked_at.is_(None),
            last_touch <= threshold,
        )
        .order_by(Job.created_at)
        .limit(limit)
    ).all()
    claimed = []
    for job_id in candidates:
        won = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.dispatched_at.is_(None), last_touch <= threshold)
            .values(kicked_at=utcnow())
        ).rowcount
        if won:
            claimed.append(job_id)
    return claimed


def purge_idempotency_keys(session: Session) -> int:
    """Delete idempotency keys older than their 48 h lifetime."""
    cutoff = utcnow() - IDEMPOTENCY_KEY_LIFETIME
    return session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff)
    ).rowcount
