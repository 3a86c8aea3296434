"""Dispatch control (CONTRACT §7): the shared pause, failures in a row, capacity and the queue.

What every web and worker process on every host must agree on lives in one database row,
``dispatch_control`` id 1. Every dispatch claim locks it (``SELECT … FOR UPDATE``; SQLite's
``BEGIN IMMEDIATE`` already serializes writers), so "count the active jobs, then claim" is
one serialized step and never lets K+1 through. The functions here read and change that row
and count jobs; the caller commits. The claim itself is ``lifecycle.claim_dispatch``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.orm import Session

from .config import Settings
from .models import OPEN_JOB_STATUSES, DispatchControl, Job, UTCDateTime, utcnow

log = logging.getLogger(__name__)

PAUSED_BY_API = "api"
PAUSED_BY_FAILURES = "failures"

_jobs = Job.__table__
_control = DispatchControl.__table__
_the_row = _control.c.id == 1

# A job waits from its submission until its dispatch is claimed (or it closes first); it is
# active from the claim until it is final. ``dispatched_at IS NULL`` is the queue index's
# predicate, written as the same literal so that both engines use the partial index.
WAITING = and_(_jobs.c.dispatched_at.is_(None), _jobs.c.status.in_(OPEN_JOB_STATUSES))
ACTIVE = and_(_jobs.c.dispatched_at.is_not(None), _jobs.c.status.in_(OPEN_JOB_STATUSES))
QUEUE_ORDER = (_jobs.c.priority.desc(), _jobs.c.created_at, _jobs.c.id)


def _ahead_of(priority: Any, created_at: Any, job_id: Any) -> Any:
    """Jobs that come before (priority, created_at, id) in the dispatch order."""
    return or_(
        _jobs.c.priority > priority,
        and_(
            _jobs.c.priority == priority,
            or_(
                _jobs.c.created_at < created_at,
                and_(_jobs.c.created_at == created_at, _jobs.c.id < job_id),
            ),
        ),
    )


_AHEAD = _ahead_of(
    bindparam("the_priority"), bindparam("the_created_at", type_=UTCDateTime), bindparam("the_id")
)
_COUNT_ACTIVE = select(func.count()).select_from(_jobs).where(ACTIVE)
_COUNT_WAITING = select(func.count()).select_from(_jobs).where(WAITING)
_COUNT_AHEAD = select(func.count()).select_from(_jobs).where(WAITING, _AHEAD)
# The claim only needs to know whether fewer than ``free`` jobs come first: never count more.
_FIRST_AHEAD = (
    select(_jobs.c.id).where(WAITING, _AHEAD).order_by(*QUEUE_ORDER).limit(bindparam("free"))
)
_COUNT_FIRST_AHEAD = select(func.count()).select_from(_FIRST_AHEAD.subquery())
_READ = select(_control).where(_the_row)
_LOCK = _READ.with_for_update()
_SHARE = _READ.with_for_update(read=True)
_RESET_FAILURES = (
    update(_control).where(_the_row, _control.c.failures_in_a_row != 0).values(failures_in_a_row=0)
)


@dataclass(frozen=True)
class DispatchState:
    """The dispatch control as GET /api/dispatch shows it (CONTRACT §3)."""

    paused: bool
    paused_reason: str | None
    paused_until: datetime | None
    paused_by: str | None
    max_active_jobs: int | None
    active_jobs: int
    queued_jobs: int
    failures_in_a_row: int

    def as_json(self) -> dict[str, Any]:
        """Return the contract's camelCase shape."""
        return {
            "paused": self.paused,
            "pausedReason": self.paused_reason,
            "pausedUntil": self.paused_until.isoformat() if self.paused_until else None,
            "pausedBy": self.paused_by,
            "maxActiveJobs": self.max_active_jobs,
            "activeJobs": self.active_jobs,
            "queuedJobs": self.queued_jobs,
            "failuresInARow": self.failures_in_a_row,
        }


@dataclass(frozen=True)
class QueuedJob:
    """A waiting job and its 1-based place in the dispatch order."""

    job_id: str
    priority: int
    created_at: datetime
    position: int
    item_count: int


def lock(conn: Connection, *, shared: bool = False) -> Row[Any]:
    """Lock the control row for this transaction and return it (shared: only against changes)."""
    row = conn.execute(_SHARE if shared else _LOCK).one_or_none()
    if row is None:  # the migration inserts it; a database without it is not migrated
        raise RuntimeError("dispatch_control has no row 1: run the migrations")
    return row


def active_jobs(conn: Connection) -> int:
    """Count the jobs whose dispatch is claimed and that are not final."""
    return int(conn.scalar(_COUNT_ACTIVE) or 0)


def free_slots(conn: Connection, settings: Settings) -> int | None:
    """Return how many more jobs may be active now; None without a limit."""
    limit = settings.robot_max_active_jobs
    if limit is None:
        return None
    return max(limit - active_jobs(conn), 0)


def within_first(conn: Connection, job: Any, free: int) -> bool:
    """Tell whether fewer than ``free`` waiting jobs come before this one."""
    params = {
        "the_priority": job.priority,
        "the_created_at": job.created_at,
        "the_id": job.id,
        "free": free,
    }
    return int(conn.scalar(_COUNT_FIRST_AHEAD, params) or 0) < free


def position_of(conn: Connection, job_id: str, priority: int, created_at: datetime) -> int:
    """Return a waiting job's 1-based place in the dispatch order (one COUNT on the index)."""
    params = {"the_priority": priority, "the_created_at": created_at, "the_id": job_id}
    return int(conn.scalar(_COUNT_AHEAD, params) or 0) + 1


def is_paused(conn: Connection) -> bool:
    """Tell whether dispatching is paused (no lock: for a gauge or a page)."""
    return bool(conn.execute(_READ).one().paused)


def read_state(session: Session, settings: Settings) -> DispatchState:
    """Return the dispatch state: the control row and the active and waiting counts."""
    conn = session.connection()
    row = conn.execute(_READ).one()
    return _state(conn, row, settings)


def _state(conn: Connection, row: Any, settings: Settings) -> DispatchState:
    return DispatchState(
        paused=bool(row.paused),
        paused_reason=row.paused_reason,
        paused_until=row.paused_until,
        paused_by=row.paused_by,
        max_active_jobs=settings.robot_max_active_jobs,
        active_jobs=active_jobs(conn),
        queued_jobs=int(conn.scalar(_COUNT_WAITING) or 0),
        failures_in_a_row=int(row.failures_in_a_row),
    )


def pause(
    session: Session,
    settings: Settings,
    reason: str,
    until: datetime | None = None,
    by: str = PAUSED_BY_API,
) -> DispatchState:
    """Pause dispatching (again: replace reason, end and who); the caller commits."""
    conn = session.connection()
    lock(conn)
    conn.execute(
        update(_control)
        .where(_the_row)
        .values(
            paused=True, paused_reason=reason, paused_until=until, paused_by=by, updated_at=utcnow()
        )
    )
    log.warning("dispatching paused by %s: %s", by, reason)
    return read_state(session, settings)


def resume(session: Session, settings: Settings) -> DispatchState:
    """Resume dispatching and start counting failures afresh; the caller commits."""
    conn = session.connection()
    was = lock(conn)
    _clear(conn)
    if was.paused:
        log.warning("dispatching resumed")
    return read_state(session, settings)


def _clear(conn: Connection) -> None:
    conn.execute(
        update(_control)
        .where(_the_row)
        .values(
            paused=False,
            paused_reason=None,
            paused_until=None,
            paused_by=None,
            failures_in_a_row=0,
            updated_at=utcnow(),
        )
    )


def resume_if_due(session: Session) -> bool:
    """Resume a pause whose ``until`` has passed; True when it did. The caller commits."""
    conn = session.connection()
    row = conn.execute(_READ).one()
    if not row.paused or row.paused_until is None or row.paused_until > utcnow():
        return False
    row = lock(conn)  # look again under the lock: a new pause may have replaced the end
    if not row.paused or row.paused_until is None or row.paused_until > utcnow():
        return False
    _clear(conn)
    log.warning("dispatching resumed: the pause ended at %s", row.paused_until.isoformat())
    return True


def count_failure(session: Session, settings: Settings, reason: str, counts: bool) -> bool:
    """Record a failed dispatch; pause after ROBOT_PAUSE_AFTER_FAILURES in a row.

    ``counts`` is False for a 4xx answer: the robot refused that one job, it is not down.
    Returns True when this failure paused dispatching. The caller commits.
    """
    if not counts:
        return False
    conn = session.connection()
    row = lock(conn)
    failures = int(row.failures_in_a_row) + 1
    threshold = settings.robot_pause_after_failures
    pausing = bool(threshold) and failures >= threshold and not row.paused
    values: dict[str, Any] = {"failures_in_a_row": failures, "updated_at": utcnow()}
    if pausing:
        values.update(
            paused=True,
            paused_by=PAUSED_BY_FAILURES,
            paused_until=None,
            paused_reason=f"{failures} dispatches failed in a row; the last: {reason}",
        )
        log.warning("dispatching paused by itself: %s", values["paused_reason"])
    conn.execute(update(_control).where(_the_row).values(**values))
    return pausing


def reset_failures(conn: Connection) -> None:
    """An accepted dispatch: the failures in a row start again from 0 (no write when 0)."""
    conn.execute(_RESET_FAILURES)


def queue(session: Session, limit: int = 100) -> list[QueuedJob]:
    """Return the first ``limit`` waiting jobs in dispatch order, with their positions."""
    rows = session.execute(
        select(_jobs.c.id, _jobs.c.priority, _jobs.c.created_at, _jobs.c.item_count)
        .where(WAITING)
        .order_by(*QUEUE_ORDER)
        .limit(limit)
    )
    return [
        QueuedJob(
            job_id=row.id,
            priority=row.priority,
            created_at=row.created_at,
            position=index,
            item_count=row.item_count,
        )
        for index, row in enumerate(rows, start=1)
    ]
