"""Use the orchestrator from a host Flask app: the robot's callback endpoint and submit_job.

::

    from flask import Flask, request
    from webapp.library import get_job, init_orchestrator, submit_job

    app = Flask(__name__)
    init_orchestrator(app)  # settings from the environment (CONTRACT §2)

    @app.post("/checkout")
    def checkout():
        job = submit_job(request.get_json()["orders"])
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

from orchestrator import lifecycle, queries, submission
from orchestrator.celery_app import create_celery
from orchestrator.config import Settings, load_settings

from . import callbacks, errors
from .schemas import SubmitSchema, dump_job
from .state import Orchestrator, orchestrator

log = logging.getLogger(__name__)

__all__ = ["InvalidOrders", "get_job", "init_orchestrator", "submit_job"]

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
) -> dict[str, Any]:
    """Validate and create a job, start it after its commit; return it as the job API shows it.

    Call it inside a request (or an app context) of an app passed to ``init_orchestrator``.
    A repeat with the same ``idempotency_key`` (within ``scope``) returns the first job and
    starts nothing. Raises InvalidOrders when the orders fail validation.
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
    result = submission.submit_job(
        state.settings, state.celery, data["orders"], token=scope, idempotency_key=idempotency_key
    )
    job = get_job(result.job.id)
    assert job is not None
    return job


def get_job(job_id: str) -> dict[str, Any] | None:
    """Return the job with its items and counts as the job API shows it, or None."""
    with orchestrator().session() as session:
        try:
            job = lifecycle.get_job(session, job_id)
        except lifecycle.JobNotFound:
            return None
        items = queries.job_items(session, job_id)
        counts = queries.item_counts(session, [job_id])[job_id]
        position = queries.queue_position(session.connection(), job)
        return dump_job(job, counts, items, queue_position=position)
