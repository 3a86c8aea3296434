"""The robot's callback endpoint (CONTRACT §5).

Order of checks: raw body → signature (401) → rate limit (429, webapp.security: per job once
signed, per address for bad signatures) → job exists (404) → signed with the master secret
its dispatch was claimed under (401, CONTRACT §9) → dispatch claimed (409) → size (413) →
JSON (400) → fields (422) → de-duplication and application through the domain layer,
committed to the database → only then the report key and pub/sub message in Redis.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError
from redis.exceptions import RedisError
from sqlalchemy import select

from orchestrator import metrics, tracing
from orchestrator.models import Item
from orchestrator.robot_events import (
    BATCH_EVENTS,
    ITEM_EVENTS,
    JOB_FOR_CALLBACK,
    Outcome,
    UnknownItem,
    apply_event,
    apply_item_event,
)
from orchestrator.signing import SignatureError, signs_for_job, verify_callback

from . import bind_url_job
from .errors import ApiError
from .jsonbody import loads_strict
from .schemas import EVENT_DATA_SCHEMAS, EventSchema
from .security import check_callback_limit
from .state import orchestrator

log = logging.getLogger(__name__)

bp = Blueprint("callbacks", __name__, url_prefix="/api/robot")

# A body is read in full to verify its signature before its size is judged (the contract's
# order), but never beyond this many times MAX_BODY_BYTES.
READ_LIMIT_FACTOR = 4

_event_schema = EventSchema()


def _parse(body: bytes) -> dict[str, Any]:
    event = loads_strict(body)
    if not isinstance(event, dict):
        raise ApiError(
            422, "the event must be a JSON object", details={"_schema": ["not an object"]}
        )
    return event


def _validate(event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    try:
        envelope = _event_schema.load(event)
        data = EVENT_DATA_SCHEMAS[envelope["type"]].load(envelope["data"])
    except ValidationError as err:
        raise ApiError(422, "the event failed validation", details=err.messages_dict) from None
    return envelope["type"], data


def _bad_signature() -> ApiError:
    return ApiError(401, "the event's signature does not verify for this job")


def _unknown_items(unknown: list[str]) -> ApiError:
    return ApiError(422, "unknown itemId for this job", details={"itemId": [f"unknown: {unknown}"]})


def _check_batch_items(session: Any, job_id: str, data: dict[str, Any]) -> None:
    """A batch report's entries must all be the job's items (item events check their own)."""
    item_ids = {r["itemId"] for r in data.get("items", [])}
    if item_ids:
        known = set(
            session.scalars(select(Item.id).where(Item.job_id == job_id, Item.id.in_(item_ids)))
        )
        unknown = sorted(item_ids - known)
        if unknown:
            raise _unknown_items(unknown)


@bp.after_request
def _count_answer(response: Response) -> Response:
    """Count every callback answered, in one place: its outcome, or rejected for a 4xx.

    A result conflict (409) has its own outcome; a 5xx applied nothing and is not counted.
    """
    outcome = g.pop("callback_outcome", None)
    status = response.status_code
    if outcome is not None and (status == 200 or (status == 409 and outcome == Outcome.CONFLICT)):
        metrics.count_callback(outcome)
    elif 400 <= status < 500:
        metrics.count_callback("rejected")
    return response


@bp.post("/jobs/<job_id>/events")
def receive_event(job_id: str) -> ResponseReturnValue:
    state = orchestrator()
    limit = state.settings.max_body_bytes
    request.max_content_length = limit * READ_LIMIT_FACTOR
    body = request.get_data(cache=False)
    settings = state.settings
    try:
        verified = verify_callback(settings.callback_secrets, job_id, body, request.headers)
    except SignatureError:
        check_callback_limit(job_id, signed=False)  # their own bucket: 429 past it
        raise _bad_signature() from None
    check_callback_limit(job_id, signed=True)
    bind_url_job()  # signed for this id: its lines may name it
    webhook_id = request.headers["webhook-id"]
    if len(webhook_id) > 255:
        raise ApiError(422, "webhook-id is too long", details={"webhook-id": ["at most 255"]})
    # The contract's order: 404, then 413, 400, 422. The body is judged first (no database
    # needed), its verdict given only once the job is known to exist.
    problem: ApiError | None = None
    event_type, data = "", {}
    if len(body) > limit:
        problem = ApiError(413, "the request body is larger than MAX_BODY_BYTES")
    else:
        try:
            event_type, data = _validate(_parse(body))
        except ApiError as exc:
            problem = exc
    # A NUL byte is in no job id, and PostgreSQL cannot even compare it.
    if "\x00" in job_id:
        raise ApiError(404, f"no job with id {job_id!r}")
    with state.session() as session:
        job = session.connection().execute(JOB_FOR_CALLBACK, {"the_job": job_id}).first()
        if job is None:
            raise ApiError(404, f"no job with id {job_id!r}")
        claimed = job.dispatched_at is not None
        if not signs_for_job(verified, settings.robot_callback_secret, job.callback_key, claimed):
            raise _bad_signature()
        if not claimed:
            raise ApiError(
                409,
                "this job's dispatch was never claimed: no robot can have it yet",
                "not_dispatched",
            )
        job_status = job.status
        # This request's span links to the job's trace (CONTRACT §9); off: one flag check.
        tracing.link_to(job.trace_parent)
        if problem is not None:
            raise problem
        try:
            if event_type in ITEM_EVENTS:
                result = apply_item_event(session, job_id, job_status, webhook_id, event_type, data)
            else:
                if event_type in BATCH_EVENTS:
                    _check_batch_items(session, job_id, data)
                result = apply_event(session, job_id, webhook_id, event_type, data)
        except UnknownItem as exc:
            session.rollback()
            raise _unknown_items([str(exc.args[0])]) from None
        g.callback_outcome = result.outcome.value
        if result.outcome == Outcome.CONFLICT:
            session.rollback()
            raise ApiError(409, result.message, "result_conflict")
        # A database failure here answers 503 (webapp.errors): nothing applied, retry is safe.
        session.commit()
    if result.report:
        try:
            state.rendezvous.announce_report(job_id, result.report)
        except RedisError:
            # Recorded in the database: housekeeping settles the job without Redis.
            log.warning("job %s: report saved but Redis is unavailable to announce it", job_id)
    body_out: dict[str, Any] = {"status": result.outcome.value}
    if result.ignored:
        body_out["ignored"] = result.ignored
    return jsonify(body_out), 200
