"""Signed notifications to the client's app from an outbox (CONTRACT §8).

A notification is a row written in the caller's transaction, the one that makes the change it
reports, so no crash loses it. After that transaction commits, the session's ``after_commit``
hook enqueues the ``deliver_notifications`` task for the row's job (warehouse's after-commit
pattern: a worker never looks for a row that is not there yet); housekeeping enqueues every
stream with a due row as the safety net.

Delivery holds no transaction across the HTTP call: claim the stream's next row in one short
transaction (its ``next_attempt_at`` moved forward as a lease, compare-and-set), POST it, record
the outcome in another. A *stream* is one job's notifications (or those about no job, such as
``dispatch.paused``): its rows go out in creation order, and a row waits while an earlier one
of its stream is pending. With ``NOTIFY_URL`` unset nothing is recorded at all.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import requests
from sqlalchemy import and_, bindparam, event, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from . import audit, queries, tracing
from .config import Settings
from .db import configure_sessions, session_scope
from .models import Notification, NotificationStatus, utcnow

log = logging.getLogger(__name__)

JOB_FINISHED = "job.finished"
JOB_UPDATED = "job.updated"
DISPATCH_PAUSED = "dispatch.paused"
DISPATCH_RESUMED = "dispatch.resumed"

SEND_TIMEOUT_SECONDS = 10.0  # CONTRACT §8: a 2xx answer within 10 s delivers it
MAX_GAP_SECONDS = 3600.0  # retries are at most 1 h apart
# While an attempt runs its row is not due: a second worker skips it; a crashed attempt's row
# is due again after this (housekeeping sends it).
LEASE_SECONDS = SEND_TIMEOUT_SECONDS + 20.0

_OUTBOX = "orchestrator.outbox"  # Session.info: this process's Outbox, when notifications are on
_RECORDED = "orchestrator.outbox.recorded"  # Session.info: streams written in this transaction

_notes = Notification.__table__


@dataclass(frozen=True)
class Outbox:
    """Notifications are on in this process; ``enqueue(job_id)`` sends a stream's delivery."""

    enqueue: Callable[[str | None], None]


def init_outbox(settings: Settings, enqueue: Callable[[str | None], None]) -> None:
    """Turn the outbox on for this process's sessions when NOTIFY_URL is set."""
    outbox = Outbox(enqueue) if settings.notify_url else None
    configure_sessions(settings.database_url, **{_OUTBOX: outbox})
    if outbox is not None and not event.contains(Session, "after_commit", _after_commit):
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_rollback", _after_rollback)


def enabled(session: Session) -> bool:
    """Return whether notifications are recorded in this session (NOTIFY_URL set)."""
    return session.info.get(_OUTBOX) is not None


def record(
    session: Session, type: str, data: dict[str, Any], job_id: str | None = None
) -> str | None:
    """Write a notification in the caller's transaction; return its id (its ``webhook-id``).

    None, and nothing written, when NOTIFY_URL is unset: notifications that are off are not
    kept for later. The caller commits; the delivery is enqueued after that commit.
    """
    if not enabled(session):
        return None
    now = utcnow()
    notification_id = f"msg_{uuid.uuid4().hex}"
    session.connection().execute(
        _INSERT,
        {
            "id": notification_id,
            "type": type,
            "job_id": job_id,
            "payload": data,
            "timestamp": now,
            "status": NotificationStatus.PENDING.value,
            "attempts": 0,
            "created_at": now,
            "retry_since": now,
            "next_attempt_at": now,
        },
    )
    _deliver_after_commit(session, job_id)
    return notification_id


_INSERT = insert(_notes)


def record_job(session: Session, type: str, job_id: str) -> str | None:
    """Write a notification whose data is the job with its items, as the job API shows it."""
    if not enabled(session):
        return None
    data = queries.job_view(session.connection(), job_id)
    assert data is not None, f"job {job_id} vanished inside its own transaction"
    return record(session, type, data, job_id)


def _deliver_after_commit(session: Session, job_id: str | None) -> None:
    session.info.setdefault(_RECORDED, set()).add(job_id)


def _after_commit(session: Session) -> None:
    streams = session.info.pop(_RECORDED, None)
    outbox: Outbox | None = session.info.get(_OUTBOX)
    if not streams or outbox is None:
        return
    for job_id in streams:
        try:
            outbox.enqueue(job_id)
        except Exception as exc:  # committed already: housekeeping sends it
            log.warning(
                "notification of job %s recorded; delivery not enqueued (%s), housekeeping "
                "sends it",
                job_id,
                type(exc).__name__,
            )


def _after_rollback(session: Session) -> None:
    session.info.pop(_RECORDED, None)


# --- retry arithmetic ---


def retry_delay(attempts: int, backoff_seconds: float) -> float:
    """Seconds from the failed attempt number ``attempts`` (1, 2, …) to the next one."""
    exponent = min(attempts - 1, 64)  # 2**64 × any backoff is past the cap already
    return min(backoff_seconds * 2.0**exponent, MAX_GAP_SECONDS)


def next_attempt(
    now: datetime, attempts: int, retry_since: datetime, settings: Settings
) -> datetime | None:
    """When to try again after failed attempt ``attempts``; None: give up (``failed``).

    The last try is at the give-up moment itself, so a notification is ``failed`` as soon as
    NOTIFY_GIVE_UP_SECONDS have passed, not up to an hour later.
    """
    give_up_at = retry_since + timedelta(seconds=settings.notify_give_up_seconds)
    if now >= give_up_at:
        return None
    return min(
        now + timedelta(seconds=retry_delay(attempts, settings.notify_backoff_seconds)), give_up_at
    )


# --- delivery ---


@dataclass(frozen=True)
class Claim:
    """One attempt at one notification: what to send, and the lease that guards its outcome."""

    seq: int
    id: str
    type: str
    timestamp: datetime
    payload: dict[str, Any]
    attempts: int
    retry_since: datetime
    lease: datetime


def _stream(job_id: str | None) -> Any:
    return _notes.c.job_id.is_(None) if job_id is None else _notes.c.job_id == job_id


_HEAD_COLUMNS = (
    _notes.c.seq,
    _notes.c.id,
    _notes.c.type,
    _notes.c.timestamp,
    _notes.c.payload,
    _notes.c.attempts,
    _notes.c.retry_since,
    _notes.c.next_attempt_at,
)
_pending = _notes.c.status == NotificationStatus.PENDING.value
_this_row = and_(
    _notes.c.seq == bindparam("the_seq"),
    _pending,
    _notes.c.next_attempt_at == bindparam("the_due"),
)
_LEASE = update(_notes).where(_this_row).values(next_attempt_at=bindparam("new_due"))
_DELIVERED = (
    update(_notes)
    .where(_this_row)
    .values(
        status=NotificationStatus.DELIVERED.value,
        attempts=_notes.c.attempts + 1,
        last_error=None,
        delivered_at=bindparam("now"),
        next_attempt_at=None,
    )
)
_FAILED_ATTEMPT = (
    update(_notes)
    .where(_this_row)
    .values(
        status=bindparam("new_status"),
        attempts=_notes.c.attempts + 1,
        last_error=bindparam("new_error"),
        next_attempt_at=bindparam("new_due"),
    )
)


def claim_next(session: Session, job_id: str | None) -> Claim | None:
    """Claim the stream's first pending notification if it is due; None otherwise.

    Only the first pending row of a stream is ever a candidate: a later one waits until it
    is delivered or failed (CONTRACT §8, "in order"). The claim moves its due time forward by
    the lease in a compare-and-set, so of two workers only one sends it.
    """
    conn = session.connection()
    head = conn.execute(
        select(*_HEAD_COLUMNS).where(_stream(job_id), _pending).order_by(_notes.c.seq).limit(1)
    ).first()
    now = utcnow()
    if head is None or head.next_attempt_at > now:
        return None
    lease = now + timedelta(seconds=LEASE_SECONDS)
    won = conn.execute(
        _LEASE, {"the_seq": head.seq, "the_due": head.next_attempt_at, "new_due": lease}
    ).rowcount
    if not won:
        return None
    return Claim(
        head.seq,
        head.id,
        head.type,
        head.timestamp,
        head.payload,
        head.attempts,
        head.retry_since,
        lease,
    )


def record_outcome(
    session: Session, claim: Claim, error: str | None, settings: Settings
) -> datetime | None:
    """Record one attempt's outcome; return when the next attempt is due (None: no retry)."""
    conn = session.connection()
    now = utcnow()
    guard = {"the_seq": claim.seq, "the_due": claim.lease}
    if error is None:
        conn.execute(_DELIVERED, {**guard, "now": now})
        return None
    due = next_attempt(now, claim.attempts + 1, claim.retry_since, settings)
    status = NotificationStatus.PENDING if due is not None else NotificationStatus.FAILED
    conn.execute(
        _FAILED_ATTEMPT,
        {**guard, "new_status": status.value, "new_error": error[:2000], "new_due": due},
    )
    return due


def body_of(claim: Claim) -> str:
    """The JSON body of a notification: the same bytes on every attempt."""
    return json.dumps(
        {"type": claim.type, "timestamp": claim.timestamp.isoformat(), "data": claim.payload},
        separators=(",", ":"),
        ensure_ascii=False,
    )


_http: dict[int, requests.Session] = {}


def _http_session() -> requests.Session:
    """One keep-alive HTTP session per process (never shared across a fork)."""
    pid = os.getpid()
    if pid not in _http:
        _http.clear()
        _http[pid] = requests.Session()
    return _http[pid]


def send(settings: Settings, claim: Claim) -> str | None:
    """POST one notification, signed; return None when a 2xx came within 10 s, else why not.

    The reason names no URL and no secret: it is stored and shown (``lastError``).
    """
    body = body_of(claim)
    now = utcnow()
    headers = {
        "Content-Type": "application/json",
        "webhook-id": claim.id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(settings.notify_secret).sign(claim.id, now, body),
    }
    try:
        answer = _http_session().post(
            settings.notify_url,
            data=body.encode(),
            headers=headers,
            timeout=SEND_TIMEOUT_SECONDS,
            allow_redirects=False,  # the URL comes from the configuration only
        )
    except requests.Timeout:
        return f"no answer within {SEND_TIMEOUT_SECONDS:g} s"
    except requests.ConnectionError:
        return "could not connect to NOTIFY_URL"
    except requests.RequestException as exc:
        return f"request failed ({type(exc).__name__})"
    answer.close()
    if answer.elapsed.total_seconds() > SEND_TIMEOUT_SECONDS:
        return f"answered after more than {SEND_TIMEOUT_SECONDS:g} s"
    if 200 <= answer.status_code < 300:
        return None
    if answer.is_redirect:
        return f"answered HTTP {answer.status_code}, a redirect (not followed)"
    return f"answered HTTP {answer.status_code}"


def deliver(settings: Settings, job_id: str | None) -> float | None:
    """Send a stream's due notifications in order; return seconds until its retry is due.

    None when there is nothing more to do here: everything due was sent, or the next row is
    not due yet (another attempt owns it, or its retry was scheduled by the attempt that
    failed). Each notification takes two short transactions; none is open during a send.
    """
    while True:
        with session_scope(settings.database_url) as session:
            claim = claim_next(session, job_id)
        if claim is None:
            return None
        with tracing.job_span("notification delivery", job_id, database_url=settings.database_url):
            error = send(settings, claim)
        with session_scope(settings.database_url) as session:
            due = record_outcome(session, claim, error, settings)
        if error is None:
            log.info("notification %s (%s) delivered", claim.id, claim.type)
            continue
        if due is None:
            log.warning("notification %s (%s) failed for good: %s", claim.id, claim.type, error)
            continue  # the stream's next notification is free to go
        log.warning("notification %s (%s) not delivered: %s; retrying", claim.id, claim.type, error)
        return max((due - utcnow()).total_seconds(), 0.0)


def due_streams(session: Session, limit: int = 500) -> list[str | None]:
    """Return the streams whose first pending notification is due (housekeeping's net)."""
    earlier = _notes.alias("earlier")
    blocked = (
        select(earlier.c.seq)
        .where(
            earlier.c.status == NotificationStatus.PENDING.value,
            earlier.c.seq < _notes.c.seq,
            earlier.c.job_id.is_not_distinct_from(_notes.c.job_id),
        )
        .exists()
    )
    rows = session.execute(
        select(_notes.c.job_id)
        .where(_pending, _notes.c.next_attempt_at <= utcnow(), ~blocked)
        .limit(limit)
    )
    return [row.job_id for row in rows]


# --- the API's reads and redelivery ---


class NotificationNotFound(LookupError):
    """No notification has this id."""


def redeliver(session: Session, notification_id: str, *, actor: audit.Actor) -> None:
    """Make a notification pending and due now, whatever its status; same ``webhook-id``.

    Its retries start over: NOTIFY_GIVE_UP_SECONDS counts from now. Delivery is enqueued
    after the caller's commit, which also commits its audit entry (by ``actor``).
    """
    if "\x00" in notification_id:
        raise NotificationNotFound(notification_id)
    now = utcnow()
    row = session.execute(
        update(_notes)
        .where(_notes.c.id == notification_id)
        .values(
            status=NotificationStatus.PENDING.value,
            next_attempt_at=now,
            retry_since=now,
            delivered_at=None,
        )
        .returning(_notes.c.job_id)
    ).first()
    if row is None:
        raise NotificationNotFound(notification_id)
    audit.record(session, actor, "notification.redelivered", notification_id)
    _deliver_after_commit(session, row.job_id)


def get_notification(session: Session, notification_id: str) -> Notification:
    """Return a notification by its id or raise NotificationNotFound."""
    row = session.scalar(select(Notification).where(Notification.id == notification_id))
    if row is None:
        raise NotificationNotFound(notification_id)
    return row


def notification_dict(row: Any) -> dict[str, Any]:
    """Return a notification as ``GET /api/notifications`` shows it."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": row.id,
        "type": row.type,
        "jobId": row.job_id,
        "status": row.status,
        "attempts": row.attempts,
        "lastError": row.last_error,
        "createdAt": iso(row.created_at),
        "deliveredAt": iso(row.delivered_at),
        "nextAttemptAt": iso(row.next_attempt_at),
    }


def page_of_notifications(
    session: Session,
    status: str | None,
    limit: int,
    before_seq: int | None,
    job_id: str | None = None,
) -> tuple[list[Any], bool]:
    """Return up to ``limit`` notifications newest first, older than ``before_seq``."""
    query = select(Notification).order_by(Notification.seq.desc()).limit(limit + 1)
    if status:
        query = query.where(Notification.status == status)
    if job_id is not None:
        query = query.where(Notification.job_id == job_id)
    if before_seq is not None:
        query = query.where(Notification.seq < before_seq)
    rows = list(session.scalars(query))
    return rows[:limit], len(rows) > limit


def status_counts(session: Session | Connection) -> dict[str, int]:
    """Return how many notifications are in each status, every status present."""
    counts = {status.value: 0 for status in NotificationStatus}
    for status, count in session.execute(
        select(Notification.status, func.count()).group_by(Notification.status)
    ):
        counts[status] = count
    return counts
