"""One JSON error envelope for every error the HTTP edge answers (CONTRACT §3)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException, SecurityError

log = logging.getLogger(__name__)

_CODES = {
    400: "malformed_json",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "too_many_requests",
    503: "unavailable",
}


class ApiError(Exception):
    """An error answer: HTTP status, snake_case code, a message for a person, details."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.details = details or {}
        self.headers = headers or {}  # sent with the answer (a 429's Retry-After)


def error_response(err: ApiError) -> ResponseReturnValue:
    body = {"error": {"code": err.code, "message": err.message, "details": err.details}}
    return jsonify(body), err.status


def init_app(app: Flask | Blueprint) -> None:
    """Answer every error, expected or not, with the envelope and never a stack trace.

    On a blueprint (a host app embedding the callback endpoint) only its routes are covered.
    """

    @app.errorhandler(ApiError)
    def _api_error(err: ApiError) -> ResponseReturnValue:
        body, status = error_response(err)  # type: ignore[misc]
        return body, status, err.headers

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> ResponseReturnValue:
        status = err.code or 500
        message = err.description or err.name
        if status == 413:
            message = "the request body is larger than MAX_BODY_BYTES"
        error = ApiError(status, message)
        if isinstance(err, SecurityError):  # a Host header outside TRUSTED_HOSTS
            error = ApiError(400, "this server does not answer for that Host", "untrusted_host")
        body, code = error_response(error)
        # A 405 must say what is allowed (RFC 9110): keep the exception's Allow header.
        allow = [(k, v) for k, v in err.get_headers() if k.lower() == "allow"]
        return body, code, allow

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def _database_down(err: Exception) -> ResponseReturnValue:
        # Nothing was committed: the client (or the robot) can safely retry.
        log.warning("database unavailable: %s", type(err).__name__)
        return error_response(ApiError(503, "the database is unavailable; retry later"))

    # The outermost edge: any other exception becomes an opaque 500, logged with its trace.
    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> ResponseReturnValue:
        log.exception("unhandled error")
        return error_response(ApiError(500, "internal error; see the server log", "internal_error"))
