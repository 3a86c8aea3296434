"""Read-side queries of the job API: item counts and newest-first pages."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from .models import Item, ItemStatus, Job


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


def counts_of(items: Sequence[Item]) -> dict[str, int]:
    """Return the item counts of items already in memory, in item_counts' shape."""
    counts = {"total": len(items), **{status.value: 0 for status in ItemStatus}}
    for item in items:
        counts[item.status] += 1
    return counts


def job_items(session: Session, job_id: str) -> list[Item]:
    """Return a job's items in submission order."""
    return list(session.scalars(select(Item).where(Item.job_id == job_id).order_by(Item.position)))


def page_of_jobs(
    session: Session, status: str | None, limit: int, after: tuple[datetime, str] | None
) -> tuple[list[Job], bool]:
    """Return up to ``limit`` jobs newest first, after a (created_at, id) position."""
    query = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    if status:
        query = query.where(Job.status == status)
    if after is not None:
        created, job_id = after
        query = query.where(
            or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id))
        )
    jobs = list(session.scalars(query))
    return jobs[:limit], len(jobs) > limit
