"""Robots (CONTRACT §3, §11): each robot's state, hours, pause and resume."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from .access import guard_api, request_actor
from .dispatch import pause_request
from .errors import ApiError
from .state import orchestrator

bp = Blueprint("robots", __name__, url_prefix="/api/robots")
bp.before_request(guard_api)


def _known(name: str) -> str:
    if orchestrator().settings.robot(name) is None:
        raise ApiError(404, f"no robot named {name[:100]!r}")
    return name


@bp.get("")
def list_robots() -> ResponseReturnValue:
    return jsonify({"robots": [state.as_json() for state in orchestrator().robot_states()]})


@bp.get("/<name>")
def read(name: str) -> ResponseReturnValue:
    return jsonify(orchestrator().dispatch_state(_known(name)).as_json())


@bp.post("/<name>/pause")
def pause(name: str) -> ResponseReturnValue:
    robot = _known(name)
    data = pause_request()
    state = orchestrator().pause_dispatch(data["reason"], data.get("until"), request_actor(), robot)
    return jsonify(state.as_json())


@bp.post("/<name>/resume")
def resume(name: str) -> ResponseReturnValue:
    # No body is needed; any body is ignored.
    return jsonify(orchestrator().resume_dispatch(request_actor(), _known(name)).as_json())
