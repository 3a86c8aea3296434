"""marshmallow schemas of the HTTP edge: what clients and the robot send, what we answer."""

from __future__ import annotations

from collections.abc import Sequence
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
from orchestrator.text import has_unsafe_characters


def no_control_characters(value: str) -> None:
    if has_unsafe_characters(value):
        raise ValidationError(
            "must not contain control characters, line separators or bidirectional overrides"
        )


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


class ListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE  # tolerate cache-busting and other extra query parameters

    status = fields.String(
        validate=validate.OneOf(["pending", "processing", "completed", "failed", "cancelled"])
    )
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


class ItemOutSchema(Schema):
    id = fields.String(dump_only=True)
    orderId = fields.String(attribute="order_id", dump_only=True)
    status = fields.String(dump_only=True)
    trackingNumber = fields.String(attribute="tracking_number", dump_only=True)
    error = fields.String(dump_only=True)


class JobOutSchema(Schema):
    id = fields.String(dump_only=True)
    status = fields.String(dump_only=True)
    error = fields.String(dump_only=True)
    createdAt = fields.DateTime("iso", attribute="created_at", dump_only=True)
    dispatchedAt = fields.DateTime("iso", attribute="dispatched_at", dump_only=True)
    deadline = fields.DateTime("iso", dump_only=True)
    finishedAt = fields.DateTime("iso", attribute="finished_at", dump_only=True)


_job_out = JobOutSchema()
_items_out = ItemOutSchema(many=True)


def dump_job(
    job: Any, counts: dict[str, int], items: Sequence[Any] | None = None
) -> dict[str, Any]:
    """Return the job as the API shows it (ORM objects or row mappings); with ``items``."""
    body: dict[str, Any] = _job_out.dump(job)
    body["counts"] = counts
    if items is not None:
        body["items"] = _items_out.dump(items)
    return body
