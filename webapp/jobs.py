"""The job API (CONTRACT §3): submit, read, list, cancel, resubmit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from flask import Blueprint, g, jsonify, request
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError

from orchestrator import lifecycle, queries
from orchestrator.submission import (
    IdempotencyConflict,
    IdempotencyInProgress,
    IdempotencyJobDeleted,
    JobNotFinal,
    ResubmitRefused,
    Submitted,
    UnknownRobot,
    choose_robot,
    request_digest,
    resubmit_digest,
    resubmit_job,
    submit_job,
)

from . import bind_url_job, live
from .access import guard_api, request_actor
from .errors import ApiError
from .jsonbody import loads_strict
from .paging import dump_cursor, load_cursor
from .schemas import ListQuerySchema, ResubmitSchema, SubmitSchema
from .state import orchestrator

bp = Blueprint("jobs", __name__, url_prefix="/api/jobs")
bp.before_request(guard_api)
bp.before_request(bind_url_job)  # after the token is checked

_submit_schema = SubmitSchema()
_list_schema = ListQuerySchema()
_resubmit_schema = ResubmitSchema()


def parse_json_body() -> Any:
    """Return the request's JSON, or raise 415 / 400 with the envelope."""
    if request.mimetype != "application/json":
        raise ApiError(415, "send the body as JSON with 'Content-Type: application/json'")
    return loads_strict(request.get_data(cache=True))


def _validation_error(err: ValidationError) -> ApiError:
    return ApiError(422, "the request failed validation", details=err.messages_dict)


def _idempotency_key() -> str | None:
    """Return the request's Idempotency-Key header, or raise 422 if it is not 1-255 characters."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 255:
        raise ApiError(
            422,
            "Idempotency-Key must be 1 to 255 characters",
            details={"Idempotency-Key": ["must be 1 to 255 characters"]},
        )
    return key


def _require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(
            422, "the body must be a JSON object", details={"_schema": ["not an object"]}
        )
    return body


def unknown_robot(exc: UnknownRobot) -> ApiError:
    """The 422 of a missing or unknown robot, naming the field (CONTRACT §3)."""
    return ApiError(422, exc.message, details={"robot": [exc.message]})


def _robot(name: str | None) -> str:
    """Return the job's robot (given, or the only one), or raise the 422 naming ``robot``."""
    try:
        return choose_robot(orchestrator().settings, name)
    except UnknownRobot as exc:
        raise unknown_robot(exc) from None


@contextmanager
def _idempotency_errors() -> Iterator[None]:
    """Answer submit_job's idempotency errors: 422 for a reused key, 409 while in progress
    or once the key's job was deleted (retention: the key lives on, the job is not made again).
    """
    try:
        yield
    except IdempotencyConflict:
        raise ApiError(
            422,
            "this Idempotency-Key was used with a different body",
            "idempotency_key_reused",
            {"Idempotency-Key": ["already used with a different body"]},
        ) from None
    except IdempotencyInProgress:
        raise ApiError(
            409,
            "a request with this Idempotency-Key is still in progress",
            "idempotency_in_progress",
        ) from None
    except IdempotencyJobDeleted:
        raise ApiError(
            409,
            "the job this Idempotency-Key created was deleted (retention); "
            "nothing was created: use a new key to submit these orders again",
            "idempotency_job_deleted",
        ) from None


def _created(result: Submitted) -> ResponseReturnValue:
    """202 with the new job and its Location; 200 with the earlier one for a repeated key."""
    if result.created:  # as just committed, without reading it back (but for its place)
        job = result.job
        with orchestrator().read_connection() as conn:
            position = queries.queue_position(conn, job)
        answer = jsonify(
            queries.job_dict(job, queries.counts_of(job.items), job.items, queue_position=position)
        )
    else:
        answer = jsonify(_job_with_items(result.job.id))
    answer.status_code = 202 if result.created else 200
    answer.headers["Location"] = f"/api/jobs/{result.job.id}"
    return answer


@bp.post("")
def submit() -> ResponseReturnValue:
    state = orchestrator()
    body = parse_json_body()
    key = _idempotency_key()
    body = _require_object(body)
    limit = state.settings.max_batch_size
    # The count first: validating tens of thousands of orders only to refuse them costs a second.
    if isinstance(body.get("orders"), list) and len(body["orders"]) > limit:
        raise ApiError(
            422,
            f"a job takes at most {limit} orders",
            details={"orders": [f"must contain 1 to {limit} orders"]},
        )
    try:
        data = _submit_schema.load(body)
    except ValidationError as err:
        raise _validation_error(err) from None
    if not data["orders"]:
        raise ApiError(422, "a job needs at least one order", details={"orders": ["empty"]})
    robot = _robot(data.get("robot"))
    with _idempotency_errors():
        result = submit_job(
            state.settings,
            state.celery,
            data["orders"],
            token=g.api_token,
            idempotency_key=key,
            body_digest=request_digest(body),
            priority=data["priority"],
            robot=robot,
            actor=request_actor(),
        )
    return _created(result)


def _job_with_items(job_id: str) -> dict[str, Any]:
    with orchestrator().read_connection() as conn:
        job = queries.job_view(conn, job_id)
    if job is None:
        raise ApiError(404, f"no job with id {job_id!r}")
    return job


@bp.get("/<job_id>")
def read(job_id: str) -> ResponseReturnValue:
    return jsonify(_job_with_items(job_id))


@bp.get("/<job_id>/stream")
def stream(job_id: str) -> ResponseReturnValue:
    """The job now, then each change until it is final, as server-sent events (§13)."""
    response = live.job_stream(orchestrator(), job_id)
    if response is None:
        raise ApiError(404, f"no job with id {job_id!r}")
    return response


def _read_position(value: Any) -> tuple[datetime, str]:
    created, job_id = value
    return datetime.fromisoformat(created), str(job_id)


@bp.get("")
def list_jobs() -> ResponseReturnValue:
    try:
        args = _list_schema.load(request.args.to_dict())
    except ValidationError as err:
        raise _validation_error(err) from None
    robot = args.get("robot")
    if robot is not None and orchestrator().settings.robot(robot) is None:
        names = ", ".join(orchestrator().settings.robot_names)
        raise ApiError(
            422, f"unknown robot; one of {names}", details={"robot": [f"one of {names}"]}
        )
    after = None
    if "cursor" in args:
        after = load_cursor("jobs-cursor", args["cursor"], _read_position)
    with orchestrator().session() as session:
        jobs, more = queries.page_of_jobs(session, args.get("status"), args["limit"], after, robot)
        counts = queries.item_counts(session, [job.id for job in jobs])
        conn = session.connection()
        body = [
            queries.job_dict(job, counts[job.id], queue_position=queries.queue_position(conn, job))
            for job in jobs
        ]
    next_cursor = None
    if more and jobs:
        last = jobs[-1]
        next_cursor = dump_cursor("jobs-cursor", [last.created_at.isoformat(), last.id])
    return jsonify({"jobs": body, "nextCursor": next_cursor})


@bp.post("/<job_id>/cancel")
def cancel(job_id: str) -> ResponseReturnValue:
    try:
        orchestrator().cancel_job(job_id, request_actor())
    except lifecycle.JobNotFound:
        raise ApiError(404, f"no job with id {job_id!r}") from None
    except lifecycle.TransitionRefused as exc:
        raise ApiError(
            409, f"the job is already {exc.status} and cannot be cancelled", "job_finished"
        ) from None
    return jsonify(_job_with_items(job_id))


@bp.post("/<job_id>/resubmit")
def resubmit(job_id: str) -> ResponseReturnValue:
    """A new job from items of a finished job; no body (or ``{}``): every item in error."""
    state = orchestrator()
    body = parse_json_body() if request.get_data(cache=True) else {}
    key = _idempotency_key()
    body = _require_object(body)
    try:
        data = _resubmit_schema.load(body)
    except ValidationError as err:
        raise _validation_error(err) from None
    if "robot" in data:
        _robot(data["robot"])
    try:
        with _idempotency_errors():
            result = resubmit_job(
                state.settings,
                state.celery,
                job_id,
                data.get("itemIds"),
                data["confirmUnknown"],
                priority=data["priority"],
                token=g.api_token,
                idempotency_key=key,
                body_digest=resubmit_digest(job_id, body),
                robot=data.get("robot"),
                actor=request_actor(),
            )
    except lifecycle.JobNotFound:
        raise ApiError(404, f"no job with id {job_id!r}") from None
    except JobNotFinal as exc:
        raise ApiError(
            409,
            f"the job is still {exc.status}: only a finished job can be resubmitted",
            "job_not_finished",
        ) from None
    except ResubmitRefused as exc:
        raise ApiError(422, exc.message, exc.code, exc.details) from None
    except UnknownRobot as exc:  # the original job's robot is no longer configured
        raise unknown_robot(exc) from None
    return _created(result)
