"""The server-sent events client of the CLI and the docs (orchestrator.event_stream)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from orchestrator.event_stream import StreamRefused, follow_job, parse_events


def test_events_are_parsed_as_the_html_standard_says():
    lines = [
        "retry: 2000",
        "id: a1",
        "event: job",
        'data: {"status":',
        'data:  "pending"}',
        "",
        ": keep-alive",
        "",
        "data: plain",
        "",
    ]
    events = list(parse_events(iter(lines)))
    assert [(e.type, e.id, e.data, e.retry_ms) for e in events] == [
        ("job", "a1", '{"status":\n "pending"}', 2000),
        ("message", None, "plain", 2000),
    ]


def event(job_id: str, status: str, n: int) -> str:
    return f"id: e{n}\nevent: job\ndata: {json.dumps({'id': job_id, 'status': status})}\n\n"


@pytest.fixture
def server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A stream that drops after its first event once, then serves the rest."""
    seen: list[dict[str, str]] = []

    @Request.application
    def app(request: Request) -> Response:
        seen.append(dict(request.headers))
        if "missing" in request.path:
            return Response('{"error": {"code": "not_found"}}', 404, mimetype="application/json")
        if len(seen) == 1:
            body = ["retry: 10\n\n", event("j", "pending", 1)]  # then the connection ends
        else:
            body = [event("j", "processing", 2), ": keep-alive\n\n", event("j", "completed", 3)]
        return Response(iter(body), mimetype="text/event-stream")

    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{http.server_port}", seen
    http.shutdown()
    http.server_close()
    thread.join()


def test_a_dropped_stream_is_opened_again_with_the_last_event_id(server):
    url, seen = server
    with requests.Session() as http:
        states = [job["status"] for job in follow_job(http, url, "j")]
    assert states == ["pending", "processing", "completed"]
    assert len(seen) == 2
    assert "Last-Event-Id" not in seen[0]
    assert seen[1]["Last-Event-Id"] == "e1"


def test_an_error_answer_is_raised_not_retried(server):
    url, seen = server
    with requests.Session() as http, pytest.raises(StreamRefused) as refused:
        list(follow_job(http, url, "missing"))
    assert refused.value.status == 404
    assert len(seen) == 1
