"""gunicorn's gevent worker, with its own error answers in the JSON envelope (CONTRACT §3).

gunicorn refuses some requests before the app sees them — a request line over 4,094 bytes
(414), more than 100 headers or one over 8,190 bytes (431), a request that is not HTTP (400)
— and answers them with an HTML page (``gunicorn.util.write_error``, called from
``Worker.handle_error`` only). This worker keeps everything else of ``handle_error``: which
error is the client's, the log line, the access line. Only the page it writes is replaced
by the error envelope of ``webapp/errors.py``. No Flask here: gunicorn's master imports this.
"""

from __future__ import annotations

import json
from typing import Any

from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker

# Codes and messages of what gunicorn itself answers (its reasons are HTTP's own phrases).
SERVER_ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "the request is not valid HTTP"),
    403: ("forbidden", "the request is forbidden"),
    414: ("request_line_too_long", "the request line is longer than 4094 bytes"),
    417: ("expectation_failed", "the Expect header cannot be met"),
    431: (
        "headers_too_large",
        "the request has more than 100 headers, or one longer than 8190 bytes",
    ),
    500: ("internal_error", "the server failed to answer; nothing was applied"),
    501: ("not_implemented", "the request uses a transfer coding the server does not support"),
}


def error_answer(status: int, reason: str) -> bytes:
    """Return the whole HTTP answer gunicorn sends for an error of its own, as JSON."""
    code, message = SERVER_ERRORS.get(status, ("error", reason.lower()))
    # gunicorn's own text (``mesg``) can quote what the client sent: it is not echoed.
    body = json.dumps({"error": {"code": code, "message": message, "details": {}}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """``gunicorn.util.write_error``'s signature, writing the JSON envelope."""
    util.write_nonblock(sock, error_answer(status_int, reason))


class JsonErrorWorker(GeventWorker):  # type: ignore[misc]
    """The gevent worker (docs/security.md, slow clients) answering its own errors in JSON."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: Exception) -> None:
        # handle_error writes its page through util.write_error, looked up at each call.
        util.write_error = write_json_error
        super().handle_error(req, client, addr, exc)
