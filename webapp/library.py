"""Use the orchestrator from a host Flask app: the robot's callback endpoint and submit_job.

::

    from flask import Flask, request
    from webapp.library import get_job, init_orchestrator, submit_job

    app = Flask(__name__)
    init_orchestrator(app)  # settings from the environment (CONTRACT §2)

    @app.post("/checkout")
    def checkout():
        job = submit_job(request.get_json()["orders"])  # robot="…" with several robots
        return {"jobId": job["id"]}, 202

The host serves ``POST /api/robot/jobs/<id>/events`` (so ``PUBLIC_URL`` is the host's URL),
and runs the Procfile's ``worker`` and ``beat`` with the same configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from flask import Blueprint, Flask
from marshmallow import ValidationError

from orchestrator import audit, queries, submission
from orchestrator.celery_app import create_celery
from orchestrator.config import Settings, load_settings
from orchestrator.lifecycle import JobNotFound
from orchestrator.submission import JobNotFinal, ResubmitRefused, UnknownRobot

from . import callbacks, errors
from .schemas import ResubmitSchema, SubmitSchema
from .state import Orchestrator, orchestrator

log = logging.getLogger(__name__)

__all__ = [
    "InvalidOrders",
    "JobNotFinal",
    "JobNotFound",
    "ResubmitRefused",
    "get_job",
    "init_orchestrator",
    "resubmit_job",
    "submit_job",
]

# The callback blueprint nested in one that answers its errors with the JSON envelope
# (CONTRACT §3), without touching how the host answers its own errors.
robot_bp = Blueprint("orchestrator_robot", __name__)
robot_bp.register_blueprint(callbacks.bp)


errors.init_app(robot_bp)


class InvalidOrders(ValueError):
    """The orders fail the job API's validation; ``details`` names each bad field."""

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


def init_orchestrator(app: Flask, settings: Settings | None = None) -> Orchestrator:
    """Attach the orchestrator to a host app and serve the robot's callbacks on it."""
    settings = settings or load_settings()
    state = Orchestrator(settings, create_celery(settings))
    app.extensions["orchestrator"] = state
    app.register_blueprint(robot_bp)
    return state


_schema = SubmitSchema()


def submit_job(
    orders: Sequence[dict[str, Any]],
    *,
    idempotency_key: str | None = None,
    scope: str = "host-app",
    robot: str | None = None,
) -> dict[str, Any]:
    """Validate and create a job, start it after its commit; return it as the job API shows it.

    Call it inside a request (or an app context) of an app passed to ``init_orchestrator``.
    ``robot`` names the robot that must process the job (CONTRACT §11): required with several
    robots (``ROBOTS``), optional with one. A repeat with the same ``idempotency_key`` (within
    ``scope``) returns the first job and starts nothing. Raises InvalidOrders when the orders
    fail validation or the robot is missing or unknown (``details`` names ``robot``).
    """
    state = orchestrator()
    try:
        data = _schema.load({"orders": list(orders)})
    except ValidationError as err:
        raise InvalidOrders("the orders failed validation", err.messages_dict) from None
    limit = state.settings.max_batch_size
    if not 1 <= len(data["orders"]) <= limit:
        raise InvalidOrders(
            f"a job takes 1 to {limit} orders", {"orders": [f"must contain 1 to {limit} orders"]}
        )
    try:
        result = submission.submit_job(
            state.settings,
            state.celery,
            data["orders"],
            token=scope,
            idempotency_key=idempotency_key,
            robot=robot,
            actor=_host_app(scope),
        )
    except UnknownRobot as exc:
        raise InvalidOrders(exc.message, {"robot": [exc.message]}) from None
    job = get_job(result.job.id)
    assert job is not None
    return job


_resubmit_schema = ResubmitSchema()


def resubmit_job(
    job_id: str,
    item_ids: Sequence[str] | None = None,
    *,
    confirm_unknown: bool = False,
    idempotency_key: str | None = None,
    scope: str = "host-app",
    robot: str | None = None,
) -> dict[str, Any]:
    """Create a new job from items of a finished job, as ``POST /api/jobs/<id>/resubmit``.

    ``robot``: the new job's robot, by default the old job's; another configured robot may
    take the orders over (an unknown one: ResubmitRefused naming ``robot``). Without
    ``item_ids``, every item in ``error``; an ``unknown`` item only with
    ``confirm_unknown=True`` (a person checked the courier's portal). Returns the new job as
    the job API shows it (``resubmitOf`` set); a repeat with the same ``idempotency_key``
    returns it again. Raises JobNotFound, JobNotFinal, or ResubmitRefused (``details`` names
    each refused item, as the API's 422 does).
    """
    state = orchestrator()
    body: dict[str, Any] = {"confirmUnknown": confirm_unknown}
    if item_ids is not None:
        body["itemIds"] = list(item_ids)
    try:
        data = _resubmit_schema.load(body)
    except ValidationError as err:
        raise ResubmitRefused(
            "the request failed validation", err.messages_dict, "validation_failed"
        ) from None
    try:
        result = submission.resubmit_job(
            state.settings,
            state.celery,
            job_id,
            data.get("itemIds"),
            data["confirmUnknown"],
            token=scope,
            idempotency_key=idempotency_key,
            robot=robot,
            actor=_host_app(scope),
        )
    except UnknownRobot as exc:
        raise ResubmitRefused(exc.message, {"robot": [exc.message]}, "validation_failed") from None
    job = get_job(result.job.id)
    assert job is not None
    return job


def _host_app(scope: str) -> audit.Actor:
    """The host app's own code acts with every right, named by its idempotency scope."""
    return audit.Actor(scope, "operate")


def get_job(job_id: str) -> dict[str, Any] | None:
    """Return the job with its items and counts as the job API shows it, or None."""
    with orchestrator().read_connection() as conn:
        return queries.job_view(conn, job_id)
