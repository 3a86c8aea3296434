"""The notifications API (CONTRACT §3, §8): list the outbox, redeliver one notification."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError

from orchestrator import notifications

from .access import guard_api, request_actor
from .errors import ApiError
from .paging import dump_cursor, load_cursor
from .schemas import NotificationListQuerySchema
from .state import orchestrator

bp = Blueprint("notifications", __name__, url_prefix="/api/notifications")
bp.before_request(guard_api)

_list_schema = NotificationListQuerySchema()


@bp.get("")
def list_notifications() -> ResponseReturnValue:
    try:
        args = _list_schema.load(request.args.to_dict())
    except ValidationError as err:
        raise ApiError(422, "the request failed validation", details=err.messages_dict) from None
    before = None
    if "cursor" in args:
        before = load_cursor("notifications-cursor", args["cursor"], int)
    with orchestrator().session() as session:
        rows, more = notifications.page_of_notifications(
            session, args.get("status"), args["limit"], before
        )
    next_cursor = dump_cursor("notifications-cursor", rows[-1].seq) if more and rows else None
    return jsonify(
        {
            "notifications": [notifications.notification_dict(row) for row in rows],
            "nextCursor": next_cursor,
        }
    )


@bp.post("/<notification_id>/redeliver")
def redeliver(notification_id: str) -> ResponseReturnValue:
    state = orchestrator()
    with state.session() as session:
        try:
            notifications.redeliver(session, notification_id, actor=request_actor())
        except notifications.NotificationNotFound:
            raise ApiError(404, f"no notification with id {notification_id!r}") from None
        if not notifications.enabled(session):
            raise ApiError(409, "notifications are off: NOTIFY_URL is not set", "notifications_off")
        session.commit()  # the delivery is enqueued after this commit
        row = notifications.get_notification(session, notification_id)
    return jsonify(notifications.notification_dict(row)), 202
