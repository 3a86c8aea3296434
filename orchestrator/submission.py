"""Submit a job exactly once per idempotency key, and start it only after it is committed."""

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

from . import lifecycle
from .config import Settings
from .db import session_factory
from .models import IdempotencyKey, Job
from .tasks import start_job

log = logging.getLogger(__name__)


class IdempotencyConflict(Exception):
    """The key was used before with a different body."""


class IdempotencyInProgress(Exception):
    """A request with this key is still being created."""


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
    priority: int = 0,
) -> Submitted:
    """Create a job for validated orders and enqueue its chain after the commit.

    With an ``idempotency_key`` (scoped to ``token``) a repeat returns the first job and
    starts nothing; the same key with a different body raises IdempotencyConflict.
    """
    digest = body_digest or request_digest(
        {"orders": list(orders), **({"priority": priority} if priority else {})}
    )
    token_digest = _digest(token)
    session = session_factory(settings.database_url)()
    try:
        if idempotency_key is not None:
            earlier = _earlier(session, token_digest, idempotency_key, digest)
            if earlier is not None:
                return Submitted(earlier, created=False)
        job = lifecycle.create_job(session, orders, priority=priority)
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
        log.exception("job %s committed but its chain could not be enqueued", job.id)
    return Submitted(job, created=True)


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
    return session.get(Job, row.job_id)
