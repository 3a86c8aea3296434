"""``GET /openapi.json``: an OpenAPI 3 document of the job API and the robot's callback endpoint.

Written by hand to say exactly what the edge accepts (CONTRACT §3, §5): the same limits as the
marshmallow schemas in ``schemas.py`` and the deployment's ``MAX_BATCH_SIZE``. Schema-driven
fuzzing (``tests/faults``) generates requests from it and checks every answer against it.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue

from orchestrator.config import Settings
from orchestrator.text import UNSAFE_CHARACTERS

from .state import orchestrator

# Strings stored in text columns may hold no control characters, line separators or
# bidirectional overrides (orchestrator/text.py, docs/security.md "Text").
NO_CONTROL = f"^[^{UNSAFE_CHARACTERS}]*$"
JOB_STATUSES = ["pending", "processing", "completed", "failed", "cancelled"]
NOTIFICATION_STATUSES = ["pending", "delivered", "failed"]
ITEM_STATUSES = ["pending", "processing", "success", "error", "unknown"]
EVENT_TYPES = [
    "robot.item.started",
    "robot.item.completed",
    "robot.batch.completed",
    "robot.batch.failed",
    "robot.heartbeat",
]
PRIORITY = {"type": "integer", "minimum": -100, "maximum": 100}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json(_ref("Error"))}


def _rate_limited() -> dict[str, Any]:
    return {
        "description": "too many requests",
        "headers": {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"}}},
        "content": _json(_ref("Error")),
    }


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _job_properties() -> dict[str, Any]:
    time = {"type": "string", "format": "date-time"}
    count = {"type": "integer", "minimum": 0}
    return {
        "id": {"type": "string"},
        "status": {"type": "string", "enum": JOB_STATUSES},
        "error": _nullable({"type": "string"}),
        "createdAt": time,
        "dispatchedAt": _nullable(time),
        "deadline": _nullable(time),
        "finishedAt": _nullable(time),
        "priority": PRIORITY,
        "queuePosition": _nullable(
            {
                "type": "integer",
                "minimum": 1,
                "description": "a pending job's place in the dispatch order; null once "
                "dispatched or final",
            }
        ),
        "resubmitOf": _nullable({"type": "string", "description": "the job it came from"}),
        "robot": {"type": "string", "description": "the robot that processes the job (§11)"},
        "createdBy": _nullable(
            {
                "type": "string",
                "description": "the name of the token (or dashboard user) that submitted it; "
                "null for jobs older than names",
            }
        ),
        "counts": {
            "type": "object",
            "required": ["total", *ITEM_STATUSES],
            "properties": {name: count for name in ["total", *ITEM_STATUSES]},
        },
    }


def _schemas(settings: Settings) -> dict[str, Any]:
    job_summary_required = list(_job_properties())
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "details"],
                    "properties": {
                        "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                        "message": {"type": "string"},
                        "details": {"type": "object"},
                    },
                }
            },
        },
        "Order": {
            "type": "object",
            "additionalProperties": False,
            "required": ["orderId", "pedidoInput"],
            "properties": {
                "orderId": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 100,
                    "pattern": NO_CONTROL,
                    "description": "unique within the job",
                },
                "pedidoInput": {"type": "object", "description": "passed to the robot untouched"},
            },
        },
        "SubmitRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["orders"],
            "properties": {
                "orders": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": settings.max_batch_size,
                    "items": _ref("Order"),
                },
                "priority": {**PRIORITY, "default": 0, "description": "higher goes first"},
                "robot": {
                    "type": "string",
                    "enum": list(settings.robot_names),
                    "description": "the robot that must process the job: required with "
                    "several robots, else the only one",
                },
            },
        },
        "PauseRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["reason"],
            "properties": {
                "reason": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 500,
                    "pattern": NO_CONTROL,
                },
                "until": {
                    "type": "string",
                    "format": "date-time",
                    "description": "a future time with an offset; dispatching resumes by "
                    "itself within 20 s after it",
                },
            },
        },
        "DispatchState": {
            "type": "object",
            "required": [
                "paused",
                "pausedReason",
                "pausedUntil",
                "pausedBy",
                "maxActiveJobs",
                "activeJobs",
                "queuedJobs",
                "failuresInARow",
            ],
            "properties": {
                "paused": {"type": "boolean"},
                "pausedReason": _nullable({"type": "string"}),
                "pausedUntil": _nullable({"type": "string", "format": "date-time"}),
                "pausedBy": _nullable({"type": "string", "enum": ["api", "failures"]}),
                "maxActiveJobs": _nullable({"type": "integer", "minimum": 1}),
                "activeJobs": {"type": "integer", "minimum": 0},
                "queuedJobs": {"type": "integer", "minimum": 0},
                "failuresInARow": {"type": "integer", "minimum": 0},
            },
        },
        "Robot": {
            "allOf": [
                _ref("DispatchState"),
                {
                    "type": "object",
                    "required": ["name", "hours", "timezone", "open", "nextOpenAt"],
                    "properties": {
                        "name": {"type": "string", "enum": list(settings.robot_names)},
                        "hours": _nullable(
                            {"type": "string", "description": "as configured; null: any time"}
                        ),
                        "timezone": {"type": "string", "description": "IANA time zone"},
                        "open": {"type": "boolean", "description": "a dispatch may start now"},
                        "nextOpenAt": _nullable({"type": "string", "format": "date-time"}),
                    },
                },
            ]
        },
        "RobotList": {
            "type": "object",
            "required": ["robots"],
            "properties": {"robots": {"type": "array", "items": _ref("Robot")}},
        },
        "ResubmitRequest": {
            "type": "object",
            "additionalProperties": False,
            "description": "optional; without itemIds every item in error is resubmitted",
            "properties": {
                "itemIds": {
                    "type": "array",
                    "items": {"type": "string", "minLength": 1, "maxLength": 255},
                    "description": "items of the job: error ones, or unknown with confirmUnknown",
                },
                "confirmUnknown": {
                    "type": "boolean",
                    "description": "a person checked the portal: the unknown items listed "
                    "were not entered",
                },
                "priority": {"type": "integer", "minimum": -100, "maximum": 100},
                "robot": {
                    "type": "string",
                    "enum": list(settings.robot_names),
                    "description": "the new job's robot; by default the original job's",
                },
            },
        },
        "Item": {
            "type": "object",
            "required": ["id", "orderId", "status", "trackingNumber", "error"],
            "properties": {
                "id": {"type": "string"},
                "orderId": {"type": "string"},
                "status": {"type": "string", "enum": ITEM_STATUSES},
                "trackingNumber": _nullable({"type": "string"}),
                "error": _nullable({"type": "string"}),
            },
        },
        "JobSummary": {
            "type": "object",
            "required": job_summary_required,
            "properties": _job_properties(),
        },
        "Job": {
            "type": "object",
            "required": [*job_summary_required, "items"],
            "properties": {
                **_job_properties(),
                "items": {"type": "array", "items": _ref("Item")},
            },
        },
        "JobList": {
            "type": "object",
            "required": ["jobs", "nextCursor"],
            "properties": {
                "jobs": {"type": "array", "items": _ref("JobSummary")},
                "nextCursor": _nullable({"type": "string"}),
            },
        },
        "Notification": {
            "type": "object",
            "required": [
                "id",
                "type",
                "jobId",
                "status",
                "attempts",
                "lastError",
                "createdAt",
                "deliveredAt",
                "nextAttemptAt",
            ],
            "properties": {
                "id": {"type": "string", "description": "the webhook-id of every attempt"},
                "type": {"type": "string"},
                "jobId": _nullable({"type": "string"}),
                "status": {"type": "string", "enum": NOTIFICATION_STATUSES},
                "attempts": {"type": "integer", "minimum": 0},
                "lastError": _nullable({"type": "string"}),
                "createdAt": {"type": "string", "format": "date-time"},
                "deliveredAt": _nullable({"type": "string", "format": "date-time"}),
                "nextAttemptAt": _nullable({"type": "string", "format": "date-time"}),
            },
        },
        "NotificationList": {
            "type": "object",
            "required": ["notifications", "nextCursor"],
            "properties": {
                "notifications": {"type": "array", "items": _ref("Notification")},
                "nextCursor": _nullable({"type": "string"}),
            },
        },
        "AuditEntry": {
            "type": "object",
            "required": [
                "id",
                "at",
                "actor",
                "role",
                "action",
                "target",
                "outcome",
                "details",
                "address",
            ],
            "properties": {
                "id": {"type": "string"},
                "at": {"type": "string", "format": "date-time"},
                "actor": {"type": "string", "description": "a token's or user's name, or system"},
                "role": {"type": "string", "enum": ["read", "submit", "operate", "system", "none"]},
                "action": {"type": "string", "example": "job.cancelled"},
                "target": {"type": "string", "description": "a job, robot (* for all), ..."},
                "outcome": {"type": "string", "enum": ["ok", "denied"]},
                "details": {"type": "object"},
                "address": _nullable({"type": "string"}),
            },
        },
        "AuditList": {
            "type": "object",
            "required": ["entries", "nextCursor"],
            "properties": {
                "entries": {"type": "array", "items": _ref("AuditEntry")},
                "nextCursor": _nullable({"type": "string"}),
            },
        },
        "RobotEvent": {
            "type": "object",
            "required": ["type", "data"],
            "description": (
                "data per type: item.started {itemId}; item.completed {itemId, status, "
                "trackingNumber | error}; batch.completed {items?: [item results]}; "
                "batch.failed {error}; heartbeat {any object}"
            ),
            "properties": {
                "type": {"type": "string", "enum": EVENT_TYPES},
                "data": {"type": "object"},
            },
        },
        "EventAnswer": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"type": "string", "enum": ["applied", "duplicate", "late"]},
                "ignored": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "checks"],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "error"]},
                "checks": {
                    "type": "object",
                    "required": ["database", "redis"],
                    "properties": {
                        "database": {"type": "string"},
                        "redis": {"type": "string"},
                    },
                },
            },
        },
    }


def _job_id_parameter() -> dict[str, Any]:
    return {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _common_errors(*statuses: int) -> dict[str, Any]:
    texts = {
        400: "the body is not valid JSON",
        401: "missing or bad credentials or signature",
        404: "unknown resource",
        409: "conflict with the current state",
        413: "body larger than MAX_BODY_BYTES",
        415: "the body is not sent as application/json",
        422: "fails validation; details names each bad field",
        503: "the database or Redis is unavailable; nothing was applied",
    }
    answers: dict[str, Any] = {str(status): _error(texts[status]) for status in statuses}
    if 401 in statuses:  # every bearer route: a role that does not allow it (CONTRACT §12)
        answers["403"] = _error("forbidden: the token's role does not allow it; nothing done")
    answers["429"] = _rate_limited()
    return answers


# Refused by the HTTP server (gunicorn) before the app sees the request, in the same envelope
# (webapp/gunicorn_worker.py).
SERVER_ANSWERS = {
    "400": _error("malformed request (not valid HTTP)"),
    "414": _error("request line longer than 4094 bytes"),
    "431": _error("more than 100 headers, or one longer than 8190 bytes"),
}


def _with_server_answers(paths: dict[str, Any]) -> dict[str, Any]:
    for operations in paths.values():
        for operation in operations.values():
            for status, answer in SERVER_ANSWERS.items():
                operation["responses"].setdefault(status, answer)
    return paths


def _page_parameters(statuses: list[str]) -> list[dict[str, Any]]:
    """The query of a paged list, newest first: a status filter, a limit, an opaque cursor."""
    return [
        {"name": "status", "in": "query", "schema": {"type": "string", "enum": statuses}},
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 200},
        },
        {
            "name": "cursor",
            "in": "query",
            "schema": {"type": "string", "minLength": 1, "maxLength": 500},
            "description": "nextCursor of an earlier page (opaque)",
        },
    ]


def build_document(settings: Settings) -> dict[str, Any]:
    """Return the OpenAPI 3.0 document for a deployment's settings."""
    job_answer = {"content": _json(_ref("Job"))}
    dispatch_answer = {"content": _json(_ref("DispatchState"))}
    robot_answer = {"content": _json(_ref("Robot"))}
    robot_list_answer = {"content": _json(_ref("RobotList"))}
    robot_parameter = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    location = {"Location": {"schema": {"type": "string"}, "description": "/api/jobs/<id>"}}
    webhook_headers = [
        {
            "name": "webhook-id",
            "in": "header",
            "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        },
        {
            "name": "webhook-timestamp",
            "in": "header",
            "required": True,
            "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
            "description": "Unix seconds; more than 5 minutes off is refused",
        },
        {
            "name": "webhook-signature",
            "in": "header",
            "required": True,
            "schema": {"type": "string", "minLength": 1},
            "description": "v1,<base64 HMAC-SHA256 of '{id}.{timestamp}.{body}'>, space-separated",
        },
    ]
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Robot-job orchestrator",
            "version": "1",
            "description": (
                "The job and notification APIs (CONTRACT §3, §8) and the robot's callbacks "
                "(CONTRACT §5)."
            ),
        },
        "paths": _with_server_answers(
            {
                "/api/jobs": {
                    "post": {
                        "operationId": "submitJob",
                        "summary": "Submit a batch of orders as one job",
                        "security": [{"bearerAuth": []}],
                        "parameters": [
                            {
                                "name": "Idempotency-Key",
                                "in": "header",
                                "required": False,
                                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                            }
                        ],
                        "requestBody": {
                            "required": True,
                            "content": _json(_ref("SubmitRequest")),
                        },
                        "responses": {
                            "202": {"description": "created", "headers": location, **job_answer},
                            "200": {
                                "description": "an earlier request with this Idempotency-Key",
                                "headers": location,
                                **job_answer,
                            },
                            **_common_errors(400, 401, 409, 413, 415, 422, 503),
                        },
                    },
                    "get": {
                        "operationId": "listJobs",
                        "summary": "List jobs, newest first",
                        "security": [{"bearerAuth": []}],
                        "parameters": [
                            *_page_parameters(JOB_STATUSES),
                            {
                                "name": "robot",
                                "in": "query",
                                "schema": {"type": "string", "enum": list(settings.robot_names)},
                            },
                        ],
                        "responses": {
                            "200": {"description": "a page", "content": _json(_ref("JobList"))},
                            **_common_errors(401, 422, 503),
                        },
                    },
                },
                "/api/jobs/{job_id}": {
                    "get": {
                        "operationId": "readJob",
                        "summary": "Read a job with its items",
                        "security": [{"bearerAuth": []}],
                        "parameters": [_job_id_parameter()],
                        "responses": {
                            "200": {"description": "the job", **job_answer},
                            **_common_errors(401, 404, 503),
                        },
                    }
                },
                "/api/jobs/{job_id}/stream": {
                    "get": {
                        "operationId": "streamJob",
                        "summary": "Follow a job live (server-sent events, CONTRACT §13)",
                        "description": "Events `job` whose data is the job as readJob shows "
                        "it: the job at once, then after each change, until the event that "
                        "shows it final; then the stream closes. A comment line at least every "
                        "15 s. Each event's `id` names the job state; a `Last-Event-ID` equal "
                        "to the final state's id gets 204 (an EventSource stops reconnecting).",
                        "security": [{"bearerAuth": []}],
                        "parameters": [
                            _job_id_parameter(),
                            {
                                "name": "Last-Event-ID",
                                "in": "header",
                                "required": False,
                                "schema": {"type": "string"},
                            },
                        ],
                        "responses": {
                            "200": {
                                "description": "the event stream",
                                "content": {"text/event-stream": {"schema": {"type": "string"}}},
                            },
                            "204": {"description": "the client holds the final state already"},
                            **_common_errors(401, 404, 503),
                        },
                    }
                },
                "/api/jobs/{job_id}/cancel": {
                    "post": {
                        "operationId": "cancelJob",
                        "summary": "Cancel an open job",
                        "security": [{"bearerAuth": []}],
                        "parameters": [_job_id_parameter()],
                        "responses": {
                            "200": {"description": "cancelled", **job_answer},
                            **_common_errors(401, 404, 409, 503),
                        },
                    }
                },
                "/api/jobs/{job_id}/resubmit": {
                    "post": {
                        "operationId": "resubmitJob",
                        "summary": "A new job from the error (or confirmed unknown) items of a "
                        "finished job",
                        "security": [{"bearerAuth": []}],
                        "parameters": [
                            _job_id_parameter(),
                            {
                                "name": "Idempotency-Key",
                                "in": "header",
                                "required": False,
                                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                            },
                        ],
                        "requestBody": {
                            "required": False,
                            "content": _json(_ref("ResubmitRequest")),
                        },
                        "responses": {
                            "202": {
                                "description": "the new job (resubmitOf set)",
                                "headers": location,
                                **job_answer,
                            },
                            "200": {
                                "description": "an earlier request with this Idempotency-Key",
                                "headers": location,
                                **job_answer,
                            },
                            **_common_errors(400, 401, 404, 409, 413, 415, 422, 503),
                        },
                    }
                },
                "/api/notifications": {
                    "get": {
                        "operationId": "listNotifications",
                        "summary": "List notifications to NOTIFY_URL, newest first",
                        "security": [{"bearerAuth": []}],
                        "parameters": _page_parameters(NOTIFICATION_STATUSES),
                        "responses": {
                            "200": {
                                "description": "a page",
                                "content": _json(_ref("NotificationList")),
                            },
                            **_common_errors(401, 422, 503),
                        },
                    }
                },
                "/api/notifications/{notification_id}/redeliver": {
                    "post": {
                        "operationId": "redeliverNotification",
                        "summary": "Send a notification again with the same webhook-id",
                        "security": [{"bearerAuth": []}],
                        "parameters": [
                            {
                                "name": "notification_id",
                                "in": "path",
                                "required": True,
                                "schema": {"type": "string"},
                            }
                        ],
                        "responses": {
                            "202": {
                                "description": "pending and due now",
                                "content": _json(_ref("Notification")),
                            },
                            **_common_errors(401, 404, 409, 503),
                        },
                    }
                },
                "/api/audit": {
                    "get": {
                        "operationId": "listAudit",
                        "summary": "The audit log, newest first (role operate; CONTRACT §12)",
                        "security": [{"bearerAuth": []}],
                        "parameters": [
                            *(
                                {
                                    "name": name,
                                    "in": "query",
                                    "schema": {"type": "string", "minLength": 1},
                                    "description": "exact match",
                                }
                                for name in ("actor", "action", "target")
                            ),
                            *_page_parameters([])[1:],
                        ],
                        "responses": {
                            "200": {"description": "a page", "content": _json(_ref("AuditList"))},
                            **_common_errors(401, 422, 503),
                        },
                    }
                },
                "/api/dispatch": {
                    "get": {
                        "operationId": "readDispatch",
                        "summary": "Dispatch control: pause, capacity, queue (CONTRACT §7); "
                        "every robot combined (§3)",
                        "security": [{"bearerAuth": []}],
                        "responses": {
                            "200": {"description": "the state", **dispatch_answer},
                            **_common_errors(401, 503),
                        },
                    }
                },
                "/api/dispatch/pause": {
                    "post": {
                        "operationId": "pauseDispatch",
                        "summary": "Pause every robot's dispatching (again: replace reason, until)",
                        "security": [{"bearerAuth": []}],
                        "requestBody": {"required": True, "content": _json(_ref("PauseRequest"))},
                        "responses": {
                            "200": {"description": "paused", **dispatch_answer},
                            **_common_errors(400, 401, 413, 415, 422, 503),
                        },
                    }
                },
                "/api/dispatch/resume": {
                    "post": {
                        "operationId": "resumeDispatch",
                        "summary": "Resume every robot; the next waiting jobs go at once",
                        "security": [{"bearerAuth": []}],
                        "responses": {
                            "200": {"description": "resumed", **dispatch_answer},
                            **_common_errors(401, 503),
                        },
                    }
                },
                "/api/robots": {
                    "get": {
                        "operationId": "listRobots",
                        "summary": "Every robot's state and hours, in the order of ROBOTS",
                        "security": [{"bearerAuth": []}],
                        "responses": {
                            "200": {"description": "the robots", **robot_list_answer},
                            **_common_errors(401, 503),
                        },
                    }
                },
                "/api/robots/{name}": {
                    "get": {
                        "operationId": "readRobot",
                        "summary": "One robot's state and hours",
                        "security": [{"bearerAuth": []}],
                        "parameters": [robot_parameter],
                        "responses": {
                            "200": {"description": "the robot", **robot_answer},
                            **_common_errors(401, 404, 503),
                        },
                    }
                },
                "/api/robots/{name}/pause": {
                    "post": {
                        "operationId": "pauseRobot",
                        "summary": "Pause this robot's dispatching (again: replace reason, until)",
                        "security": [{"bearerAuth": []}],
                        "parameters": [robot_parameter],
                        "requestBody": {"required": True, "content": _json(_ref("PauseRequest"))},
                        "responses": {
                            "200": {"description": "paused", **robot_answer},
                            **_common_errors(400, 401, 404, 413, 415, 422, 503),
                        },
                    }
                },
                "/api/robots/{name}/resume": {
                    "post": {
                        "operationId": "resumeRobot",
                        "summary": "Resume this robot's dispatching; its next jobs go at once",
                        "security": [{"bearerAuth": []}],
                        "parameters": [robot_parameter],
                        "responses": {
                            "200": {"description": "resumed", **robot_answer},
                            **_common_errors(401, 404, 503),
                        },
                    }
                },
                "/api/robot/jobs/{job_id}/events": {
                    "post": {
                        "operationId": "robotEvent",
                        "summary": "A signed event from the robot (Standard Webhooks)",
                        "security": [],
                        "parameters": [_job_id_parameter(), *webhook_headers],
                        "requestBody": {"required": True, "content": _json(_ref("RobotEvent"))},
                        "responses": {
                            "200": {
                                "description": "applied, duplicate or late",
                                "content": _json(_ref("EventAnswer")),
                            },
                            **_common_errors(400, 401, 404, 409, 413, 422, 503),
                        },
                    }
                },
                "/metrics": {
                    "get": {
                        "operationId": "metrics",
                        "summary": "Prometheus metrics (text exposition format)",
                        "responses": {
                            "200": {
                                "description": "every metric, in Prometheus' text format",
                                "content": {"text/plain": {"schema": {"type": "string"}}},
                            },
                            **_common_errors(401, 503),
                        },
                    }
                },
                "/healthz": {
                    "get": {
                        "operationId": "health",
                        "summary": "Database and Redis answer",
                        "security": [],
                        "responses": {
                            "200": {"description": "healthy", "content": _json(_ref("Health"))},
                            "503": {"description": "unhealthy", "content": _json(_ref("Health"))},
                        },
                    }
                },
            }
        ),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "one of API_TOKENS",
                }
            },
            "schemas": _schemas(settings),
        },
    }


def init_app(app: Flask) -> None:
    """Serve the document at ``/openapi.json`` (no authentication: it holds no secret)."""

    def openapi_json() -> ResponseReturnValue:
        return jsonify(build_document(orchestrator().settings))

    app.add_url_rule("/openapi.json", "openapi", openapi_json, methods=["GET"])
