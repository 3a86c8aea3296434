"""``GET /healthz``: the database and Redis each answer, or say what failed."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import text

from .state import orchestrator

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    state = orchestrator()
    checks = {"database": "ok", "redis": "ok"}
    try:
        with state.session() as session:
            session.execute(text("SELECT 1"))
    # The probe's whole point is to report any failure, whatever its kind.
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}: database not reachable"
    try:
        state.rendezvous.redis.ping()
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}: redis not reachable"
    healthy = all(value == "ok" for value in checks.values())
    return jsonify({"status": "ok" if healthy else "error", "checks": checks}), (
        200 if healthy else 503
    )
