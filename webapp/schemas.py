"""marshmallow schemas of the HTTP edge: what clients and the robot send, what we answer."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from orchestrator.models import ItemStatus

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def no_control_characters(value: str) -> None:
    if _CONTROL.search(value):
        raise ValidationError("must not contain control characters")


def _text(max_length: int | None = None, **kwargs: Any) -> fields.String:
    validators: list[Any] = [no_control_characters, validate.Length(min=1, max=max_length)]
    return fields.String(validate=validators, **kwargs)


class OrderSchema(Schema):
    class Meta:
        unknown = RAISE

    orderId = _text(100, required=True)
    pedidoInput = fields.Dict(required=True)


class SubmitSchema(Schema):
    class Meta:
        unknown = RAISE

    orders = fields.List(fields.Nested(OrderSchema), required=True)

    @validates_schema
    def _unique_order_ids(self, data: dict[str, Any], **_: Any) -> None:
        seen: set[str] = set()
        for index, order in enumerate(data.get("orders", [])):
            if order["orderId"] in seen:
                raise ValidationError(
                    {"orders": {index: {"orderId": ["duplicate orderId within the job"]}}}
                )
            seen.add(order["orderId"])


class StrictInteger(fields.Integer):
    """A JSON integer only: no string, fraction or boolean (``True`` is an int in Python)."""

    def _validated(self, value: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._validated(value)


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
    priority = StrictInteger(strict=True, load_default=0, validate=validate.Range(-100, 100))


class ListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE  # tolerate cache-busting and other extra query parameters

    status = fields.String(
        validate=validate.OneOf(["pending", "processing", "completed", "failed", "cancelled"])
    )
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200), strict=False)
    cursor = fields.String(validate=validate.Length(min=1, max=500))


class NotificationListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE  # as the job list

    status = fields.String(validate=validate.OneOf(["pending", "delivered", "failed"]))
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


EVENT_DATA_SCHEMAS: dict[str, Schema] = {
    "robot.item.started": ItemStartedSchema(),
    "robot.item.completed": ItemResultSchema(),
    "robot.batch.completed": BatchCompletedSchema(),
    "robot.batch.failed": BatchFailedSchema(),
}


class EventSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    type = fields.String(required=True, validate=validate.OneOf(list(EVENT_DATA_SCHEMAS)))
    data = fields.Dict(required=True)


# --- answers ---
