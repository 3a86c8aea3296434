"""Apply one verified robot callback to a job (CONTRACT §5), exactly once.

The robot sends one or two item events per order and one batch report per job, so this is
the callback endpoint's whole database load. Every statement is built once, at import, with
bound parameters: building a SQLAlchemy statement per call costs more CPU than executing it
(bench/README.md, finding 3). The event row goes in first with ``INSERT … ON CONFLICT DO
NOTHING RETURNING``: no row back means the ``webhook-id`` was answered before (also when a
concurrent delivery of it committed first). The caller commits, or rolls back on CONFLICT
and on ``UnknownItem``.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from . import live, notifications
from .db import InsertOrSkip
from .models import (
    FINAL_ITEM_STATUSES,
    OPEN_JOB_STATUSES,
    Event,
    Item,
    ItemStatus,
    Job,
    JobStatus,
    utcnow,
)

log = logging.getLogger(__name__)

ITEM_STARTED = "robot.item.started"
ITEM_COMPLETED = "robot.item.completed"
BATCH_COMPLETED = "robot.batch.completed"
BATCH_FAILED = "robot.batch.failed"
HEARTBEAT = "robot.heartbeat"
EVENT_TYPES = (ITEM_STARTED, ITEM_COMPLETED, BATCH_COMPLETED, BATCH_FAILED, HEARTBEAT)
ITEM_EVENTS = (ITEM_STARTED, ITEM_COMPLETED)
BATCH_EVENTS = (BATCH_COMPLETED, BATCH_FAILED)


class Outcome(enum.StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # same webhook-id answered before
    LATE = "late"  # the job had already finished
    CONFLICT = "conflict"  # an item already has a different final result


class UnknownItem(LookupError):
    """The event names an item that is not one of the job's; nothing may be applied."""


@dataclass
class EventResult:
    outcome: Outcome
    message: str = ""
    report: str | None = None  # set when this event recorded the job's batch report
    ignored: list[str] = field(default_factory=list)


# Bound parameters are named the_*/new_*: SQLAlchemy reserves column names for VALUES/SET.
_jobs = Job.__table__
_items = Item.__table__
_events = Event.__table__
_this_job = _jobs.c.id == bindparam("the_job")
_this_item = (_items.c.id == bindparam("the_item")) & (_items.c.job_id == bindparam("the_job"))
_pending = _items.c.status == ItemStatus.PENDING

JOB_STATUS = select(_jobs.c.status).where(_this_job)
# The callback edge's one read of the job: whether it exists, its status, under which master
# secret its dispatch was claimed (signing.signs_for_job) and whether it was at all, and its
# trace to link to (tracing).
JOB_FOR_CALLBACK = select(
    _jobs.c.status, _jobs.c.dispatched_at, _jobs.c.callback_key, _jobs.c.trace_parent
).where(_this_job)
# A batch report changes items, then the job; finalize and cancel lock the job, then its
# items. Lock the job first here too, or the two deadlock on PostgreSQL. (SQLite has no
# FOR UPDATE; its BEGIN IMMEDIATE already holds the write lock.)
_LOCK_JOB = select(_jobs.c.status).where(_this_job).with_for_update()
_RECORD_EVENT = InsertOrSkip(_events, [_events.c.job_id, _events.c.webhook_id], _events.c.id)
# Every stored event proves the robot alive: the silence timeout counts from it (§7). Also
# the job's row lock, taken before any item's, the order finalize and cancel use.
_TOUCH_JOB = update(_jobs).where(_this_job).values(last_event_at=bindparam("now"))
_MARK_STARTED = (
    update(_items)
    .where(_this_item)
    .values(
        status=case((_pending, ItemStatus.PROCESSING.value), else_=_items.c.status),
        updated_at=case((_pending, bindparam("now")), else_=_items.c.updated_at),
    )
    .returning(_items.c.id)
)
_APPLY_RESULT = (
    update(_items)
    .where(_this_item, _items.c.status.not_in(FINAL_ITEM_STATUSES))
    .values(
        status=bindparam("new_status"),
        tracking_number=bindparam("new_tracking_number"),
        error=bindparam("new_error"),
        updated_at=bindparam("now"),
    )
    .returning(_items.c.id)
)
_READ_ITEM = select(
    _items.c.id, _items.c.order_id, _items.c.status, _items.c.tracking_number
).where(_this_item)
_RECORD_REPORT = (
    update(_jobs)
    .where(_this_job, _jobs.c.status.in_(OPEN_JOB_STATUSES), _jobs.c.report.is_(None))
    .values(
        report=bindparam("new_report"),
        report_error=bindparam("new_report_error"),
        reported_at=bindparam("now"),
    )
)
_READ_REPORT = select(_jobs.c.report).where(_this_job)


def apply_event(
    session: Session, job_id: str, webhook_id: str, event_type: str, data: dict[str, Any]
) -> EventResult:
    """Record and apply any event of an existing job; the caller commits."""
    if event_type in ITEM_EVENTS:
        status = session.connection().scalar(JOB_STATUS, {"the_job": job_id})
        return apply_item_event(session, job_id, status, webhook_id, event_type, data)
    if event_type == HEARTBEAT:
        return apply_heartbeat(session, job_id, webhook_id, data)
    return apply_batch_event(session, job_id, webhook_id, event_type, data)


def apply_heartbeat(
    session: Session, job_id: str, webhook_id: str, data: dict[str, Any]
) -> EventResult:
    """Record a heartbeat: stored and de-duplicated like any event, it changes nothing else."""
    conn = session.connection()
    now = utcnow()
    late = conn.scalar(JOB_STATUS, {"the_job": job_id}) not in OPEN_JOB_STATUSES
    if not _record(conn, job_id, webhook_id, HEARTBEAT, data, late, now):
        return EventResult(Outcome.DUPLICATE)
    return EventResult(Outcome.LATE if late else Outcome.APPLIED)


def apply_item_event(
    session: Session,
    job_id: str,
    job_status: str,
    webhook_id: str,
    event_type: str,
    data: dict[str, Any],
) -> EventResult:
    """Record and apply an item event: two statements, a third only on a repeat or conflict.

    One ``UPDATE … RETURNING`` both applies the result and proves the item is the job's;
    the item is read only when it matched nothing: an unknown item (``UnknownItem``), the
    same result again, or a conflict. ``job_status`` is the job's status as the caller read
    it in this transaction: an event for a closed job is recorded as late.
    """
    conn = session.connection()
    now = utcnow()
    late = job_status not in OPEN_JOB_STATUSES
    keys = {"the_job": job_id, "the_item": data["itemId"], "now": now}
    if late and notifications.enabled(session):
        # Late results of one job change it one transaction at a time (the job's row lock,
        # taken before any item's, as a batch report does): each job.updated snapshot
        # holds the results committed before it, and the snapshots are in creation order.
        conn.execute(_LOCK_JOB, {"the_job": job_id})
    if not _record(conn, job_id, webhook_id, event_type, data, late, now):
        _read_item(conn, keys)  # the contract answers 422 before "duplicate"
        return EventResult(Outcome.DUPLICATE)
    live.changed(session, job_id)  # a conflict rolls it back, and the announcement with it
    result = EventResult(Outcome.LATE if late else Outcome.APPLIED)
    if event_type == ITEM_STARTED:
        if conn.scalar(_MARK_STARTED, keys) is None:
            raise UnknownItem(data["itemId"])
        return result
    changed, conflict = _apply_result(conn, keys, data)
    if conflict:
        log.warning("job %s: conflicting item result refused: %s", job_id, conflict)
        return EventResult(Outcome.CONFLICT, conflict)
    if changed and notifications.enabled(session):
        if not late and conn.scalar(JOB_STATUS, {"the_job": job_id}) not in OPEN_JOB_STATUSES:
            # A finalize committed between the caller's read of the job's status and this
            # update, which waited for it (PostgreSQL): the result came late after all. (A
            # finalize not yet committed settles the items after this one commits, and its
            # job.finished then shows this result.)
            late = True
        if late:
            notifications.record_job(session, notifications.JOB_UPDATED, job_id)
    return result


def apply_batch_event(
    session: Session, job_id: str, webhook_id: str, event_type: str, data: dict[str, Any]
) -> EventResult:
    """Record a batch report with its item results; the first report of a job wins.

    An entry that conflicts with a final item result is ignored (and listed), the rest and
    the report still apply. For a closed job the event is late: its results still go to
    unreported or ``unknown`` items, the job's status stays.
    """
    conn = session.connection()
    now = utcnow()
    status = conn.scalar(_LOCK_JOB, {"the_job": job_id})
    late = status not in OPEN_JOB_STATUSES
    if not _record(conn, job_id, webhook_id, event_type, data, late, now):
        return EventResult(Outcome.DUPLICATE)
    live.changed(session, job_id)  # a conflict rolls it back, and the announcement with it
    result = EventResult(Outcome.LATE if late else Outcome.APPLIED)
    changed_any = False
    for entry in data.get("items") or []:
        keys = {"the_job": job_id, "the_item": entry["itemId"], "now": now}
        changed, conflict = _apply_result(conn, keys, entry)
        changed_any |= changed
        if conflict:
            log.warning("job %s: batch report entry ignored: %s", job_id, conflict)
            result.ignored.append(conflict)
    if not late:
        result.report = _record_report(conn, job_id, event_type, data, now)
    elif changed_any:
        notifications.record_job(session, notifications.JOB_UPDATED, job_id)
    return result


def _record(
    conn: Connection,
    job_id: str,
    webhook_id: str,
    event_type: str,
    data: dict[str, Any],
    late: bool,
    now: datetime,
) -> bool:
    """Insert the event row and note the job's last event; False when this job already has an
    event with this webhook-id (then nothing is written)."""
    row = {
        "job_id": job_id,
        "webhook_id": webhook_id,
        "type": event_type,
        "payload": data,
        "late": late,
        "received_at": now,
    }
    if conn.scalar(_RECORD_EVENT(conn), row) is None:
        return False
    conn.execute(_TOUCH_JOB, {"the_job": job_id, "now": now})
    return True


def _result_values(result: dict[str, Any]) -> dict[str, Any]:
    """Return the item columns an item result sets, as bound parameters."""
    if result["status"] == ItemStatus.SUCCESS:
        tracking, error = result["trackingNumber"], None
    else:
        tracking, error = None, result.get("error") or "the robot reported an error"
    return {"new_status": result["status"], "new_tracking_number": tracking, "new_error": error}


def _apply_result(
    conn: Connection, keys: dict[str, Any], result: dict[str, Any]
) -> tuple[bool, str | None]:
    """Apply one item result; return (whether the item changed, a conflict message or None)."""
    if conn.scalar(_APPLY_RESULT, {**keys, **_result_values(result)}) is not None:
        return True, None
    item = _read_item(conn, keys)
    if _same_result(item, result):
        return False, None
    return False, (
        f"item {item.id} ({item.order_id}) is already {item.status}"
        f"{' with ' + item.tracking_number if item.tracking_number else ''}"
    )


def _read_item(conn: Connection, keys: dict[str, Any]) -> Any:
    row = conn.execute(_READ_ITEM, keys).first()
    if row is None:
        raise UnknownItem(keys["the_item"])
    return row


def _same_result(item: Any, result: dict[str, Any]) -> bool:
    if item.status != result["status"]:
        return False
    if result["status"] == ItemStatus.SUCCESS:
        return item.tracking_number == result.get("trackingNumber")
    return True


def _record_report(
    conn: Connection, job_id: str, event_type: str, data: dict[str, Any], now: datetime
) -> str | None:
    """Record the batch report once; the first report of a job wins."""
    report = JobStatus.COMPLETED if event_type == BATCH_COMPLETED else JobStatus.FAILED
    params = {
        "the_job": job_id,
        "new_report": report.value,
        "new_report_error": data.get("error"),
        "now": now,
    }
    if conn.execute(_RECORD_REPORT, params).rowcount:
        return report.value
    first = conn.scalar(_READ_REPORT, {"the_job": job_id})
    if first and first != report:
        log.warning("job %s: second batch report (%s) ignored; first was %s", job_id, report, first)
    return None
