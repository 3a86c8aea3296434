"""Dispatch control (CONTRACT §7, §11): each robot's pause, failures in a row, capacity, queue.

What every web and worker process on every host must agree on about a robot lives in its
row of ``dispatch_control`` (keyed by the robot's name, created for a configured robot the
first time it is needed). Every dispatch claim locks its own robot's row only (``SELECT …
FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE`` already serializes writers), so "count the
robot's active jobs, then claim" is one serialized step per robot and never lets K+1
through, while two robots' claims never wait for each other. The functions here read and
change those rows and count jobs; the caller commits. The claim itself is
``lifecycle.claim_dispatch``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.orm import Session

from .config import Settings
from .db import InsertOrSkip
from .models import OPEN_JOB_STATUSES, DispatchControl, Job, UTCDateTime, utcnow
from .robots import RobotSettings

log = logging.getLogger(__name__)

PAUSED_BY_API = "api"
PAUSED_BY_FAILURES = "failures"

_jobs = Job.__table__
_control = DispatchControl.__table__
_the_row = _control.c.robot == bindparam("the_robot")
_of_robot = _jobs.c.robot == bindparam("the_robot")

# A job waits from its submission until its dispatch is claimed (or it closes first); it is
# active from the claim until it is final. ``dispatched_at IS NULL`` is the queue index's
# predicate, written as the same literal so that both engines use the partial index.
WAITING = and_(_jobs.c.dispatched_at.is_(None), _jobs.c.status.in_(OPEN_JOB_STATUSES))
ACTIVE = and_(_jobs.c.dispatched_at.is_not(None), _jobs.c.status.in_(OPEN_JOB_STATUSES))
# Within one robot (the index leads with it); across robots for the dashboard's whole queue.
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
_COUNT_ACTIVE = select(func.count()).select_from(_jobs).where(_of_robot, ACTIVE)
_COUNT_WAITING = select(func.count()).select_from(_jobs).where(_of_robot, WAITING)
_COUNT_AHEAD = select(func.count()).select_from(_jobs).where(_of_robot, WAITING, _AHEAD)
# The claim only needs to know whether fewer than ``free`` jobs come first: never count more.
_FIRST_AHEAD = (
    select(_jobs.c.id)
    .where(_of_robot, WAITING, _AHEAD)
    .order_by(_jobs.c.robot, *QUEUE_ORDER)
    .limit(bindparam("free"))
)
_COUNT_FIRST_AHEAD = select(func.count()).select_from(_FIRST_AHEAD.subquery())
_READ = select(_control).where(_the_row)
_READ_ALL = select(_control)
_LOCK = _READ.with_for_update()
_SHARE = _READ.with_for_update(read=True)
_RESET_FAILURES = (
    update(_control).where(_the_row, _control.c.failures_in_a_row != 0).values(failures_in_a_row=0)
)
_CREATE = InsertOrSkip(_control, [_control.c.robot], _control.c.robot)


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
class RobotState(DispatchState):
    """One robot's state as GET /api/robots/<name> shows it (CONTRACT §3, §11)."""

    name: str = ""
    hours: str | None = None
    timezone: str = "UTC"
    open: bool = True
    next_open_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        """Return the dispatch state's shape with the robot's name and hours."""
        return {
            "name": self.name,
            **super().as_json(),
            "hours": self.hours,
            "timezone": self.timezone,
            "open": self.open,
            "nextOpenAt": self.next_open_at.isoformat() if self.next_open_at else None,
        }


def combine(states: Sequence[DispatchState]) -> DispatchState:
    """Combine every robot's state into GET /api/dispatch's (CONTRACT §3).

    ``paused`` when every robot is paused; reason, end and who: the value every paused robot
    shares, else None; counts summed; the limit summed, None when any robot has none; the
    most failures in a row.
    """
    paused = [state for state in states if state.paused]

    def shared(attr: str) -> Any:
        values = {getattr(state, attr) for state in paused}
        return values.pop() if len(values) == 1 else None

    limits = [state.max_active_jobs for state in states]
    return DispatchState(
        paused=bool(states) and len(paused) == len(states),
        paused_reason=shared("paused_reason"),
        paused_until=shared("paused_until"),
        paused_by=shared("paused_by"),
        max_active_jobs=None if any(v is None for v in limits) else sum(limits),  # type: ignore[arg-type]
        active_jobs=sum(state.active_jobs for state in states),
        queued_jobs=sum(state.queued_jobs for state in states),
        failures_in_a_row=max((state.failures_in_a_row for state in states), default=0),
    )


@dataclass(frozen=True)
class QueuedJob:
    """A waiting job and its 1-based place in its robot's dispatch order."""

    job_id: str
    priority: int
    created_at: datetime
    position: int
    item_count: int
    robot: str = "default"


def ensure_row(conn: Connection, robot: str) -> None:
    """Create the robot's control row if it has none yet (insert or skip)."""
    conn.execute(
        _CREATE(conn),
        {"robot": robot, "paused": False, "failures_in_a_row": 0, "updated_at": utcnow()},
    )


def lock(conn: Connection, robot: str = "default", *, shared: bool = False) -> Row[Any]:
    """Lock the robot's control row for this transaction and return it (created if missing).

    ``shared``: only against changes (claims without a limit need not wait for each other).
    """
    statement = _SHARE if shared else _LOCK
    row = conn.execute(statement, {"the_robot": robot}).one_or_none()
    if row is None:
        ensure_row(conn, robot)
        row = conn.execute(statement, {"the_robot": robot}).one()
    return row


def _read(conn: Connection, robot: str) -> Any:
    """Return the robot's control row, or a row-like default before it was ever written."""
    row = conn.execute(_READ, {"the_robot": robot}).one_or_none()
    return row if row is not None else _UNTOUCHED


@dataclass(frozen=True)
class _Untouched:
    paused: bool = False
    paused_reason: str | None = None
    paused_until: datetime | None = None
    paused_by: str | None = None
    failures_in_a_row: int = 0


_UNTOUCHED = _Untouched()


def active_jobs(conn: Connection, robot: str = "default") -> int:
    """Count the robot's jobs whose dispatch is claimed and that are not final."""
    return int(conn.scalar(_COUNT_ACTIVE, {"the_robot": robot}) or 0)


def free_slots(conn: Connection, robot: RobotSettings) -> int | None:
    """Return how many more of the robot's jobs may be active now; None without a limit."""
    limit = robot.max_active_jobs
    if limit is None:
        return None
    return max(limit - active_jobs(conn, robot.name), 0)


def within_first(conn: Connection, job: Any, free: int) -> bool:
    """Tell whether fewer than ``free`` waiting jobs of the job's robot come before it."""
    params = {
        "the_robot": job.robot,
        "the_priority": job.priority,
        "the_created_at": job.created_at,
        "the_id": job.id,
        "free": free,
    }
    return int(conn.scalar(_COUNT_FIRST_AHEAD, params) or 0) < free


def position_of(
    conn: Connection, job_id: str, priority: int, created_at: datetime, robot: str = "default"
) -> int:
    """Return a waiting job's 1-based place in its robot's order (one COUNT on the index)."""
    params = {
        "the_robot": robot,
        "the_priority": priority,
        "the_created_at": created_at,
        "the_id": job_id,
    }
    return int(conn.scalar(_COUNT_AHEAD, params) or 0) + 1


def is_paused(conn: Connection, robot: str = "default") -> bool:
    """Tell whether the robot's dispatching is paused (no lock: for a gauge or a page)."""
    return bool(_read(conn, robot).paused)


def paused_robots(conn: Connection) -> set[str]:
    """Return the names of the paused robots' rows (no lock: for gauges and pages)."""
    return {row.robot for row in conn.execute(_READ_ALL) if row.paused}


def read_state(
    session: Session, settings: Settings, robot: str | None = None
) -> DispatchState | RobotState:
    """Return one robot's state (RobotState), or with None every robot's combined (§3)."""
    if robot is None:
        return combine([read_state(session, settings, r) for r in settings.robot_names])
    conn = session.connection()
    return _state(conn, _read(conn, robot), settings.robot_or_fallback(robot))


def robot_states(session: Session, settings: Settings) -> list[RobotState]:
    """Return every configured robot's state, in the order of ROBOTS."""
    return [read_state(session, settings, name) for name in settings.robot_names]  # type: ignore[misc]


def _state(conn: Connection, row: Any, robot: RobotSettings) -> RobotState:
    now = utcnow()
    return RobotState(
        paused=bool(row.paused),
        paused_reason=row.paused_reason,
        paused_until=row.paused_until,
        paused_by=row.paused_by,
        max_active_jobs=robot.max_active_jobs,
        active_jobs=active_jobs(conn, robot.name),
        queued_jobs=int(conn.scalar(_COUNT_WAITING, {"the_robot": robot.name}) or 0),
        failures_in_a_row=int(row.failures_in_a_row),
        name=robot.name,
        hours=robot.hours.text if robot.hours is not None else None,
        timezone=robot.timezone,
        open=robot.is_open(now),
        next_open_at=robot.next_open(now),
    )


def pause(
    session: Session,
    settings: Settings,
    reason: str,
    until: datetime | None = None,
    by: str = PAUSED_BY_API,
    robot: str = "default",
) -> RobotState:
    """Pause the robot's dispatching (again: replace reason, end and who); the caller commits."""
    conn = session.connection()
    lock(conn, robot)
    conn.execute(
        update(_control)
        .where(_the_row)
        .values(
            paused=True, paused_reason=reason, paused_until=until, paused_by=by, updated_at=utcnow()
        ),
        {"the_robot": robot},
    )
    log.warning("dispatching to robot %s paused by %s: %s", robot, by, reason)
    return read_state(session, settings, robot)  # type: ignore[return-value]


def resume(session: Session, settings: Settings, robot: str = "default") -> RobotState:
    """Resume the robot's dispatching and count failures afresh; the caller commits."""
    conn = session.connection()
    was = lock(conn, robot)
    _clear(conn, robot)
    if was.paused:
        log.warning("dispatching to robot %s resumed", robot)
    return read_state(session, settings, robot)  # type: ignore[return-value]


def _clear(conn: Connection, robot: str) -> None:
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
        ),
        {"the_robot": robot},
    )


def resume_if_due(session: Session, robot: str = "default") -> bool:
    """Resume the robot's pause whose ``until`` has passed; True when it did. Caller commits."""
    conn = session.connection()
    row = _read(conn, robot)
    if not row.paused or row.paused_until is None or row.paused_until > utcnow():
        return False
    row = lock(conn, robot)  # look again under the lock: a new pause may have replaced the end
    if not row.paused or row.paused_until is None or row.paused_until > utcnow():
        return False
    _clear(conn, robot)
    log.warning(
        "dispatching to robot %s resumed: the pause ended at %s",
        robot,
        row.paused_until.isoformat(),
    )
    return True


def count_failure(
    session: Session, settings: Settings, reason: str, counts: bool, robot: str = "default"
) -> bool:
    """Record a failed dispatch to the robot; pause it after its PAUSE_AFTER_FAILURES in a row.

    ``counts`` is False for a 4xx answer: the robot refused that one job, it is not down.
    Returns True when this failure paused the robot's dispatching. The caller commits.
    """
    if not counts:
        return False
    conn = session.connection()
    row = lock(conn, robot)
    failures = int(row.failures_in_a_row) + 1
    threshold = settings.robot_or_fallback(robot).pause_after_failures
    pausing = bool(threshold) and failures >= threshold and not row.paused
    values: dict[str, Any] = {"failures_in_a_row": failures, "updated_at": utcnow()}
    if pausing:
        values.update(
            paused=True,
            paused_by=PAUSED_BY_FAILURES,
            paused_until=None,
            paused_reason=f"{failures} dispatches failed in a row; the last: {reason}",
        )
        log.warning("dispatching to robot %s paused by itself: %s", robot, values["paused_reason"])
    conn.execute(update(_control).where(_the_row).values(**values), {"the_robot": robot})
    return pausing


def reset_failures(conn: Connection, robot: str = "default") -> None:
    """An accepted dispatch: the robot's failures in a row start again from 0 (no write at 0)."""
    conn.execute(_RESET_FAILURES, {"the_robot": robot})


def queue(session: Session, robot: str | None = None, limit: int = 100) -> list[QueuedJob]:
    """Return the first ``limit`` waiting jobs in dispatch order, with their positions.

    With a robot, that robot's queue (positions as ``queuePosition``); without, every
    robot's waiting jobs in one order, each with its place in its own robot's queue.
    """
    columns = (_jobs.c.id, _jobs.c.priority, _jobs.c.created_at, _jobs.c.item_count)
    query = select(*columns, _jobs.c.robot).where(WAITING).limit(limit)
    if robot is not None:
        query = query.where(_jobs.c.robot == robot).order_by(_jobs.c.robot, *QUEUE_ORDER)
    else:
        query = query.order_by(*QUEUE_ORDER)
    places: dict[str, int] = {}
    shown = []
    for row in session.execute(query):
        places[row.robot] = places.get(row.robot, 0) + 1
        shown.append(
            QueuedJob(
                job_id=row.id,
                priority=row.priority,
                created_at=row.created_at,
                position=places[row.robot],
                item_count=row.item_count,
                robot=row.robot,
            )
        )
    return shown
