"""The audit log (CONTRACT §12): who changed what, or was refused, and from where.

``record`` adds the entry with the caller's session, so it commits with the change it
records or not at all: no change without its entry, no entry without its change. Entries
name jobs and notifications by id without a foreign key, so retention (§9) never deletes
them; ``prune`` is the operator's own choice (``orchestrator db prune-audit``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from .db import session_factory
from .models import AuditEntry, utcnow

OK = "ok"
DENIED = "denied"
# A refused read's action (CONTRACT §12).
READ = "read"


@dataclass(frozen=True)
class Actor:
    """Who asks: a token's or dashboard user's name, its role, the client's address."""

    name: str
    role: str
    address: str | None = None


# What the orchestrator does by itself: pauses after failures, resumes at ``until``.
SYSTEM = Actor("system", "system")

_INSERT = insert(AuditEntry)


def record(
    session: Session,
    actor: Actor,
    action: str,
    target: str,
    details: Mapping[str, Any] | None = None,
    *,
    outcome: str = OK,
) -> None:
    """Write one entry in the session's transaction; the caller commits it with its change.

    ``details`` say what was asked (a pause's reason, a resubmit's item ids), never a token
    or a secret: callers pass only values a person typed or the orchestrator made.
    """
    session.execute(
        _INSERT,
        {
            "at": utcnow(),
            "actor": actor.name,
            "role": actor.role,
            "action": action,
            "target": target[:255],
            "outcome": outcome,
            "details": dict(details or {}),
            "address": (actor.address or None) and actor.address[:64],
        },
    )


def page_of_entries(
    session: Session,
    limit: int,
    before: int | None = None,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
) -> tuple[list[AuditEntry], bool]:
    """Return up to ``limit`` entries newest first, older than id ``before``; exact filters."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit + 1)
    for column, value in (
        (AuditEntry.actor, actor),
        (AuditEntry.action, action),
        (AuditEntry.target, target),
    ):
        if value is not None:
            query = query.where(column == value)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    rows = list(session.scalars(query))
    return rows[:limit], len(rows) > limit


def entry_dict(entry: AuditEntry) -> dict[str, Any]:
    """Return the entry as ``GET /api/audit`` shows it."""
    return {
        "id": str(entry.id),
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "role": entry.role,
        "action": entry.action,
        "target": entry.target,
        "outcome": entry.outcome,
        "details": entry.details,
        "address": entry.address,
    }


def prune(database_url: str, days: float, *, dry_run: bool = False) -> int:
    """Delete entries older than ``days`` (count them with ``dry_run``); return how many."""
    cutoff = utcnow() - timedelta(days=days)
    with session_factory(database_url)() as session:
        old = AuditEntry.at < cutoff
        if dry_run:
            return int(session.scalar(select(func.count()).select_from(AuditEntry).where(old)))
        removed = session.execute(delete(AuditEntry).where(old)).rowcount
        session.commit()
        return int(removed)
