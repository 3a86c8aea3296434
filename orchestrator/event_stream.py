"""Follow a job's live stream (CONTRACT §13) with ``requests``: a small server-sent events client.

``follow_job`` yields the job each time the server sends it, until it is final; a dropped
connection is opened again (the server sends the current job first, so nothing is lost),
with the ``Last-Event-ID`` of the last state seen.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import requests

FINAL = ("completed", "failed", "cancelled")
# The server sends a comment at least every 15 s: a silence this long means a dead connection.
READ_TIMEOUT_SECONDS = 60.0
_DROPPED = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class StreamRefused(Exception):
    """The server answered the stream with an error (401, 404, …): reconnecting cannot help."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


@dataclass
class Event:
    """One server-sent event."""

    type: str = "message"
    data: str = ""
    id: str | None = None
    retry_ms: int | None = None
    lines: list[str] = field(default_factory=list)


def parse_events(lines: Iterator[str]) -> Iterator[Event]:
    """Turn a stream's lines into events (the HTML standard's rules, comments skipped)."""
    event = Event()
    for line in lines:
        if line == "":
            if event.lines:
                event.data = "\n".join(event.lines)
                yield event
            retry = event.retry_ms
            event = Event(retry_ms=retry)
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event.type = value
        elif name == "data":
            event.lines.append(value)
        elif name == "id":
            event.id = value
        elif name == "retry" and value.isdigit():
            event.retry_ms = int(value)


def follow_job(
    http: requests.Session,
    base_url: str,
    job_id: str,
    *,
    reconnects: int = 5,
    read_timeout: float = READ_TIMEOUT_SECONDS,
) -> Iterator[dict[str, Any]]:
    """Yield the job as the server sends it, until it is final.

    ``http`` carries the ``Authorization`` header. A connection that drops (or ends before
    the final state) is opened again up to ``reconnects`` times in a row; an error answer
    raises StreamRefused; a network failure past the reconnects raises requests' error.
    """
    url = f"{base_url.rstrip('/')}/api/jobs/{job_id}/stream"
    last_id: str | None = None
    delay = 1.0
    failures = 0
    while True:
        headers = {"Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        try:
            with http.get(url, headers=headers, stream=True, timeout=(10, read_timeout)) as answer:
                if answer.status_code == 204:  # we hold the final state already
                    return
                if answer.status_code != 200:
                    try:
                        body = answer.json()
                    except ValueError:
                        body = answer.text
                    raise StreamRefused(answer.status_code, body)
                lines = answer.iter_lines(chunk_size=None, decode_unicode=True)
                for event in parse_events(lines):
                    if event.retry_ms is not None:
                        delay = event.retry_ms / 1000
                    if event.type != "job":
                        continue
                    failures = 0
                    last_id = event.id
                    job = json.loads(event.data)
                    yield job
                    if job["status"] in FINAL:
                        return
        except _DROPPED:
            if failures >= reconnects:
                raise
        else:
            if failures >= reconnects:
                raise requests.ConnectionError("the stream kept ending before the job was final")
        failures += 1
        time.sleep(delay)
