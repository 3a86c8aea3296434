"""Submit a job exactly once per idempotency key, and start it only after it is committed.

A resubmit (CONTRACT §3) is a submit whose orders are chosen items of a finished job.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from . import audit, lifecycle, queries, tracing
from .config import Settings
from .db import session_factory
from .logs import job_context
from .models import FINAL_JOB_STATUSES, IdempotencyKey, Item, ItemStatus, Job
from .tasks import start_job

log = logging.getLogger(__name__)


class IdempotencyConflict(Exception):
    """The key was used before with a different body."""


class IdempotencyInProgress(Exception):
    """A request with this key is still being created."""


class IdempotencyJobDeleted(Exception):
    """The key's job was deleted (retention) while the key lives on: nothing is created."""


@dataclass(frozen=True)
class Submitted:
    job: Job
    created: bool  # False: an earlier request with the same key made this job


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def request_digest(body: Any) -> str:
    """Return a digest equal for JSON-equal bodies."""
    return _digest(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


def submit_job(
    settings: Settings,
    celery_app: Celery,
    orders: Sequence[dict[str, Any]],
    *,
    token: str = "",
    idempotency_key: str | None = None,
    body_digest: str | None = None,
    resubmit_of: str | None = None,
    resubmitted_items: Sequence[str] = (),
    priority: int = 0,
    robot: str | None = None,
    actor: audit.Actor,
) -> Submitted:
    """Create a job for validated orders and enqueue its chain after the commit.

    With an ``idempotency_key`` (scoped to ``token``) a repeat returns the first job and
    starts nothing, and leaves no audit entry (it changes nothing); the same key with a
    different body raises IdempotencyConflict. ``resubmit_of`` names the job the orders come
    from, ``resubmitted_items`` its items (resubmit_job). The job is created by ``actor``:
    its ``createdBy``, and its ``job.submitted`` (or ``job.resubmitted``) entry, committed
    with it (CONTRACT §12). ``robot`` is the job's robot
    (CONTRACT §11): None only with one robot configured, which it then gets; raises
    UnknownRobot for a name not configured (or None with several robots).
    """
    robot = choose_robot(settings, robot)
    digest = body_digest or request_digest(
        {
            "orders": list(orders),
            **({"priority": priority} if priority else {}),
            **({"robot": robot} if len(settings.robots) > 1 else {}),
        }
    )
    token_digest = _digest(token)
    session = session_factory(settings.database_url)()
    try:
        if idempotency_key is not None:
            earlier = _earlier(session, token_digest, idempotency_key, digest)
            if earlier is not None:
                return Submitted(earlier, created=False)
        job = lifecycle.create_job(
            session,
            orders,
            priority=priority,
            resubmit_of=resubmit_of,
            created_by=actor.name,
            robot=robot,
        )
        if resubmit_of is None:
            details = {"orders": len(orders), "priority": priority}
            audit.record(session, actor, "job.submitted", job.id, details)
        else:
            details = {"jobId": job.id, "itemIds": list(resubmitted_items), "priority": priority}
            audit.record(session, actor, "job.resubmitted", resubmit_of, details)
        # The submit request's span is the root of the job's trace (None with traces off).
        job.trace_parent = tracing.current_traceparent()
        if idempotency_key is not None:
            session.flush()  # the key row refers to the job row: insert the job first
            session.add(
                IdempotencyKey(
                    token_digest=token_digest,
                    key=idempotency_key,
                    request_digest=digest,
                    job_id=job.id,
                )
            )
        try:
            session.commit()
        except IntegrityError:
            # A concurrent request with the same key committed first.
            session.rollback()
            if idempotency_key is None:
                raise
            earlier = _earlier(session, token_digest, idempotency_key, digest)
            if earlier is None:
                raise IdempotencyInProgress(idempotency_key) from None
            return Submitted(earlier, created=False)
    finally:
        session.close()
    try:
        start_job(celery_app, job.id, settings)
    except Exception:
        # The job is committed: housekeeping starts it when the broker is back.
        with job_context(job.id):
            log.exception("job %s committed but its chain could not be enqueued", job.id)
    return Submitted(job, created=True)


class UnknownRobot(ValueError):
    """The job's robot is missing (with several robots) or not configured (CONTRACT §11)."""

    def __init__(self, message: str, robots: Sequence[str]) -> None:
        super().__init__(message)
        self.message = message
        self.robots = tuple(robots)


def choose_robot(settings: Settings, robot: str | None) -> str:
    """Return the job's robot: the one given if configured, else the only one; or refuse."""
    names = settings.robot_names
    if robot is None:
        if len(names) == 1:
            return names[0]
        raise UnknownRobot(f"robot is required: one of {', '.join(names)}", names)
    if settings.robot(robot) is None:
        raise UnknownRobot(f"unknown robot; one of {', '.join(names)}", names)
    return robot


def _earlier(session: Any, token_digest: str, key: str, digest: str) -> Job | None:
    row = session.scalar(
        select(IdempotencyKey).where(
            IdempotencyKey.token_digest == token_digest, IdempotencyKey.key == key
        )
    )
    if row is None:
        return None
    if row.request_digest != digest:
        raise IdempotencyConflict(key)
    # The key outlives its job (CONTRACT §3): a repeat whose job retention deleted must
    # not create it again (that would dispatch the orders a second time).
    job = None if row.job_id is None else session.get(Job, row.job_id)
    if job is None:
        raise IdempotencyJobDeleted(key)
    return job


class JobNotFinal(Exception):
    """Only a finished job's items can be resubmitted."""

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(f"job {job_id} is {status}: only a finished job can be resubmitted")
        self.status = status


class ResubmitRefused(ValueError):
    """The items asked for cannot be resubmitted; ``details`` names each one."""

    def __init__(self, message: str, details: dict[str, Any], code: str) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.code = code


def resubmit_digest(job_id: str, body: Any) -> str:
    """Return the idempotency digest of a resubmit of ``job_id`` with this request body.

    Shaped unlike any submit body, so a key used for a submit and then for a resubmit (or
    for resubmits of two jobs) is a different body: IdempotencyConflict.
    """
    return request_digest({"resubmitOf": job_id, "body": body})


def resubmit_job(
    settings: Settings,
    celery_app: Celery,
    job_id: str,
    item_ids: Sequence[str] | None = None,
    confirm_unknown: bool = False,
    *,
    priority: int = 0,
    token: str = "",
    idempotency_key: str | None = None,
    body_digest: str | None = None,
    robot: str | None = None,
    actor: audit.Actor,
) -> Submitted:
    """Create a new job from items of a finished job, through submit_job (CONTRACT §3).

    ``robot``: the new job's robot, by default the old job's (UnknownRobot when that one is
    no longer configured, or the one given is not). Without ``item_ids``, every item in
    ``error``. Raises lifecycle.JobNotFound,
    JobNotFinal, ResubmitRefused (an item in success, in unknown without
    ``confirm_unknown``, not the job's, or nothing to resubmit) and submit_job's
    idempotency errors. A repeat with the same key returns the first new job, whatever
    happened to the old one since.
    """
    limit = settings.max_batch_size
    if item_ids is not None and len(item_ids) > limit:
        # Checked before anything else: the list is never walked, stored or echoed.
        raise ResubmitRefused(
            f"a job takes at most {limit} orders; {len(item_ids)} item ids were sent",
            {"itemIds": [f"must name 1 to {limit} items (MAX_BATCH_SIZE)"]},
            "validation_failed",
        )
    request: dict[str, Any] = {
        "itemIds": None if item_ids is None else list(item_ids),
        "confirmUnknown": confirm_unknown,
        "priority": priority,
    }
    if robot is not None:
        request["robot"] = robot
        choose_robot(settings, robot)  # refused before anything is read
    digest = body_digest or resubmit_digest(job_id, request)
    session = session_factory(settings.database_url)()
    try:
        if idempotency_key is not None:
            earlier = _earlier(session, _digest(token), idempotency_key, digest)
            if earlier is not None:
                return Submitted(earlier, created=False)
        job = lifecycle.get_job(session, job_id)
        # The new job's trace starts at this request; it links to the old job's.
        tracing.link_to(job.trace_parent)
        if job.status not in FINAL_JOB_STATUSES:
            raise JobNotFinal(job_id, job.status)
        items = queries.job_items(session, job_id)
        robot = choose_robot(settings, robot or job.robot)
    finally:
        session.close()
    chosen = choose_items(items, item_ids, confirm_unknown)
    if len(chosen) > limit:
        raise ResubmitRefused(
            f"a job takes at most {limit} orders; {len(chosen)} items were chosen",
            {"itemIds": [f"must name 1 to {limit} items"]},
            "validation_failed",
        )
    orders = [{"orderId": item.order_id, "pedidoInput": item.pedido_input} for item in chosen]
    # ``priority`` is validated by the edge and part of the digest.
    try:
        return submit_job(
            settings,
            celery_app,
            orders,
            token=token,
            idempotency_key=idempotency_key,
            body_digest=digest,
            resubmit_of=job_id,
            resubmitted_items=[item.id for item in chosen],
            priority=priority,
            robot=robot,
            actor=actor,
        )
    except (IntegrityError, IdempotencyInProgress):
        # The old job deleted (retention) since it was read: resubmit_of names no job.
        with session_factory(settings.database_url)() as session:
            if session.get(Job, job_id) is None:
                raise lifecycle.JobNotFound(job_id) from None
        raise


# A refused resubmit names at most this many of the refused items (and counts them all).
MAX_REFUSED_SHOWN = 20


def choose_items(
    items: Sequence[Item], item_ids: Sequence[str] | None, confirm_unknown: bool
) -> list[Item]:
    """Return the items of a finished job to resubmit, in the job's order, or refuse.

    ``success`` never (entered); ``unknown`` only when a person checked the portal
    (``confirm_unknown``); ``error`` always (certainly not entered). Every refused id is
    named in the details, not just the first.
    """
    if item_ids is None:
        chosen = [item for item in items if item.status == ItemStatus.ERROR]
        if not chosen:
            raise ResubmitRefused(
                "the job has no item in error to resubmit",
                {"itemIds": ["no item in error: name the items to resubmit"]},
                "nothing_to_resubmit",
            )
        return chosen
    if not item_ids:
        raise ResubmitRefused(
            "no item to resubmit",
            {"itemIds": ["empty: name at least one item"]},
            "nothing_to_resubmit",
        )
    by_id = {item.id: item for item in items}
    wanted: set[str] = set()
    problems: dict[str, list[str]] = {}
    for item_id in item_ids:
        item = by_id.get(item_id)
        if item_id in wanted:
            problems[item_id] = ["listed more than once"]
        elif item is None:
            problems[item_id] = ["not an item of this job"]
        elif item.status == ItemStatus.SUCCESS:
            problems[item_id] = [
                f"order {item.order_id} is success (tracking number {item.tracking_number}):"
                " it was entered and is never resubmitted"
            ]
        elif item.status == ItemStatus.UNKNOWN and not confirm_unknown:
            problems[item_id] = [
                f"order {item.order_id} is unknown: the robot may have entered it; check the"
                " courier's portal, then resubmit it with confirmUnknown: true"
            ]
        elif item.status not in (ItemStatus.ERROR, ItemStatus.UNKNOWN):
            problems[item_id] = [f"order {item.order_id} is {item.status}"]
        wanted.add(item_id)
    if problems:
        count = len(problems)
        details: dict[str, Any] = {"itemIds": problems}
        if count > MAX_REFUSED_SHOWN:  # the answer stays small whatever was asked
            shown = list(problems.items())[:MAX_REFUSED_SHOWN]
            details = {"itemIds": dict(shown), "refusedCount": count}
        raise ResubmitRefused(
            f"{count} of the items asked for cannot be resubmitted"
            + (f" (the first {MAX_REFUSED_SHOWN} are named)" if count > MAX_REFUSED_SHOWN else "")
            if count > 1
            else "an item asked for cannot be resubmitted",
            details,
            "not_resubmittable",
        )
    return [item for item in items if item.id in wanted]
