"""Apply one verified robot callback to a job (CONTRACT §5), exactly once."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

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
EVENT_TYPES = (ITEM_STARTED, ITEM_COMPLETED, BATCH_COMPLETED, BATCH_FAILED)


class Outcome(enum.StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # same webhook-id answered before
    LATE = "late"  # the job had already finished
    CONFLICT = "conflict"  # an item already has a different final result


@dataclass
class EventResult:
    outcome: Outcome
    message: str = ""
    report: str | None = None  # set when this event recorded the job's batch report
    ignored: list[str] = field(default_factory=list)


def _same_result(item: Item, result: dict[str, Any]) -> bool:
    if item.status != result["status"]:
        return False
    if result["status"] == ItemStatus.SUCCESS:
        return item.tracking_number == result.get("trackingNumber")
    return True


def _apply_item_result(session: Session, job_id: str, result: dict[str, Any]) -> str | None:
    """Apply one item result; return a conflict message when the item differs, else None."""
    values: dict[str, Any] = {"status": result["status"], "updated_at": utcnow()}
    if result["status"] == ItemStatus.SUCCESS:
        values.update(tracking_number=result["trackingNumber"], error=None)
    else:
        values.update(
            error=result.get("error") or "the robot reported an error", tracking_number=None
        )
    changed = session.execute(
        update(Item)
        .where(
            Item.id == result["itemId"],
            Item.job_id == job_id,
            Item.status.not_in(FINAL_ITEM_STATUSES),
        )
        .values(**values)
    ).rowcount
    if changed:
        return None
    item = session.get(Item, result["itemId"], populate_existing=True)
    assert item is not None  # the edge validated every itemId
    if _same_result(item, result):
        return None
    return (
        f"item {item.id} ({item.order_id}) is already {item.status}"
        f"{' with ' + item.tracking_number if item.tracking_number else ''}"
    )


def apply_event(
    session: Session, job_id: str, webhook_id: str, event_type: str, data: dict[str, Any]
) -> EventResult:
    """Record and apply an event; the caller commits (and rolls back on CONFLICT)."""
    seen = session.scalar(
        select(Event.id).where(Event.job_id == job_id, Event.webhook_id == webhook_id)
    )
    if seen is not None:
        return EventResult(Outcome.DUPLICATE)
    # A batch report changes items, then the job; finalize and cancel lock the job, then its
    # items. Lock the job first here too, or the two deadlock on PostgreSQL.
    batch = event_type in (BATCH_COMPLETED, BATCH_FAILED)
    job = session.get(Job, job_id, populate_existing=True, with_for_update=batch)
    assert job is not None
    late = job.status not in OPEN_JOB_STATUSES
    result = EventResult(Outcome.LATE if late else Outcome.APPLIED)

    if event_type == ITEM_STARTED:
        session.execute(
            update(Item)
            .where(
                Item.id == data["itemId"], Item.job_id == job_id, Item.status == ItemStatus.PENDING
            )
            .values(status=ItemStatus.PROCESSING, updated_at=utcnow())
        )
    elif event_type == ITEM_COMPLETED:
        conflict = _apply_item_result(session, job_id, data)
        if conflict:
            log.warning("job %s: conflicting item result refused: %s", job_id, conflict)
            return EventResult(Outcome.CONFLICT, conflict)
    else:
        for entry in data.get("items") or []:
            conflict = _apply_item_result(session, job_id, entry)
            if conflict:
                log.warning("job %s: batch report entry ignored: %s", job_id, conflict)
                result.ignored.append(conflict)
        if not late:
            result.report = _record_report(session, job, event_type, data)
            if result.report is None:
                result.outcome = (
                    Outcome.LATE if job.status not in OPEN_JOB_STATUSES else result.outcome
                )
    session.add(
        Event(
            job_id=job_id,
            webhook_id=webhook_id,
            type=event_type,
            payload=data,
            late=result.outcome == Outcome.LATE,
            received_at=utcnow(),
        )
    )
    try:
        session.flush()
    except IntegrityError:
        # The same webhook-id was committed concurrently: that delivery applied it.
        session.rollback()
        return EventResult(Outcome.DUPLICATE)
    return result


def _record_report(session: Session, job: Job, event_type: str, data: dict[str, Any]) -> str | None:
    """Record the batch report once; the first report of a job wins."""
    report = JobStatus.COMPLETED if event_type == BATCH_COMPLETED else JobStatus.FAILED
    recorded = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status.in_(OPEN_JOB_STATUSES), Job.report.is_(None))
        .values(report=report, report_error=data.get("error"), reported_at=utcnow())
    ).rowcount
    if recorded:
        return report.value
    session.refresh(job)
    if job.report and job.report != report:
        log.warning(
            "job %s: second batch report (%s) ignored; first was %s", job.id, report, job.report
        )
    return None
