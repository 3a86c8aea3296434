"""A job's timeline, derived from its own timestamps and the robot's stored callbacks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator.models import AuditEntry, Event, Job, JobStatus

_DISPATCH = {
    "accepted": ("dispatched", "the robot accepted the batch", "ok"),
    "refused": (
        "dispatch refused",
        "the robot refused or never received the batch: its orders are safe to submit again",
        "error",
    ),
    "ambiguous": (
        "dispatch outcome unknown",
        "the robot may have received the batch: check the portal before submitting again",
        "warn",
    ),
    None: ("dispatching", "the batch is being sent to the robot", "info"),
}


@dataclass(frozen=True)
class Step:
    """One line of the timeline."""

    at: datetime
    title: str
    detail: str = ""
    tone: str = "info"  # info | ok | warn | error
    late: bool = False


def job_timeline(
    job: Job,
    events: Iterable[Event],
    order_ids: Mapping[str, str],
    now: datetime,
    entries: Iterable[AuditEntry] = (),
) -> list[Step]:
    """Return the job's steps in time order: created, marked, dispatched, each callback, end.

    ``entries`` are the audit entries about the job (CONTRACT §12): who submitted it,
    cancelled it, or resubmitted its items, each a step of its own.
    """
    by = f" by {job.created_by}" if job.created_by else ""
    steps = [Step(job.created_at, "created", f"{job.item_count} orders received{by}")]
    # Its submitter is the created step's; cancels and resubmits are steps of their own.
    steps.extend(
        _audit_step(entry)
        for entry in entries
        if entry.outcome == "ok" and entry.action != "job.submitted"
    )
    if job.marked_at is not None:
        steps.append(Step(job.marked_at, "processing", "a worker took the job"))
    if job.dispatched_at is not None:
        title, detail, tone = _DISPATCH.get(job.dispatch_result, _DISPATCH[None])
        steps.append(Step(job.dispatched_at, title, detail, tone))
        if job.deadline is not None and job.dispatch_result != "refused":
            steps.append(
                Step(
                    job.dispatched_at,
                    "waiting for the robot",
                    f"its report is due by the deadline, {job.deadline:%H:%M:%S} UTC",
                )
            )
    batch_seen = False
    for event in events:
        batch_seen |= event.type.startswith("robot.batch.")
        steps.append(_event_step(event, order_ids))
    if job.reported_at is not None and not batch_seen:
        steps.append(Step(job.reported_at, f"batch {job.report} reported", job.report_error or ""))
    if job.finished_at is not None:
        steps.append(_end_step(job))
    elif job.deadline is not None and job.deadline <= now:
        steps.append(
            Step(job.deadline, "deadline passed", "housekeeping settles the job shortly", "warn")
        )
    # Stable: steps with the same time keep the order they were added in.
    return sorted(steps, key=lambda step: step.at)


def _audit_step(entry: AuditEntry) -> Step:
    who = f"{entry.actor} ({entry.role})"
    if entry.action == "job.cancelled":
        return Step(entry.at, "cancel asked", f"by {who}", "warn")
    if entry.action == "job.resubmitted":
        new_job = str((entry.details or {}).get("jobId", ""))[:8]
        count = len((entry.details or {}).get("itemIds") or [])
        return Step(entry.at, "resubmitted", f"{count} items as job {new_job}, by {who}")
    return Step(entry.at, entry.action, f"by {who}")


def _event_step(event: Event, order_ids: Mapping[str, str]) -> Step:
    data: dict[str, Any] = event.payload or {}
    order = order_ids.get(str(data.get("itemId")), "")
    kind = event.type.removeprefix("robot.")
    if event.type == "robot.item.started":
        return Step(event.received_at, kind, f"{order} started", "info", event.late)
    if event.type == "robot.item.completed":
        if data.get("status") == "success":
            detail = f"{order}: success, tracking number {data.get('trackingNumber')}"
            return Step(event.received_at, kind, detail, "ok", event.late)
        detail = f"{order}: error, {data.get('error') or 'no reason given'}"
        return Step(event.received_at, kind, detail, "error", event.late)
    if event.type == "robot.batch.completed":
        reported = len(data.get("items") or [])
        detail = f"the robot finished the batch ({reported} item results included)"
        return Step(event.received_at, kind, detail, "ok", event.late)
    if event.type == "robot.batch.failed":
        detail = f"the robot gave up: {data.get('error') or 'no reason given'}"
        return Step(event.received_at, kind, detail, "error", event.late)
    return Step(event.received_at, kind, "", "info", event.late)


def _end_step(job: Job) -> Step:
    assert job.finished_at is not None
    if job.status == JobStatus.COMPLETED:
        return Step(job.finished_at, "completed", "the robot reported the batch finished", "ok")
    if job.status == JobStatus.CANCELLED:
        return Step(job.finished_at, "cancelled", job.error or "", "warn")
    return Step(job.finished_at, "failed", job.error or "no reason recorded", "error")
