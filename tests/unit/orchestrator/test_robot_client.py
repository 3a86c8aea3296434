"""The one dispatch request (CONTRACT §4), against a real loopback HTTP server that obeys."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from orchestrator.config import load_settings
from orchestrator.lifecycle import DispatchTicket
from orchestrator.robot_client import (
    DispatchAccepted,
    DispatchAmbiguous,
    DispatchRefused,
    dispatch,
)
from orchestrator.signing import job_callback_secret

PUBLIC_URL = "https://orchestrator.example.test"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeRobot:
    """Records every request; answers ``status`` (with ``headers``), or hangs, closes, resets."""

    status: int = 202
    headers: dict[str, str] = field(default_factory=dict)
    behaviour: str = "answer"  # answer | hang | close | reset
    requests: list[Recorded] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        robot = self.server.robot
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        robot.requests.append(Recorded("POST", self.path, dict(self.headers.items()), body))
        self.close_connection = True
        if robot.behaviour == "hang":
            robot.release.wait(timeout=10)
            return
        if robot.behaviour in ("close", "reset"):
            if robot.behaviour == "reset":
                # Linger 0: close() sends RST instead of FIN.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            self.connection.close()
            return
        self.send_response(robot.status)
        for name, value in robot.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads
    robot: FakeRobot


@pytest.fixture
def robot() -> Iterator[FakeRobot]:
    fake = FakeRobot()
    server = _Server(("127.0.0.1", 0), _Handler)
    server.robot = fake
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def ticket() -> DispatchTicket:
    return DispatchTicket(
        job_id=str(uuid.uuid4()),
        deadline=datetime(2026, 11, 25, 18, 30, 15, tzinfo=UTC),
        items=[
            {
                "itemId": str(uuid.uuid4()),
                "orderId": "ORD-1001",
                "pedidoInput": {"ciudad": "Cúcuta"},
            },
            {"itemId": str(uuid.uuid4()), "orderId": "ORD-1002", "pedidoInput": {}},
        ],
    )


@pytest.fixture
def settings_for(make_settings):
    def build(robot: FakeRobot, **overrides: Any):
        values = {
            "robot_url": robot.url,
            "public_url": PUBLIC_URL,
            "robot_callback_secret": "master-s3cr3t",
            "robot_api_token": "robot-token-s3cr3t",
            "robot_dispatch_timeout_seconds": 0.3,
        }
        return make_settings(**{**values, **overrides})

    return build


def assert_no_secret(exc: Exception, settings) -> None:
    text = str(exc)
    for secret in settings.secrets():
        assert secret not in text


# --- accepted ---


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_any_2xx_is_accepted(robot, ticket, settings_for, status):
    robot.status = status
    assert dispatch(ticket, settings_for(robot)) == DispatchAccepted(status)
    assert len(robot.requests) == 1


def test_request_carries_the_headers_and_body_of_the_contract(robot, ticket, settings_for):
    settings = settings_for(robot)
    dispatch(ticket, settings)

    [request] = robot.requests
    assert request.path == "/api/v1/jobs"
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["content-type"] == "application/json"
    assert headers["idempotency-key"] == ticket.job_id
    assert headers["authorization"] == "Bearer robot-token-s3cr3t"

    body = json.loads(request.body)
    assert set(body) == {"jobId", "callbackUrl", "callbackSecret", "deadline", "items"}
    assert body["jobId"] == ticket.job_id
    assert body["callbackUrl"] == f"{PUBLIC_URL}/api/robot/jobs/{ticket.job_id}/events"
    assert body["callbackSecret"].startswith("whsec_")
    assert body["callbackSecret"] == job_callback_secret("master-s3cr3t", ticket.job_id)
    deadline = datetime.fromisoformat(body["deadline"])
    assert deadline == ticket.deadline and deadline.utcoffset() is not None
    assert body["items"] == ticket.items


@pytest.mark.parametrize("token", [None, ""])
def test_no_authorization_header_without_a_robot_token(robot, ticket, settings_for, token):
    dispatch(ticket, settings_for(robot, robot_api_token=token))
    [request] = robot.requests
    assert "authorization" not in {k.lower() for k in request.headers}


def test_callback_url_has_no_double_slash_when_public_url_ends_with_one(robot, ticket):
    settings = load_settings(
        {
            "ROBOT_URL": robot.url,
            "PUBLIC_URL": PUBLIC_URL + "/",
            "ROBOT_CALLBACK_SECRET": "master",
            "API_TOKENS": "t",
        }
    )
    dispatch(ticket, settings)
    body = json.loads(robot.requests[0].body)
    assert body["callbackUrl"] == f"{PUBLIC_URL}/api/robot/jobs/{ticket.job_id}/events"


# --- refused: the robot certainly did not take the job ---


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422, 500, 501])
def test_definite_non_2xx_is_refused(robot, ticket, settings_for, status):
    robot.status = status
    settings = settings_for(robot)
    with pytest.raises(DispatchRefused) as caught:
        dispatch(ticket, settings)
    assert str(status) in str(caught.value)
    assert_no_secret(caught.value, settings)
    assert len(robot.requests) == 1


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_refused_and_never_followed(robot, ticket, settings_for, status):
    robot.status = status
    robot.headers = {"Location": f"{robot.url}/api/v1/jobs"}
    with pytest.raises(DispatchRefused):
        dispatch(ticket, settings_for(robot))
    assert len(robot.requests) == 1


def test_connection_refused_is_refused(ticket, settings_for):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = FakeRobot(url=f"http://127.0.0.1:{port}")
    settings = settings_for(closed)
    with pytest.raises(DispatchRefused) as caught:
        dispatch(ticket, settings)
    assert_no_secret(caught.value, settings)


# --- ambiguous: the robot may have received it ---


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_are_ambiguous(robot, ticket, settings_for, status):
    robot.status = status
    with pytest.raises(DispatchAmbiguous):
        dispatch(ticket, settings_for(robot))
    assert len(robot.requests) == 1


def test_no_answer_within_the_timeout_is_ambiguous(robot, ticket, settings_for):
    robot.behaviour = "hang"
    settings = settings_for(robot)
    began = time.monotonic()
    with pytest.raises(DispatchAmbiguous) as caught:
        dispatch(ticket, settings)
    assert time.monotonic() - began < 5  # the 0.3 s timeout was honoured, not the server's hang
    assert len(robot.requests) == 1
    assert_no_secret(caught.value, settings)


@pytest.mark.parametrize("behaviour", ["close", "reset"])
def test_connection_dropped_after_sending_is_ambiguous(robot, ticket, settings_for, behaviour):
    robot.behaviour = behaviour
    with pytest.raises(DispatchAmbiguous):
        dispatch(ticket, settings_for(robot))
    assert len(robot.requests) == 1
    assert json.loads(robot.requests[0].body)["jobId"] == ticket.job_id
