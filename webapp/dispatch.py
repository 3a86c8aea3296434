"""Dispatch control (CONTRACT §3, §7, §11): read the state, pause and resume every robot."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError

from .access import guard_api, request_actor
from .errors import ApiError
from .jobs import parse_json_body
from .schemas import PauseSchema
from .state import orchestrator

bp = Blueprint("dispatch", __name__, url_prefix="/api/dispatch")
bp.before_request(guard_api)

_pause_schema = PauseSchema()


@bp.get("")
def read() -> ResponseReturnValue:
    return jsonify(orchestrator().dispatch_state().as_json())


def pause_request() -> dict[str, Any]:
    """Return the validated pause body (reason, until), or raise the 4xx with the envelope."""
    body = parse_json_body()
    if not isinstance(body, dict):
        raise ApiError(
            422, "the body must be a JSON object", details={"_schema": ["not an object"]}
        )
    try:
        return _pause_schema.load(body)
    except ValidationError as err:
        raise ApiError(422, "the request failed validation", details=err.messages_dict) from None


@bp.post("/pause")
def pause() -> ResponseReturnValue:
    data = pause_request()
    state = orchestrator().pause_dispatch(data["reason"], data.get("until"), request_actor())
    return jsonify(state.as_json())


@bp.post("/resume")
def resume() -> ResponseReturnValue:
    # No body is needed; any body is ignored.
    return jsonify(orchestrator().resume_dispatch(request_actor()).as_json())
