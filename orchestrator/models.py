"""Database tables: jobs, their items, robot events, idempotency keys, notifications, the
dispatch control (one row per robot: pause, failures in a row) and the audit log."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ItemStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    SUCCESS = "success"
    ERROR = "error"
    UNKNOWN = "unknown"


OPEN_JOB_STATUSES = (JobStatus.PENDING, JobStatus.PROCESSING)
FINAL_JOB_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
UNREPORTED_ITEM_STATUSES = (ItemStatus.PENDING, ItemStatus.PROCESSING)
FINAL_ITEM_STATUSES = (ItemStatus.SUCCESS, ItemStatus.ERROR)


def utcnow() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Store UTC; always hand back aware datetimes, also on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.PENDING)
    error: Mapped[str | None] = mapped_column(Text)
    item_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    marked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # What the dispatch request itself returned: accepted | refused | ambiguous.
    dispatch_result: Mapped[str | None] = mapped_column(String(16))
    # The robot's batch report (completed | failed), recorded by the callback edge.
    report: Mapped[str | None] = mapped_column(String(16))
    report_error: Mapped[str | None] = mapped_column(Text)
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Last time housekeeping re-enqueued the chain of a job that never got dispatched.
    kicked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The job this one was resubmitted from (CONTRACT §3); NULL once retention deleted it.
    resubmit_of: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    # Dispatch order among waiting jobs (CONTRACT §7): higher first, then older first.
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Last valid robot event of any type: the silence timeout counts from it (or dispatch).
    last_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set when a dispatch claim found no free slot (or a pause) and the chain stopped: the
    # hand-off re-sends only such jobs, never a chain that is still on its way.
    parked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The robot that must process the job (CONTRACT §11); ``default`` with one robot.
    robot: Mapped[str] = mapped_column(String(40), default="default", server_default="default")
    # The W3C traceparent of the submit request's span (traces on): later work joins or links
    # to the job's trace from it (orchestrator.tracing). NULL with traces off.
    trace_parent: Mapped[str | None] = mapped_column(String(55))
    # Which master secret the job's dispatch was claimed under (signing.secret_fingerprint,
    # never the secret): its callbacks verify with that one only (CONTRACT §9). NULL for a
    # job not yet claimed, and for jobs claimed before the column existed.
    callback_key: Mapped[str | None] = mapped_column(String(16))
    # The name of the API token (or dashboard user) that submitted it (CONTRACT §12); NULL
    # for jobs submitted before names were recorded.
    created_by: Mapped[str | None] = mapped_column(String(64))

    items: Mapped[list[Item]] = relationship(back_populates="job", order_by="Item.position")

    __table_args__ = (
        Index("ix_jobs_created_at_id", "created_at", "id"),
        Index("ix_jobs_status_created_at", "status", "created_at"),
    )


# Each robot's dispatch order of waiting jobs, on the waiting jobs only: the claim's window
# and every queuePosition are one range scan of it within the robot (the predicate is a
# literal, no parameter, so both engines use the partial index for any query that repeats it).
_waiting = Job.dispatched_at.is_(None)
Index(
    "ix_jobs_robot_queue",
    Job.robot,
    Job.priority.desc(),
    Job.created_at,
    Job.id,
    Job.status,
    postgresql_where=_waiting,
    sqlite_where=_waiting,
)
# Each robot's active jobs (dispatched, open): the claim counts them under the robot's lock.
_dispatched = Job.dispatched_at.is_not(None)
Index(
    "ix_jobs_robot_active",
    Job.robot,
    Job.status,
    postgresql_where=_dispatched,
    sqlite_where=_dispatched,
)


class DispatchControl(Base):
    """One row per robot, which that robot's dispatch claims lock: pause, failures in a row."""

    __tablename__ = "dispatch_control"

    robot: Mapped[str] = mapped_column(String(40), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    paused_reason: Mapped[str | None] = mapped_column(Text)
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paused_by: Mapped[str | None] = mapped_column(String(16))
    failures_in_a_row: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Item(Base):
    __tablename__ = "items"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    order_id: Mapped[str] = mapped_column(String(100))
    pedido_input: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=ItemStatus.PENDING)
    tracking_number: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    job: Mapped[Job] = relationship(back_populates="items")

    __table_args__ = (UniqueConstraint("job_id", "order_id"),)


class Event(Base):
    """One robot callback answered 200, kept for de-duplication and the timeline."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    webhook_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("job_id", "webhook_id"),)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # sha256 of the API token: keys are scoped per token without storing the token.
    token_digest: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    request_digest: Mapped[str] = mapped_column(String(64))
    # NULL once retention deleted the job: the key outlives it (a repeat gets 409, §3).
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    __table_args__ = (UniqueConstraint("token_digest", "key"),)


class NotificationStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Notification(Base):
    """One notification to NOTIFY_URL (CONTRACT §8), written in the transaction it reports."""

    __tablename__ = "notifications"

    # Creation order, also across processes: a job's notifications go out by this.
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The webhook-id of every attempt, and the id the API shows.
    id: Mapped[str] = mapped_column(String(40), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    # The body's "data", as it was when the row was written.
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default=NotificationStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Retries go on until NOTIFY_GIVE_UP_SECONDS after this: the creation, or a redelivery.
    retry_since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Due time while pending (moved forward as a lease while an attempt runs); else null.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_notifications_status_next_attempt_at", "status", "next_attempt_at"),
    )


class AuditEntry(Base):
    """Who changed what, or was refused (CONTRACT §12); written in the change's transaction.

    No foreign keys: an entry outlives the job or notification it names (retention, §9).
    """

    __tablename__ = "audit_entries"

    # Newest first is by id: entries are paged by it, as notifications by ``seq``.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255))
    outcome: Mapped[str] = mapped_column(String(8))  # ok | denied
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    address: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_entries_actor_id", "actor", "id"),
        Index("ix_audit_entries_action_id", "action", "id"),
        Index("ix_audit_entries_target_id", "target", "id"),
        Index("ix_audit_entries_at", "at"),
    )
