"""A real notification receiver for the tests: a threading HTTP server on loopback.

It verifies every request's Standard Webhooks signature itself, with the ``standardwebhooks``
package and the secret it was given (not with the orchestrator's code), records what it got,
and answers as told: a script of answers for the next requests, then 200.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from orchestrator.local.processes import free_port


@dataclass(frozen=True)
class Answer:
    """How to answer one request: a status, after a delay, with an optional Location."""

    status: int = 200
    delay: float = 0.0
    location: str | None = None


@dataclass
class Received:
    at: float  # time.monotonic() when the request was read
    path: str
    webhook_id: str
    verified: bool
    body: dict[str, Any] | None
    answered: int
    wall: float = field(default_factory=time.time)  # time.time() when read
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names

    @property
    def type(self) -> str | None:
        return (self.body or {}).get("type")

    @property
    def job_id(self) -> str | None:
        data = (self.body or {}).get("data") or {}
        return data.get("id")


class Receiver:
    """Start with ``start()``; ``url`` is what NOTIFY_URL should be."""

    def __init__(self, secret: str, port: int | None = None, path: str = "/hooks/orchestrator"):
        self.secret = secret
        self.port = port or free_port()
        self.path = path
        self.received: list[Received] = []
        self.script: list[Answer] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def answer_next(self, *answers: Answer) -> None:
        """Answer the next requests so, in order (then 200 again)."""
        with self._lock:
            self.script = list(answers)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused until ``start()`` again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        try:
            Webhook(self.secret).verify(raw, headers)
            verified = True
        except (WebhookVerificationError, ValueError):
            verified = False
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self._lock:
            answer = self.script.pop(0) if self.script else Answer()
        record = Received(
            time.monotonic(),
            handler.path,
            headers.get("webhook-id", ""),
            verified,
            body,
            answer.status,
            headers=headers,
        )
        with self._lock:
            self.received.append(record)
        if answer.delay:
            time.sleep(answer.delay)
        try:
            handler.send_response(answer.status)
            if answer.location:
                handler.send_header("Location", answer.location)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        except OSError:
            pass  # the sender gave up waiting (a timeout): nothing to answer to

    # --- what arrived ---

    def for_job(self, job_id: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.job_id == job_id]

    def delivered(self, job_id: str, type: str = "job.finished") -> Received | None:
        """The first request of that type for the job answered 2xx, if any."""
        for record in self.for_job(job_id):
            if record.type == type and 200 <= record.answered < 300:
                return record
        return None

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.received]
