"""marshmallow schemas of the HTTP edge: what clients and the robot send, what we answer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marshmallow import (
    EXCLUDE,
    INCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from orchestrator.jsonvalues import out_of_range
from orchestrator.models import ItemStatus
from orchestrator.text import has_unsafe_characters


def no_control_characters(value: str) -> None:
    if has_unsafe_characters(value):
        raise ValidationError(
            "must not contain control characters, line separators or bidirectional overrides"
        )


def _text(max_length: int | None = None, **kwargs: Any) -> fields.String:
    validators: list[Any] = [no_control_characters, validate.Length(min=1, max=max_length)]
    return fields.String(validate=validators, **kwargs)


def numbers_fit_a_double(value: dict[str, Any]) -> None:
    """The JSON rule (orchestrator.jsonvalues) for values handed over already parsed."""
    paths = out_of_range(value)
    if paths:
        raise ValidationError(
            f"a number does not fit a double (64-bit float) at {', '.join(paths)}"
        )


class OrderSchema(Schema):
    class Meta:
        unknown = RAISE

    orderId = _text(100, required=True)
    pedidoInput = fields.Dict(required=True, validate=numbers_fit_a_double)


class StrictInteger(fields.Integer):
    """A JSON integer only: no string, fraction (``1.0`` included) or boolean."""

    default_error_messages = {"invalid": "must be a JSON integer"}

    def _validated(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.make_error("invalid")
        return value


PRIORITY_RANGE = (-100, 100)


def priority_field() -> StrictInteger:
    """The optional ``priority`` of a submitted job (CONTRACT §3): -100..100, default 0."""
    low, high = PRIORITY_RANGE
    return StrictInteger(load_default=0, validate=validate.Range(min=low, max=high))


def robot_field() -> fields.String:
    """A robot's name (CONTRACT §11); whether it is configured is checked by the view."""
    return fields.String(validate=validate.Length(min=1, max=100))


class SubmitSchema(Schema):
    class Meta:
        unknown = RAISE

    orders = fields.List(fields.Nested(OrderSchema), required=True)
    priority = priority_field()
    robot = robot_field()

    @validates_schema
    def _unique_order_ids(self, data: dict[str, Any], **_: Any) -> None:
        seen: set[str] = set()
        for index, order in enumerate(data.get("orders", [])):
            if order["orderId"] in seen:
                raise ValidationError(
                    {"orders": {index: {"orderId": ["duplicate orderId within the job"]}}}
                )
            seen.add(order["orderId"])


class StrictBoolean(fields.Boolean):
    """JSON ``true`` or ``false`` only (``1 == True`` in Python, so truthy sets admit 1)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class ResubmitSchema(Schema):
    """The optional body of ``POST /api/jobs/<id>/resubmit``; no body means the defaults."""

    class Meta:
        unknown = RAISE

    itemIds = fields.List(fields.String(validate=validate.Length(min=1, max=255)))
    confirmUnknown = StrictBoolean(load_default=False)
    priority = priority_field()
    robot = robot_field()


class ListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE  # tolerate cache-busting and other extra query parameters

    status = fields.String(
        validate=validate.OneOf(["pending", "processing", "completed", "failed", "cancelled"])
    )
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200), strict=False)
    cursor = fields.String(validate=validate.Length(min=1, max=500))
    robot = robot_field()


class NotificationListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE  # as the job list

    status = fields.String(validate=validate.OneOf(["pending", "delivered", "failed"]))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200), strict=False)
    cursor = fields.String(validate=validate.Length(min=1, max=500))


class AuditListQuerySchema(Schema):
    """``GET /api/audit``: exact-match filters, paged as the job list (CONTRACT §3)."""

    class Meta:
        unknown = EXCLUDE  # as the job list

    actor = fields.String(validate=validate.Length(min=1, max=64))
    action = fields.String(validate=validate.Length(min=1, max=64))
    target = fields.String(validate=validate.Length(min=1, max=255))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200), strict=False)
    cursor = fields.String(validate=validate.Length(min=1, max=500))


# --- robot callbacks (CONTRACT §5): liberal about extra fields, strict about known ones ---


class ItemResultSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    itemId = _text(64, required=True)
    status = fields.String(
        required=True, validate=validate.OneOf([ItemStatus.SUCCESS, ItemStatus.ERROR])
    )
    trackingNumber = _text(255, allow_none=True)
    error = fields.String(
        validate=[no_control_characters, validate.Length(max=2000)], allow_none=True
    )

    @validates_schema
    def _tracking_for_success(self, data: dict[str, Any], **_: Any) -> None:
        if data["status"] == ItemStatus.SUCCESS and not data.get("trackingNumber"):
            raise ValidationError({"trackingNumber": ["required when status is success"]})


class ItemStartedSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    itemId = _text(64, required=True)


class BatchCompletedSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    items = fields.List(fields.Nested(ItemResultSchema), load_default=list)


class BatchFailedSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    error = fields.String(
        validate=[no_control_characters, validate.Length(max=2000)], allow_none=True
    )


class HeartbeatSchema(Schema):
    """``robot.heartbeat``: any JSON object as ``data``, stored as sent."""

    class Meta:
        unknown = INCLUDE


EVENT_DATA_SCHEMAS: dict[str, Schema] = {
    "robot.item.started": ItemStartedSchema(),
    "robot.item.completed": ItemResultSchema(),
    "robot.batch.completed": BatchCompletedSchema(),
    "robot.batch.failed": BatchFailedSchema(),
    "robot.heartbeat": HeartbeatSchema(),
}


class EventSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    type = fields.String(required=True, validate=validate.OneOf(list(EVENT_DATA_SCHEMAS)))
    data = fields.Dict(required=True)


# --- dispatch control (CONTRACT §3) ---


class PauseSchema(Schema):
    class Meta:
        unknown = RAISE

    reason = _text(500, required=True)
    until = fields.AwareDateTime(format="iso")

    @validates_schema
    def _until_in_the_future(self, data: dict[str, Any], **_: Any) -> None:
        until = data.get("until")
        if until is None:
            return
        try:
            until = until.astimezone(UTC)
        except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00 is past datetime's range in UTC
            raise ValidationError({"until": ["out of range"]}) from None
        if until <= datetime.now(UTC):
            raise ValidationError({"until": ["must be a time in the future"]})
        data["until"] = until


# --- answers ---
