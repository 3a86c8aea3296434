"""Read-side queries of the job API: the one job view, item counts and newest-first pages."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.orm import Session

from . import dispatch_control
from .models import OPEN_JOB_STATUSES, Item, ItemStatus, Job

# GET /api/jobs/<id> is what a client polls while it waits (and what the wake benchmark
# measures): two prebuilt statements, rows handed to the schemas as mappings, no ORM objects.
_jobs, _items = Job.__table__, Item.__table__
_JOB_SHOWN = select(
    _jobs.c.id,
    _jobs.c.status,
    _jobs.c.error,
    _jobs.c.created_at,
    _jobs.c.dispatched_at,
    _jobs.c.deadline,
    _jobs.c.finished_at,
    _jobs.c.priority,
    _jobs.c.resubmit_of,
    _jobs.c.robot,
    _jobs.c.created_by,
).where(_jobs.c.id == bindparam("the_job"))
_ITEMS_SHOWN = (
    select(
        _items.c.id, _items.c.order_id, _items.c.status, _items.c.tracking_number, _items.c.error
    )
    .where(_items.c.job_id == bindparam("the_job"))
    .order_by(_items.c.position)
)


def job_as_shown(conn: Connection, job_id: str) -> tuple[RowMapping, list[RowMapping]] | None:
    """Return the job's shown columns and its items in order; None when there is no such job."""
    if "\x00" in job_id:  # in no job's id; PostgreSQL cannot even compare it
        return None
    job = conn.execute(_JOB_SHOWN, {"the_job": job_id}).mappings().first()
    if job is None:
        return None
    return job, list(conn.execute(_ITEMS_SHOWN, {"the_job": job_id}).mappings())


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _field(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, RowMapping) else getattr(row, name)


def job_dict(
    job: Any,
    counts: dict[str, int],
    items: Sequence[Any] | None = None,
    *,
    queue_position: int | None = None,
) -> dict[str, Any]:
    """Return the job as ``GET /api/jobs/<id>`` shows it (ORM object or row mapping).

    The one shape of a job for the API, the library and the notifications' ``data``: a field
    added here appears in all of them. Without ``items`` it is the job list's summary.
    ``queue_position`` is a waiting job's place in the dispatch order (``queue_position``).
    """
    body: dict[str, Any] = {
        "id": _field(job, "id"),
        "status": _field(job, "status"),
        "error": _field(job, "error"),
        "createdAt": _iso(_field(job, "created_at")),
        "dispatchedAt": _iso(_field(job, "dispatched_at")),
        "deadline": _iso(_field(job, "deadline")),
        "finishedAt": _iso(_field(job, "finished_at")),
        "priority": _field(job, "priority"),
        "queuePosition": queue_position,
        "resubmitOf": _field(job, "resubmit_of"),
        "robot": _field(job, "robot"),
        "createdBy": _field(job, "created_by"),
        "counts": counts,
    }
    if items is not None:
        body["items"] = [
            {
                "id": _field(item, "id"),
                "orderId": _field(item, "order_id"),
                "status": _field(item, "status"),
                "trackingNumber": _field(item, "tracking_number"),
                "error": _field(item, "error"),
            }
            for item in items
        ]
    return body


def job_view(conn: Connection, job_id: str) -> dict[str, Any] | None:
    """Return the job with its items as ``GET /api/jobs/<id>`` shows it; None if unknown."""
    shown = job_as_shown(conn, job_id)
    if shown is None:
        return None
    job, items = shown
    return job_dict(job, counts_of(items), items, queue_position=queue_position(conn, job))


def queue_position(conn: Connection, job: Any) -> int | None:
    """Return a waiting job's 1-based place in the dispatch order; None once dispatched or final.

    ``job`` is a Job or a row with id, status, dispatched_at, priority, created_at and robot.
    """
    if _field(job, "status") not in OPEN_JOB_STATUSES or _field(job, "dispatched_at") is not None:
        return None
    return dispatch_control.position_of(
        conn,
        _field(job, "id"),
        _field(job, "priority"),
        _field(job, "created_at"),
        _field(job, "robot"),
    )


def item_counts(session: Session, job_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """Return per-job item counts by status, with every status present."""
    counts = {
        job_id: {"total": 0, **{status.value: 0 for status in ItemStatus}} for job_id in job_ids
    }
    if not job_ids:
        return counts
    rows = session.execute(
        select(Item.job_id, Item.status, func.count())
        .where(Item.job_id.in_(job_ids))
        .group_by(Item.job_id, Item.status)
    )
    for job_id, status, count in rows:
        counts[job_id][status] = count
        counts[job_id]["total"] += count
    return counts


def counts_of(items: Sequence[Any]) -> dict[str, int]:
    """Return the item counts of items already in memory, in item_counts' shape."""
    counts = {"total": len(items), **{status.value: 0 for status in ItemStatus}}
    for item in items:
        counts[item["status"] if isinstance(item, RowMapping) else item.status] += 1
    return counts


def job_items(session: Session, job_id: str) -> list[Item]:
    """Return a job's items in submission order."""
    return list(session.scalars(select(Item).where(Item.job_id == job_id).order_by(Item.position)))


def page_of_jobs(
    session: Session,
    status: str | None,
    limit: int,
    after: tuple[datetime, str] | None,
    robot: str | None = None,
) -> tuple[list[Job], bool]:
    """Return up to ``limit`` jobs newest first, after a (created_at, id) position."""
    query = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    if status:
        query = query.where(Job.status == status)
    if robot:
        query = query.where(Job.robot == robot)
    if after is not None:
        created, job_id = after
        query = query.where(
            or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id))
        )
    jobs = list(session.scalars(query))
    return jobs[:limit], len(jobs) > limit
