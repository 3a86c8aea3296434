"""Every job status transition, each a guarded compare-and-set (CONTRACT §1).

A transition is an ``UPDATE … WHERE status IN (allowed states)``: when another process got
there first the update matches no row and the transition is refused, never applied twice.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, func, select, true, update
from sqlalchemy.orm import Session

from . import audit, dispatch_control, live, metrics, notifications
from .config import Settings
from .models import (
    OPEN_JOB_STATUSES,
    UNREPORTED_ITEM_STATUSES,
    Item,
    ItemStatus,
    Job,
    JobStatus,
    UTCDateTime,
    utcnow,
)
from .robots import RobotSettings, variable_prefix
from .signing import secret_fingerprint

log = logging.getLogger(__name__)


class JobNotFound(LookupError):
    """No job has this id."""


class TransitionRefused(Exception):
    """The job's current state does not allow the transition."""

    def __init__(self, job_id: str, status: str, wanted: str) -> None:
        super().__init__(f"job {job_id} is {status}; cannot become {wanted}")
        self.status = status


def compute_deadline(
    dispatched_at: datetime, item_count: int, settings: Settings | RobotSettings
) -> datetime:
    """Return dispatch time + N * seconds per item + margin (the robot's, or the unprefixed)."""
    robot = settings if isinstance(settings, RobotSettings) else settings.unprefixed_robot("")
    seconds = item_count * robot.seconds_per_item + robot.deadline_margin_seconds
    return dispatched_at + timedelta(seconds=seconds)


def new_id() -> str:
    """Return a fresh job or item id."""
    return str(uuid.uuid4())


def create_job(
    session: Session,
    orders: Sequence[dict[str, Any]],
    priority: int = 0,
    *,
    resubmit_of: str | None = None,
    robot: str = "default",
    created_by: str | None = None,
) -> Job:
    """Add a pending job for ``robot`` with one pending item per order; the caller commits."""
    job = Job(
        id=new_id(),
        status=JobStatus.PENDING,
        item_count=len(orders),
        created_at=utcnow(),
        priority=priority,
        resubmit_of=resubmit_of,
        robot=robot,
        created_by=created_by,
    )
    # Set as the job's collection, so the new job can be shown without reading it back.
    job.items = [
        Item(
            id=new_id(),
            job_id=job.id,
            position=position,
            order_id=order["orderId"],
            pedido_input=order["pedidoInput"],
            status=ItemStatus.PENDING,
            updated_at=job.created_at,
        )
        for position, order in enumerate(orders)
    ]
    session.add(job)
    return job


def get_job(session: Session, job_id: str) -> Job:
    """Load a job with its items or raise JobNotFound."""
    if "\x00" in job_id:  # no job's id; PostgreSQL cannot even compare such a string (a 500)
        raise JobNotFound(job_id)
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise JobNotFound(job_id)
    return job


# The chain's statements, built once with bound parameters (named the_*/new_*: SQLAlchemy
# reserves column names for SET): building a statement per call costs more CPU than running
# it, and every job runs each of these (bench/README.md, finding 4).
_jobs = Job.__table__
_items = Item.__table__
_this_job = _jobs.c.id == bindparam("the_job")
_open = _jobs.c.status.in_(OPEN_JOB_STATUSES)
# A job stays pending until its dispatch is claimed: one waiting for a slot shows pending.
_MARK = (
    update(_jobs)
    .where(_this_job, _open, _jobs.c.dispatched_at.is_(None))
    .values(marked_at=func.coalesce(_jobs.c.marked_at, bindparam("now", type_=UTCDateTime)))
)
_OPEN_DEADLINE = select(_jobs.c.deadline).where(_this_job, _open)
_CLAIM_FACTS = select(
    _jobs.c.id, _jobs.c.item_count, _jobs.c.priority, _jobs.c.created_at, _jobs.c.robot
).where(_this_job)
_waiting = dispatch_control.WAITING
_PARK = update(_jobs).where(_this_job, _waiting).values(parked_at=bindparam("now"))
_CLAIM = (
    update(_jobs)
    .where(_this_job, _open, _jobs.c.dispatched_at.is_(None))
    .values(
        status=JobStatus.PROCESSING.value,
        dispatched_at=bindparam("now"),
        deadline=bindparam("new_deadline"),
        callback_key=bindparam("new_callback_key"),
    )
)
# Items change only after the dispatch, so at the claim every item is pending: one
# statement moves them to processing and reads what the robot needs.
_pending = _items.c.status == ItemStatus.PENDING
_START_ITEMS = (
    update(_items)
    .where(_items.c.job_id == bindparam("the_job"))
    .values(
        status=case((_pending, ItemStatus.PROCESSING.value), else_=_items.c.status),
        updated_at=bindparam("now"),
    )
    .returning(_items.c.position, _items.c.id, _items.c.order_id, _items.c.pedido_input)
)
_RECORD_RESULT = (
    update(_jobs)
    .where(_this_job, _jobs.c.dispatch_result.is_(None))
    .values(dispatch_result=bindparam("new_result"))
)
_FINALIZE_FACTS = select(
    _jobs.c.status,
    _jobs.c.report,
    _jobs.c.report_error,
    _jobs.c.reported_at,
    _jobs.c.dispatched_at,
    _jobs.c.deadline,
).where(_this_job)
_last_sign_of_life = func.coalesce(_jobs.c.last_event_at, _jobs.c.dispatched_at)
_CLOSE = {
    guard: update(_jobs)
    .where(_this_job, _open, condition)
    .values(
        status=bindparam("new_status"), error=bindparam("new_error"), finished_at=bindparam("now")
    )
    .returning(_jobs.c.robot)
    for guard, condition in (
        ("unreported", _jobs.c.report.is_(None)),
        ("reported", _jobs.c.report == bindparam("the_report")),
        ("any", true()),  # a cancel wins over a report not yet applied
        # Silence: only while no event arrived since the cutoff (one may land meanwhile).
        (
            "silent",
            _jobs.c.report.is_(None)
            & (_last_sign_of_life <= bindparam("the_cutoff", type_=UTCDateTime)),
        ),
    )
}
_DISPATCHED_AT = select(_jobs.c.dispatched_at).where(_this_job)
_ROBOT_OF = select(_jobs.c.robot).where(_this_job)

# Session.info entries a transaction leaves for the task that commits it (read after the
# commit, never before): robots whose queue moved (a job of theirs closed), and robots a
# claim found closed (their opening needs a hand-off armed).
_MOVED = "orchestrator.robots_moved"
_CLOSED = "orchestrator.robots_closed"


def robots_moved(session: Session) -> set[str]:
    """Return (and forget) the robots one of whose jobs this session closed."""
    return session.info.pop(_MOVED, set())


def robots_closed(session: Session) -> set[str]:
    """Return (and forget) the robots this session's claims found outside their hours."""
    return session.info.pop(_CLOSED, set())


_SETTLE_ITEMS = (
    update(_items)
    .where(_items.c.job_id == bindparam("the_job"), _items.c.status.in_(UNREPORTED_ITEM_STATUSES))
    .values(status=bindparam("new_status"), updated_at=bindparam("now"))
)


def mark_processing(session: Session, job_id: str) -> bool:
    """Note that a worker took the job; True while the job is still open and undispatched.

    One statement, and the status stays ``pending``: the job becomes ``processing`` at its
    dispatch claim, so one that waits for a free slot shows ``pending`` (CONTRACT §7). A job
    re-kicked by housekeeping keeps the time it was first marked.
    """
    marked = session.connection().execute(_MARK, {"the_job": job_id, "now": utcnow()})
    return bool(marked.rowcount)


def open_job_deadline(session: Session, job_id: str) -> datetime | None:
    """Return the deadline of a dispatched open job; None when closed or not dispatched."""
    return session.connection().scalar(_OPEN_DEADLINE, {"the_job": job_id})


@dataclass(frozen=True)
class DispatchTicket:
    """What the dispatch step needs once the claim is committed: plain values only."""

    job_id: str
    deadline: datetime
    items: list[dict[str, Any]]
    robot: str = "default"


def claim_dispatch(session: Session, job_id: str, settings: Settings) -> DispatchTicket | None:
    """Claim the one dispatch of a job; None when it must wait, was claimed before or closed.

    The claim must be committed before any byte goes to the robot: whoever loses the
    compare-and-set never sends, so a redelivered message or a second worker cannot
    dispatch again. Pause, capacity and order are checked in the same transaction, under
    the dispatch control row's lock (CONTRACT §7): a job may go only while dispatching is
    not paused, fewer than ROBOT_MAX_ACTIVE_JOBS are active, and it is among the first
    (free slots) waiting jobs in order. Otherwise it is parked, still ``pending``: its chain
    stops, and the hand-off (``next_waiting``) starts it again when a slot frees.
    """
    conn = session.connection()
    job = conn.execute(_CLAIM_FACTS, {"the_job": job_id}).first()
    if job is None:
        raise JobNotFound(job_id)
    robot = settings.robot(job.robot)
    if robot is None:
        _fail_unconfigured(session, job_id, job.robot)
        return None
    # Only this robot's row: two robots' claims never wait for each other. Without a limit
    # only the pause is read: claims need not wait for one another.
    control = dispatch_control.lock(conn, robot.name, shared=robot.max_active_jobs is None)
    now = utcnow()
    why_wait = _why_wait(conn, control, job, robot, now)
    if why_wait is not None:
        if not robot.is_open(now):
            session.info.setdefault(_CLOSED, set()).add(robot.name)
        if conn.execute(_PARK, {"the_job": job_id, "now": now}).rowcount:
            log.info("job %s waits: %s", job_id, why_wait)
        return None
    deadline = compute_deadline(now, job.item_count, robot)
    # The master secret the robot's callbacks will be verified with, recorded before any
    # byte goes out: a robot may report before it answers the dispatch request (§9).
    claim = {
        "the_job": job_id,
        "now": now,
        "new_deadline": deadline,
        "new_callback_key": secret_fingerprint(settings.robot_callback_secret),
    }
    if not conn.execute(_CLAIM, claim).rowcount:
        return None
    rows = sorted(conn.execute(_START_ITEMS, {"the_job": job_id, "now": now}).all())
    live.changed(session, job_id)
    items = [{"itemId": r.id, "orderId": r.order_id, "pedidoInput": r.pedido_input} for r in rows]
    return DispatchTicket(job_id=job_id, deadline=deadline, items=items, robot=robot.name)


def _why_wait(conn: Any, control: Any, job: Any, robot: RobotSettings, now: datetime) -> str | None:
    """Say why the job may not be dispatched now, or None when it may."""
    if control.paused:
        return f"dispatching to robot {robot.name} is paused"
    if not robot.is_open(now):
        opens = robot.next_open(now)
        return f"robot {robot.name} is closed ({robot.hours}); it opens at " + (
            opens.isoformat() if opens else "no time"
        )
    free = dispatch_control.free_slots(conn, robot)
    if free is None:
        return None
    if free <= 0:
        return f"robot {robot.name} has {robot.max_active_jobs} active jobs (the limit)"
    if not dispatch_control.within_first(conn, job, free):
        return "other waiting jobs come first"
    return None


def next_waiting(session: Session, settings: Settings, robot: str | None = None) -> list[str]:
    """Take the parked jobs that may start now; the caller commits, then starts their chains.

    The hand-off after every transition that frees a slot (and housekeeping's safety net),
    per robot (None: every configured robot, one after the other): the first (free slots)
    waiting jobs in the robot's order, all of them without a limit, none while it is paused
    or closed. Only parked jobs are returned (their chains stopped); a job whose chain is
    still on its way claims by itself. Under the robot's control row's lock, so a claim
    that is parking a job right now commits first and its job is seen here.
    """
    if robot is None:
        names = settings.robot_names
        return [job for name in names for job in next_waiting(session, settings, name)]
    config = settings.robot(robot)
    if config is None:
        return []
    conn = session.connection()
    control = dispatch_control.lock(conn, robot)
    if control.paused or not config.is_open(utcnow()):
        return []
    free = dispatch_control.free_slots(conn, config)
    if free == 0:
        return []
    window = (
        select(_jobs.c.id)
        .where(_jobs.c.robot == robot, _waiting)
        .order_by(_jobs.c.robot, *dispatch_control.QUEUE_ORDER)
    )
    # Without a limit every parked job may go; with one, only the first (free) in order.
    window = window.where(_jobs.c.parked_at.is_not(None)) if free is None else window.limit(free)
    job_ids = list(conn.scalars(window))
    if not job_ids:
        return []
    taken = set(
        conn.scalars(
            update(_jobs)
            .where(_jobs.c.id.in_(job_ids), _waiting, _jobs.c.parked_at.is_not(None))
            .values(parked_at=None, kicked_at=utcnow())
            .returning(_jobs.c.id)
        )
    )
    return [job_id for job_id in job_ids if job_id in taken]


def record_dispatch_result(session: Session, job_id: str, result: str) -> None:
    """Remember what the dispatch request returned (accepted, refused or ambiguous)."""
    session.connection().execute(_RECORD_RESULT, {"the_job": job_id, "new_result": result})


def record_dispatch_accepted(session: Session, job_id: str, robot: str | None = None) -> None:
    """Remember an accepted dispatch; the robot's failures in a row start again from 0."""
    conn = session.connection()
    if robot is None:
        robot = conn.scalar(_ROBOT_OF, {"the_job": job_id}) or "default"
    dispatch_control.reset_failures(conn, robot)
    record_dispatch_result(session, job_id, "accepted")


def pause_dispatch(
    session: Session,
    settings: Settings,
    reason: str,
    until: datetime | None = None,
    by: str = dispatch_control.PAUSED_BY_API,
    robot: str | None = None,
    *,
    actor: audit.Actor,
    target: str | None = None,
) -> dispatch_control.DispatchState:
    """Pause a robot's dispatching (None: every robot's); a new pause is notified per robot.

    Again: new reason and end. Returns the robot's state, or with None the combined state
    (CONTRACT §3). Every change of a pause passes here or through ``fail_dispatch`` and
    ``resume_if_due``, so ``dispatch.paused``/``dispatch.resumed`` (CONTRACT §8, one per
    robot, its state with its name) and the audit entry (§12, by ``actor``, for ``target``:
    the robot's name, or ``*`` for all) are written in its transaction. The caller commits.
    """
    names = settings.robot_names if robot is None else (robot,)
    was_paused = False
    state: dispatch_control.DispatchState | None = None
    for name in names:
        was = dispatch_control.lock(session.connection(), name)
        was_paused = was_paused or bool(was.paused)
        state = dispatch_control.pause(session, settings, reason, until, by, name)
        if not was.paused:  # a new reason or end for a pause is no new pause
            notifications.record(session, notifications.DISPATCH_PAUSED, state.as_json())
    details = {"reason": reason, "until": until.isoformat() if until else None}
    audit.record(
        session,
        actor,
        "dispatch.paused",
        target or robot or "*",
        {**details, "wasPaused": was_paused},
    )
    if robot is None or state is None:
        return dispatch_control.read_state(session, settings)
    return state


def resume_dispatch(
    session: Session,
    settings: Settings,
    robot: str | None = None,
    *,
    actor: audit.Actor,
    target: str | None = None,
) -> dispatch_control.DispatchState:
    """Resume a robot's dispatching (None: every robot's); notified per robot that was paused.

    Every resume asked for is audited, also of a robot that was not paused (``wasPaused``).
    The caller commits, then hands off.
    """
    names = settings.robot_names if robot is None else (robot,)
    was_paused = False
    state: dispatch_control.DispatchState | None = None
    for name in names:
        was = dispatch_control.lock(session.connection(), name)
        was_paused = was_paused or bool(was.paused)
        state = dispatch_control.resume(session, settings, name)
        if was.paused:
            notifications.record(session, notifications.DISPATCH_RESUMED, state.as_json())
    audit.record(
        session, actor, "dispatch.resumed", target or robot or "*", {"wasPaused": was_paused}
    )
    if robot is None or state is None:
        return dispatch_control.read_state(session, settings)
    return state


def resume_if_due(session: Session, settings: Settings) -> bool:
    """End every robot's pause whose ``until`` has passed, notified; True when one ended.

    The caller commits.
    """
    resumed = False
    for name in settings.robot_names:
        if dispatch_control.resume_if_due(session, name):
            _notify_dispatch(session, settings, notifications.DISPATCH_RESUMED, name)
            details = {"why": "until passed"}
            audit.record(
                session, audit.SYSTEM, "dispatch.resumed", _target(settings, name), details
            )
            resumed = True
    return resumed


def _target(settings: Settings, robot: str) -> str:
    """The audit target of the orchestrator's own pause or resume of a robot: ``*`` (every
    robot) when it is the only one."""
    return "*" if len(settings.robots) == 1 else robot


def _notify_dispatch(session: Session, settings: Settings, kind: str, robot: str) -> None:
    state = dispatch_control.read_state(session, settings, robot)
    notifications.record(session, kind, state.as_json())


def fail_dispatch(
    session: Session,
    settings: Settings,
    job_id: str,
    reason: str,
    robot_may_have_it: bool,
    status_code: int | None = None,
) -> str | None:
    """Record a failed dispatch, count it toward the pause, and fail the job (CONTRACT §4, §7).

    A 4xx answer is the robot refusing this one job: it fails the job but is not counted.
    The control row is locked before the job's row, as the claim does. The caller commits.
    """
    result = "ambiguous" if robot_may_have_it else "refused"
    refused_this_job = status_code is not None and 400 <= status_code < 500
    robot = session.connection().scalar(_ROBOT_OF, {"the_job": job_id}) or "default"
    if dispatch_control.count_failure(
        session, settings, reason, counts=not refused_this_job, robot=robot
    ):
        _notify_dispatch(session, settings, notifications.DISPATCH_PAUSED, robot)
        threshold = settings.robot_or_fallback(robot).pause_after_failures
        why = {"reason": reason, "failuresInARow": threshold}
        target = _target(settings, robot)
        audit.record(session, audit.SYSTEM, "dispatch.paused", target, {**why, "jobId": job_id})
    record_dispatch_result(session, job_id, result)
    failure = Failure(reason, robot_may_have_it=robot_may_have_it, kind=result)
    return finalize(session, job_id, failure)


@dataclass(frozen=True)
class Failure:
    """Why a job could not finish, and whether the robot can have received it."""

    reason: str
    robot_may_have_it: bool | None = None  # None: decided by whether dispatch began
    # The reason's class, for metrics.FAILURE_KINDS: refused | ambiguous | silence | unexpected.
    kind: str = "unexpected"
    # Silence: applies only if the job's last event (or dispatch) is not after this time.
    silent_since: datetime | None = None


def _close(
    session: Session,
    job_id: str,
    status: JobStatus,
    error: str | None,
    item_status: ItemStatus | None,
    report: str | None,
    guard: str | None = None,
    failure_kind: str | None = None,
    reported_at: datetime | None = None,
    silent_since: datetime | None = None,
) -> JobStatus | None:
    """Compare-and-set the job to a final state, settle its unreported items, record it.

    Every transition to a final state passes here: the ``job.finished`` notification is
    written in the same transaction (CONTRACT §8), and the close is counted (metrics) once
    that transaction commits: the failure's kind, and the time from the recorded report.
    ``item_status`` None: ``unknown`` if the dispatch began, else ``error`` (read under the
    job's row lock, which the update holds).
    """
    conn = session.connection()
    now = utcnow()
    params = {"the_job": job_id, "new_status": status.value, "new_error": error, "now": now}
    if guard is None:
        guard = "unreported"
        if report is not None:
            guard = "reported"
        elif silent_since is not None:
            guard = "silent"
    params.update(the_report=report, the_cutoff=silent_since)
    robot = conn.execute(_CLOSE[guard], params).scalar()
    if robot is None:
        return None
    session.info.setdefault(_MOVED, set()).add(robot)
    if item_status is None:
        began = conn.scalar(_DISPATCHED_AT, {"the_job": job_id}) is not None
        item_status = ItemStatus.UNKNOWN if began else ItemStatus.ERROR
    conn.execute(_SETTLE_ITEMS, {"the_job": job_id, "new_status": item_status.value, "now": now})
    live.changed(session, job_id)
    notifications.record_job(session, notifications.JOB_FINISHED, job_id)
    log.info("job %s %s%s", job_id, status.value, f": {error}" if error else "")
    latency = (now - reported_at).total_seconds() if reported_at is not None else None
    metrics.after_commit(session, metrics.count_closed, failure_kind, latency)
    return status


def finalize(session: Session, job_id: str, failure: Failure | None = None) -> str | None:
    """Settle an open job from what is known; return its new status, or None if unchanged.

    Precedence (CONTRACT §4): a recorded batch report wins over a dispatch failure and
    over the deadline; then the given failure; then the deadline. With none of these the
    job is still waiting and nothing changes.
    """
    if "\x00" in job_id:  # no job's id; PostgreSQL cannot even compare such a string
        raise JobNotFound(job_id)
    conn = session.connection()
    for _attempt in range(3):
        job = conn.execute(_FINALIZE_FACTS, {"the_job": job_id}).first()
        if job is None:
            raise JobNotFound(job_id)
        if job.status not in OPEN_JOB_STATUSES:
            return None
        if job.report == JobStatus.COMPLETED:
            done = _close(
                session,
                job_id,
                JobStatus.COMPLETED,
                None,
                ItemStatus.UNKNOWN,
                job.report,
                reported_at=job.reported_at,
            )
        elif job.report == JobStatus.FAILED:
            reason = f"the robot reported the batch failed: {job.report_error or 'no reason'}"
            done = _close(
                session,
                job_id,
                JobStatus.FAILED,
                reason,
                ItemStatus.UNKNOWN,
                job.report,
                failure_kind="robot_reported",
                reported_at=job.reported_at,
            )
        elif failure is not None:
            may_have_it = failure.robot_may_have_it
            if may_have_it is None:
                may_have_it = job.dispatched_at is not None
            item_status = ItemStatus.UNKNOWN if may_have_it else ItemStatus.ERROR
            done = _close(
                session,
                job_id,
                JobStatus.FAILED,
                failure.reason,
                item_status,
                None,
                failure_kind=failure.kind,
                silent_since=failure.silent_since,
            )
        elif job.deadline is not None and job.deadline <= utcnow():
            reason = (
                f"the robot did not report the batch before its deadline "
                f"({job.deadline.isoformat()}); check the portal before resubmitting"
            )
            done = _close(
                session,
                job_id,
                JobStatus.FAILED,
                reason,
                ItemStatus.UNKNOWN,
                None,
                failure_kind="deadline",
            )
        else:
            return None
        if done:
            return done.value
        # Lost a race (a report landed, or another process closed the job): look again.
    return None


def silence_failure(settings: Settings, robot: RobotSettings | None = None) -> Failure | None:
    """The failure of a dispatched job the robot has been silent about; None when off (§7).

    ``robot``: that robot's timeout (CONTRACT §11); else the unprefixed one.
    """
    seconds = (robot or settings.unprefixed_robot("")).silence_timeout_seconds
    if seconds is None:
        return None
    variable = "ROBOT_SILENCE_TIMEOUT_SECONDS"
    if robot is not None and settings.several_robots and settings.robot(robot.name):
        variable = f"{variable_prefix(robot.name)}SILENCE_TIMEOUT_SECONDS"
    return Failure(
        f"the robot sent nothing for {seconds:g} seconds ({variable}); "
        "check the portal before resubmitting",
        robot_may_have_it=True,
        kind="silence",
        silent_since=utcnow() - timedelta(seconds=seconds),
    )


def cancel(session: Session, job_id: str, *, actor: audit.Actor) -> Job:
    """Cancel an open job; unreported items become unknown if dispatch began, else error.

    Audited as ``job.cancelled`` by ``actor`` in the same transaction (CONTRACT §12).
    """
    get_job(session, job_id)
    # The dispatch time is read under the row lock the close holds: a dispatch claim either
    # committed before us (dispatched_at set) or will find the job closed.
    cancelled = _close(
        session, job_id, JobStatus.CANCELLED, "cancelled by a client", None, None, guard="any"
    )
    if not cancelled:
        raise TransitionRefused(job_id, get_job(session, job_id).status, "cancelled")
    audit.record(session, actor, "job.cancelled", job_id)
    return get_job(session, job_id)


def _fail_unconfigured(session: Session, job_id: str, robot: str) -> str | None:
    """Fail a waiting job whose robot is no longer configured (CONTRACT §11): items ``error``."""
    return finalize(
        session,
        job_id,
        Failure(
            f"robot {robot} is no longer configured (not in ROBOTS); "
            "the job was never dispatched: resubmit it to another robot",
            robot_may_have_it=None,  # decided under the row lock: never dispatched → error
            kind="refused",
        ),
    )


def fail_unconfigured(session: Session, settings: Settings, limit: int = 500) -> list[str]:
    """Fail the waiting jobs of robots no longer configured; return their ids (housekeeping).

    Their dispatched jobs are left alone: they settle as any other (CONTRACT §11).
    """
    rows = session.execute(
        select(_jobs.c.id, _jobs.c.robot)
        .where(_waiting, _jobs.c.robot.not_in(settings.robot_names))
        .limit(limit)
    ).all()
    return [row.id for row in rows if _fail_unconfigured(session, row.id, row.robot) is not None]
