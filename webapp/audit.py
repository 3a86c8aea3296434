"""``GET /api/audit`` (CONTRACT §3, §12): the audit log, newest first, for ``operate``."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError

from orchestrator import audit

from .access import guard_api
from .errors import ApiError
from .paging import dump_cursor, load_cursor
from .schemas import AuditListQuerySchema
from .state import orchestrator

bp = Blueprint("audit", __name__, url_prefix="/api/audit")
bp.before_request(guard_api)

_list_schema = AuditListQuerySchema()


@bp.get("")
def list_entries() -> ResponseReturnValue:
    try:
        args = _list_schema.load(request.args.to_dict())
    except ValidationError as err:
        raise ApiError(422, "the request failed validation", details=err.messages_dict) from None
    before = load_cursor("audit-cursor", args["cursor"], int) if "cursor" in args else None
    with orchestrator().session() as session:
        rows, more = audit.page_of_entries(
            session,
            args["limit"],
            before,
            actor=args.get("actor"),
            action=args.get("action"),
            target=args.get("target"),
        )
        entries = [audit.entry_dict(row) for row in rows]
    next_cursor = dump_cursor("audit-cursor", rows[-1].id) if more and rows else None
    return jsonify({"entries": entries, "nextCursor": next_cursor})
