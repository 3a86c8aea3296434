"""Find jobs a crash or a lost Redis left behind, from the database alone."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, func, or_, select, update
from sqlalchemy.orm import Session

from .db import session_scope
from .models import (
    FINAL_JOB_STATUSES,
    Event,
    IdempotencyKey,
    Item,
    Job,
    JobStatus,
    Notification,
    utcnow,
)

IDEMPOTENCY_KEY_LIFETIME = timedelta(hours=48)

# Retention: jobs per transaction, and batches per housekeeping run (the rest waits a run).
PRUNE_BATCH_SIZE = 500
PRUNE_BATCHES_PER_RUN = 40
# Every table that records something about a job, deleted with it (and counted). Their
# foreign keys cascade as well, so a table missing here cannot keep a deleted job alive.
# Not idempotency_keys: a key outlives its job (its job_id becomes NULL) and expires on its
# own (purge_idempotency_keys), so a client's retry cannot create the job again (§3).
JOB_ROWS: tuple[tuple[str, Any], ...] = (
    ("items", Item),
    ("events", Event),
    ("notifications", Notification),
)


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
    session: Session,
    cutoff: datetime,
    dispatch_timeout_seconds: float,
    limit: int = 500,
    *,
    robot: str | None = None,
    not_in: Sequence[str] = (),
) -> list[str]:
    """Return dispatched, unreported jobs from which no event arrived since ``cutoff``.

    Of one robot (``robot``), or of every robot not listed in ``not_in``. Not a job whose
    dispatch request may still be on its way (no answer recorded yet, and
    the request's timeout not yet over): the robot cannot have spoken before it got the job.
    """
    last_sign_of_life = func.coalesce(Job.last_event_at, Job.dispatched_at)
    request_over = cutoff - timedelta(seconds=dispatch_timeout_seconds)
    whose = Job.robot == robot if robot is not None else Job.robot.not_in(not_in)
    rows = session.scalars(
        select(Job.id)
        .where(
            whose,
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


def _due(cutoff: Any) -> Select[tuple[str]]:
    """Final jobs that finished before ``cutoff``; open jobs never match."""
    return select(Job.id).where(Job.status.in_(FINAL_JOB_STATUSES), Job.finished_at < cutoff)


def _delete_batch(session: Session, cutoff: Any, batch_size: int) -> tuple[int, dict[str, int]]:
    """Delete up to ``batch_size`` due jobs with their rows; return (jobs seen, rows per table)."""
    ids: Sequence[str] = session.scalars(
        _due(cutoff).order_by(Job.finished_at).limit(batch_size)
    ).all()
    removed: dict[str, int] = {}
    if not ids:
        return 0, removed
    for name, model in JOB_ROWS:
        removed[name] = session.execute(delete(model).where(model.job_id.in_(ids))).rowcount
    removed["jobs"] = session.execute(
        delete(Job).where(Job.id.in_(ids), Job.id.in_(_due(cutoff)))
    ).rowcount
    return len(ids), removed


def prune_finished(
    database_url: str,
    older_than_days: float,
    *,
    dry_run: bool = False,
    batch_size: int = PRUNE_BATCH_SIZE,
    max_batches: int | None = None,
) -> dict[str, int]:
    """Delete jobs final for longer than ``older_than_days`` with everything about them.

    Each batch of at most ``batch_size`` jobs is its own transaction; with ``max_batches``
    the rest waits for the next call. Returns the rows removed per table (``jobs`` and each
    of JOB_ROWS) and ``batches``; with ``dry_run`` the rows that would be, removing nothing.
    """
    cutoff = utcnow() - timedelta(days=older_than_days)
    totals = {"jobs": 0, **{name: 0 for name, _ in JOB_ROWS}}
    if dry_run:
        with session_scope(database_url) as session:
            due = _due(cutoff)
            totals["jobs"] = session.scalar(select(func.count()).select_from(due.subquery()))
            for name, model in JOB_ROWS:
                totals[name] = session.scalar(
                    select(func.count()).select_from(model).where(model.job_id.in_(due))
                )
        totals["batches"] = 0
        return totals
    batches = 0
    while max_batches is None or batches < max_batches:
        with session_scope(database_url) as session:
            seen, removed = _delete_batch(session, cutoff, batch_size)
        if not seen:
            break
        batches += 1
        for name, count in removed.items():
            totals[name] += count
        if seen < batch_size:
            break
    totals["batches"] = batches
    return totals
