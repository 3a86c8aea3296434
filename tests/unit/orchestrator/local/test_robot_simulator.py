"""Exercise the robot simulator over real loopback HTTP against a recording callback receiver."""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest
import requests
from standardwebhooks import Webhook
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from orchestrator.local.robot_simulator import SimulatorConfig, SimulatorServer

ROOT = Path(__file__).resolve().parents[4]


def wait_for(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll condition until it returns something truthy, failing after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    arrived: float = field(default_factory=time.monotonic)

    @property
    def event(self) -> dict[str, Any]:
        """Return the parsed JSON event."""
        return json.loads(self.body)

    @property
    def type(self) -> str:
        """Return the event type."""
        return str(self.event["type"])

    @property
    def msg_id(self) -> str:
        """Return the webhook-id header."""
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    """Record every callback request; answer with queued statuses, then 200."""

    timeline: list[Any] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        """Handle one WSGI request."""
        req = Request(environ)
        body = req.get_data()
        with self.lock:
            status = self.statuses.pop(0) if self.statuses else 200
            headers = {k.lower(): v for k, v in req.headers.items()}
            self.timeline.append(Received(req.path, headers, body, status))
        return Response("{}", status=status, mimetype="application/json")(environ, start_response)

    @property
    def requests(self) -> list[Received]:
        """Return the recorded requests, in arrival order."""
        with self.lock:
            return [r for r in self.timeline if isinstance(r, Received)]

    def types(self) -> list[str]:
        """Return the event types received, in order."""
        return [r.type for r in self.requests]

    def mark(self, label: str) -> None:
        """Add a marker to the timeline."""
        with self.lock:
            self.timeline.append(label)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """Run a callback receiver on a free loopback port."""
    recv = Receiver()
    server = make_server("127.0.0.1", 0, recv, threaded=True)
    recv.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield recv
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def make_sim() -> Iterator[Callable[..., SimulatorServer]]:
    """Start simulators with the given options; stop them all afterwards."""
    started: list[SimulatorServer] = []

    def start(**options: Any) -> SimulatorServer:
        options = {"item_delay": 0.01, "retry_backoff": (0.05,), "seed": 7, **options}
        server = SimulatorServer(SimulatorConfig(port=0, **options)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """Give a session that is closed afterwards."""
    with requests.Session() as session:
        session.trust_env = False
        yield session


def new_secret() -> str:
    """Return a fresh Standard Webhooks secret."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def job_body(receiver: Receiver, items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Build a dispatch body per CONTRACT §4."""
    job_id = str(uuid.uuid4())
    if items is None:
        items = [{"itemId": "i1", "orderId": "ORD-1", "pedidoInput": {"city": "Cali"}}]
    return {
        "jobId": job_id,
        "callbackUrl": f"{receiver.url}/api/robot/jobs/{job_id}/events",
        "callbackSecret": new_secret(),
        "deadline": "2030-01-01T00:00:00Z",
        "items": items,
    }


class HasUrl(Protocol):
    """Anything with a base URL, like SimulatorServer."""

    @property
    def url(self) -> str:
        """Return the base URL."""
        ...


def dispatch(http: requests.Session, sim: HasUrl, body: Any, **headers: str) -> requests.Response:
    """POST a dispatch the way the orchestrator does."""
    key = body.get("jobId", "") if isinstance(body, dict) else ""
    return http.post(
        f"{sim.url}/api/v1/jobs",
        json=body,
        headers={"Idempotency-Key": key, **headers},
        allow_redirects=False,
        timeout=10,
    )


def stats(http: requests.Session, sim: SimulatorServer) -> dict[str, Any]:
    """Fetch /_sim/stats."""
    return http.get(f"{sim.url}/_sim/stats", timeout=5).json()


def settled(http: requests.Session, sim: SimulatorServer) -> dict[str, Any]:
    """Wait until no job is running and return the stats."""
    return wait_for(lambda: (s := stats(http, sim))["activeJobs"] == 0 and s, what="idle")


def assert_signed(receiver: Receiver, secret: str) -> None:
    """Verify every received event against the job's secret."""
    assert receiver.requests
    for received in receiver.requests:
        assert received.headers["content-type"] == "application/json"
        assert re.fullmatch(r"msg_[0-9a-f]{32}", received.msg_id)
        assert Webhook(secret).verify(received.body, received.headers) == received.event


def test_happy_path_reports_each_item_then_the_batch(make_sim, receiver, http) -> None:
    sim = make_sim()
    items = [
        {"itemId": "a", "orderId": "ORD-1", "pedidoInput": {}},
        {"itemId": "b", "orderId": "ORD-2", "pedidoInput": {"_simulate": "fail"}},
        {"itemId": "c", "orderId": "ORD-3", "pedidoInput": {}},
    ]
    body = job_body(receiver, items)
    response = dispatch(http, sim, body)
    assert response.status_code == 202
    assert response.json() == {"accepted": True, "jobId": body["jobId"]}
    wait_for(lambda: "robot.batch.completed" in receiver.types(), what="batch.completed")

    events = [r.event for r in receiver.requests]
    assert [(e["type"], e["data"].get("itemId")) for e in events[:-1]] == [
        ("robot.item.started", "a"),
        ("robot.item.completed", "a"),
        ("robot.item.started", "b"),
        ("robot.item.completed", "b"),
        ("robot.item.started", "c"),
        ("robot.item.completed", "c"),
    ]
    results = [e["data"] for e in events if e["type"] == "robot.item.completed"]
    assert re.fullmatch(r"CO\d{10}", results[0]["trackingNumber"])
    assert results[0]["status"] == results[2]["status"] == "success"
    assert results[1] == {"itemId": "b", "status": "error", "error": "portal rejected the address"}
    assert events[-1] == {"type": "robot.batch.completed", "data": {"items": results}}
    assert {r.path for r in receiver.requests} == {f"/api/robot/jobs/{body['jobId']}/events"}
    assert len({r.msg_id for r in receiver.requests}) == 7
    assert_signed(receiver, body["callbackSecret"])
    with pytest.raises(Exception, match="signature"):
        Webhook(new_secret()).verify(receiver.requests[0].body, receiver.requests[0].headers)

    final = settled(http, sim)
    assert final["dispatches"] == {body["jobId"]: 1}
    assert final["totalDispatches"] == 1
    assert final["idempotencyKeys"] == {body["jobId"]: body["jobId"]}
    assert final["orders"] == {body["jobId"]: [item["orderId"] for item in body["items"]]}
    assert final["eventsSent"] == 7
    assert final["eventsFailed"] == 0


def test_skipped_item_is_never_reported_and_batch_items_can_be_empty(
    make_sim, receiver, http
) -> None:
    sim = make_sim(batch_items=False)
    items = [
        {"itemId": "a", "orderId": "ORD-1", "pedidoInput": {"_simulate": "skip"}},
        {"itemId": "b", "orderId": "ORD-2", "pedidoInput": {}},
    ]
    assert dispatch(http, sim, job_body(receiver, items)).status_code == 202
    settled(http, sim)
    assert all(r.event["data"].get("itemId") != "a" for r in receiver.requests)
    assert receiver.types() == [
        "robot.item.started",
        "robot.item.completed",
        "robot.batch.completed",
    ]
    assert receiver.requests[-1].event["data"] == {"items": []}


def test_failure_rate_one_fails_every_item(make_sim, receiver, http) -> None:
    sim = make_sim(failure_rate=1.0)
    items = [{"itemId": f"i{n}", "orderId": f"O{n}", "pedidoInput": {}} for n in range(3)]
    assert dispatch(http, sim, job_body(receiver, items)).status_code == 202
    settled(http, sim)
    batch = receiver.requests[-1].event
    assert batch["type"] == "robot.batch.completed"
    assert [r["status"] for r in batch["data"]["items"]] == ["error"] * 3


def test_duplicate_dispatch_is_counted_but_runs_once(make_sim, receiver, http) -> None:
    sim = make_sim()
    body = job_body(receiver)
    assert dispatch(http, sim, body).status_code == 202
    second = dispatch(http, sim, body)
    assert second.status_code == 200
    assert second.json()["duplicate"] is True
    final = settled(http, sim)
    assert final["dispatches"] == {body["jobId"]: 2}
    assert final["jobsAccepted"] == 1
    assert receiver.types() == [
        "robot.item.started",
        "robot.item.completed",
        "robot.batch.completed",
    ]


@pytest.mark.parametrize(
    ("mode", "status"), [("http_500", 500), ("http_503", 503), ("http_400", 400)]
)
def test_refusal_modes_answer_the_status_and_send_nothing(
    make_sim, receiver, http, mode, status
) -> None:
    sim = make_sim(mode=mode)
    body = job_body(receiver)
    assert dispatch(http, sim, body).status_code == status
    final = stats(http, sim)
    assert final["dispatches"] == {body["jobId"]: 1}
    assert final["jobsAccepted"] == 0
    assert final["activeJobs"] == 0
    assert receiver.requests == []


def test_duplicates_mode_repeats_each_event(make_sim, receiver, http) -> None:
    sim = make_sim(mode="duplicates")
    body = job_body(receiver)
    assert dispatch(http, sim, body).status_code == 202
    settled(http, sim)
    started = [r for r in receiver.requests if r.type == "robot.item.started"]
    assert len(started) == 3
    assert started[0].msg_id == started[1].msg_id != started[2].msg_id
    assert started[0].body == started[1].body == started[2].body
    assert receiver.types().count("robot.batch.completed") == 3
    assert_signed(receiver, body["callbackSecret"])


def test_finish_before_answer_sends_everything_before_the_response(
    make_sim, receiver, http
) -> None:
    sim = make_sim(mode="finish_before_answer")
    body = job_body(receiver)
    response = dispatch(http, sim, body)
    receiver.mark("dispatch answered")
    assert response.status_code == 202
    order = [x if isinstance(x, str) else x.type for x in receiver.timeline]
    assert order == [
        "robot.item.started",
        "robot.item.completed",
        "robot.batch.completed",
        "dispatch answered",
    ]


def test_never_finish_and_batch_failed_modes(make_sim, receiver, http) -> None:
    sim = make_sim(mode="never_finish")
    items = [{"itemId": f"i{n}", "orderId": f"O{n}", "pedidoInput": {}} for n in range(2)]
    assert dispatch(http, sim, job_body(receiver, items)).status_code == 202
    settled(http, sim)
    assert receiver.types() == ["robot.item.started"]

    http.post(f"{sim.url}/_sim/config", json={"mode": "batch_failed"}, timeout=5)
    body = job_body(receiver, items)
    assert dispatch(http, sim, body).status_code == 202
    settled(http, sim)
    assert receiver.types() == ["robot.item.started", "robot.item.started", "robot.batch.failed"]
    assert receiver.requests[-1].event["data"] == {"error": "portal unavailable"}


def test_redirect_not_json_and_slow_answer_modes(make_sim, receiver, http) -> None:
    sim = make_sim(mode="redirect_307", answer_delay=0.3)
    body = job_body(receiver)
    response = dispatch(http, sim, body)
    assert response.status_code == 307
    assert response.headers["Location"].endswith("/api/v1/jobs")
    assert stats(http, sim)["dispatches"] == {body["jobId"]: 1}

    http.post(f"{sim.url}/_sim/config", json={"mode": "not_json_2xx"}, timeout=5)
    response = dispatch(http, sim, body)
    assert (response.status_code, response.text) == (200, "ok")
    assert response.headers["Content-Type"].startswith("text/plain")
    wait_for(lambda: "robot.batch.completed" in receiver.types(), what="batch.completed")

    http.post(f"{sim.url}/_sim/config", json={"mode": "slow_answer"}, timeout=5)
    began = time.monotonic()
    assert dispatch(http, sim, job_body(receiver)).status_code == 202
    assert time.monotonic() - began >= 0.3


def test_token_is_required_when_configured(make_sim, receiver, http) -> None:
    sim = make_sim(token="s3cret-token")
    body = job_body(receiver)
    assert dispatch(http, sim, body).status_code == 401
    assert dispatch(http, sim, body, Authorization="Bearer wrong").status_code == 401
    assert dispatch(http, sim, body, Authorization="Bearer s3cret-token").status_code == 202
    final = settled(http, sim)
    assert final["dispatches"] == {body["jobId"]: 3}
    assert final["config"]["token"] == "***"
    assert "s3cret-token" not in json.dumps(final)


def test_malformed_dispatches_are_rejected(make_sim, receiver, http) -> None:
    sim = make_sim()
    url = f"{sim.url}/api/v1/jobs"
    assert http.post(url, data=b"{not json", timeout=5).status_code == 400
    body = job_body(receiver)
    del body["callbackUrl"]
    response = dispatch(http, sim, body)
    assert response.status_code == 400
    assert "callbackUrl" in response.json()["error"]["details"]
    bad_secret = {**job_body(receiver), "callbackSecret": "plain"}
    assert dispatch(http, sim, bad_secret).status_code == 400
    bad_item = job_body(receiver, [{"itemId": "x"}])
    assert dispatch(http, sim, bad_item).status_code == 400
    assert stats(http, sim)["jobsAccepted"] == 0


def test_runtime_config_changes_mode_and_reset_clears_stats(make_sim, receiver, http) -> None:
    sim = make_sim()
    answer = http.post(f"{sim.url}/_sim/config", json={"mode": "http_503"}, timeout=5)
    assert answer.status_code == 200
    assert answer.json()["mode"] == "http_503"
    assert dispatch(http, sim, job_body(receiver)).status_code == 503
    assert stats(http, sim)["config"]["mode"] == "http_503"
    for bad in ({"mode": "nope"}, {"workers": 3}, {"failure_rate": 2}, {"item_delay": True}):
        assert http.post(f"{sim.url}/_sim/config", json=bad, timeout=5).status_code == 400
    http.post(f"{sim.url}/_sim/config", json={"mode": "normal"}, timeout=5)
    assert dispatch(http, sim, job_body(receiver)).status_code == 202
    settled(http, sim)
    assert http.post(f"{sim.url}/_sim/reset", timeout=5).status_code == 200
    cleared = stats(http, sim)
    assert (cleared["totalDispatches"], cleared["dispatches"], cleared["eventsSent"]) == (0, {}, 0)
    assert http.get(f"{sim.url}/healthz", timeout=5).status_code == 200


def test_callback_is_retried_with_the_same_webhook_id_after_503(make_sim, receiver, http) -> None:
    receiver.statuses = [503]
    sim = make_sim()
    body = job_body(receiver)
    assert dispatch(http, sim, body).status_code == 202
    final = settled(http, sim)
    first, retry = receiver.requests[:2]
    assert (first.status, retry.status) == (503, 200)
    assert first.msg_id == retry.msg_id
    assert first.body == retry.body
    assert receiver.types() == [
        "robot.item.started",
        "robot.item.started",
        "robot.item.completed",
        "robot.batch.completed",
    ]
    assert_signed(receiver, body["callbackSecret"])
    assert (final["eventsSent"], final["eventsFailed"]) == (3, 0)


def test_callback_4xx_is_not_retried(make_sim, receiver, http) -> None:
    receiver.statuses = [400]
    sim = make_sim()
    assert dispatch(http, sim, job_body(receiver)).status_code == 202
    final = settled(http, sim)
    assert receiver.types() == [
        "robot.item.started",
        "robot.item.completed",
        "robot.batch.completed",
    ]
    assert (final["eventsSent"], final["eventsFailed"]) == (2, 1)


def test_stop_does_not_wait_for_sleeping_jobs(receiver, http) -> None:
    sim = SimulatorServer(SimulatorConfig(item_delay=30)).start()
    try:
        assert dispatch(http, sim, job_body(receiver)).status_code == 202
        wait_for(lambda: receiver.types() == ["robot.item.started"], what="item.started")
    finally:
        began = time.monotonic()
        sim.stop()
    assert time.monotonic() - began < 3


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """Read one stdout line from proc, failing after timeout seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        pytest.fail("simulator printed nothing")
    return proc.stdout.readline().decode()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_main_prints_the_bound_port_and_exits_cleanly_on_signal(
    tmp_path, receiver, http, signum
) -> None:
    log_file = tmp_path / "sim.log"
    env = {**os.environ, "ROBOT_API_TOKEN": "tok-do-not-log"}
    command = [sys.executable, "-m", "orchestrator.local.robot_simulator", "--port", "0"]
    command += ["--item-delay", "0"]
    with (
        log_file.open("wb") as log,
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log) as proc,
    ):
        try:
            line = read_line(proc, timeout=15)
            match = re.fullmatch(
                r"robot simulator listening on (http://127\.0\.0\.1:(\d+))\n", line
            )
            assert match, line
            assert int(match.group(2)) != 0
            sim = SimpleNamespaceUrl(match.group(1))
            body = job_body(receiver)
            assert dispatch(http, sim, body).status_code == 401
            answer = dispatch(http, sim, body, Authorization="Bearer tok-do-not-log")
            assert answer.status_code == 202
            wait_for(lambda: "robot.batch.completed" in receiver.types(), what="batch")
            proc.send_signal(signum)
            assert proc.wait(timeout=5) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log_file.read_text()
    assert body["jobId"] in output
    assert "tok-do-not-log" not in output
    assert body["callbackSecret"] not in output
    assert body["callbackSecret"].removeprefix("whsec_") not in output


@dataclass
class SimpleNamespaceUrl:
    """Stand in for a SimulatorServer where only .url is used."""

    url: str


def items_of(count: int, prefix: str = "i") -> list[dict[str, Any]]:
    """Return count dispatch items."""
    return [
        {"itemId": f"{prefix}{n}", "orderId": f"O-{prefix}{n}", "pedidoInput": {}}
        for n in range(count)
    ]


def batches_in_report_order(receiver: Receiver) -> list[str]:
    """Return the job ids of the batch reports received, in order."""
    return [r.path.split("/")[-2] for r in receiver.requests if r.type.startswith("robot.batch.")]


def test_browsers_work_at_most_k_batches_and_queue_the_rest(make_sim, receiver, http) -> None:
    sim = make_sim(browsers=2, item_delay=0.3)
    bodies = [job_body(receiver, items_of(3)) for _ in range(5)]
    for body in bodies:
        assert dispatch(http, sim, body).status_code == 202
    held = wait_for(
        lambda: (s := stats(http, sim))["workingJobs"] == 2 and s["queuedJobs"] == 3 and s,
        what="two batches at work, three waiting",
    )
    assert (held["jobsAccepted"], held["heldJobs"], held["activeJobs"]) == (5, 5, 5)
    final = settled(http, sim)
    assert final["maxWorkingJobs"] == 2
    assert final["maxHeldJobs"] == 5
    assert (final["heldJobs"], final["queuedJobs"], final["workingJobs"]) == (0, 0, 0)
    assert final["dispatches"] == {b["jobId"]: 1 for b in bodies}
    assert sorted(batches_in_report_order(receiver)) == sorted(b["jobId"] for b in bodies)


def test_a_queued_batch_reports_nothing_until_a_browser_takes_it(make_sim, receiver, http) -> None:
    sim = make_sim(browsers=1, item_delay=0.05)
    first, second = job_body(receiver, items_of(3, "a")), job_body(receiver, items_of(2, "b"))
    assert dispatch(http, sim, first).status_code == 202
    assert dispatch(http, sim, second).status_code == 202
    settled(http, sim)
    paths = [r.path for r in receiver.requests]
    last_of_first = max(i for i, p in enumerate(paths) if first["jobId"] in p)
    first_of_second = min(i for i, p in enumerate(paths) if second["jobId"] in p)
    assert last_of_first < first_of_second
    assert receiver.requests[last_of_first].type == "robot.batch.completed"
    assert stats(http, sim)["maxWorkingJobs"] == 1


def test_batches_are_taken_in_arrival_order(make_sim, receiver, http) -> None:
    sim = make_sim(browsers=1, item_delay=0.02)
    bodies = [job_body(receiver, items_of(2, f"j{n}-")) for n in range(4)]
    for body in bodies:
        assert dispatch(http, sim, body).status_code == 202
    settled(http, sim)
    assert batches_in_report_order(receiver) == [b["jobId"] for b in bodies]
    started = [r.path.split("/")[-2] for r in receiver.requests if r.type == "robot.item.started"]
    assert list(dict.fromkeys(started)) == [b["jobId"] for b in bodies]


def test_without_browsers_every_batch_is_worked_at_once(make_sim, receiver, http) -> None:
    sim = make_sim(item_delay=0.2)
    bodies = [job_body(receiver, items_of(2)) for _ in range(4)]
    for body in bodies:
        assert dispatch(http, sim, body).status_code == 202
    wait_for(lambda: stats(http, sim)["workingJobs"] == 4, what="four batches at work")
    final = settled(http, sim)
    assert (final["maxWorkingJobs"], final["maxHeldJobs"]) == (4, 4)
    assert final["config"]["browsers"] is None


def test_browsers_can_be_raised_live_and_start_waiting_batches(make_sim, receiver, http) -> None:
    sim = make_sim(browsers=1, item_delay=0.3)
    bodies = [job_body(receiver, items_of(2)) for _ in range(3)]
    for body in bodies:
        assert dispatch(http, sim, body).status_code == 202
    wait_for(lambda: stats(http, sim)["workingJobs"] == 1, what="one batch at work")
    assert stats(http, sim)["queuedJobs"] == 2
    answer = http.post(f"{sim.url}/_sim/config", json={"browsers": 3}, timeout=5)
    assert answer.status_code == 200
    assert answer.json()["browsers"] == 3
    wait_for(lambda: stats(http, sim)["workingJobs"] == 3, what="three batches at work")
    assert settled(http, sim)["maxWorkingJobs"] == 3
    for bad in ({"browsers": 0}, {"browsers": 1.5}, {"browsers": True}, {"heartbeat": 0}):
        assert http.post(f"{sim.url}/_sim/config", json=bad, timeout=5).status_code == 400
    assert http.post(f"{sim.url}/_sim/config", json={"browsers": None}, timeout=5).ok


def heartbeats(receiver: Receiver, job_id: str) -> list[Received]:
    """Return the heartbeats received for a job."""
    return [r for r in receiver.requests if r.type == "robot.heartbeat" and job_id in r.path]


def test_heartbeats_are_signed_and_sent_for_working_and_queued_jobs_until_the_report(
    make_sim, receiver, http
) -> None:
    sim = make_sim(browsers=1, item_delay=0.6, heartbeat=0.1)
    working, queued = job_body(receiver, items_of(2, "w")), job_body(receiver, items_of(1, "q"))
    assert dispatch(http, sim, working).status_code == 202
    assert dispatch(http, sim, queued).status_code == 202
    wait_for(lambda: len(heartbeats(receiver, queued["jobId"])) >= 3, what="queued heartbeats")
    assert [r.type for r in receiver.requests if queued["jobId"] in r.path] == [
        "robot.heartbeat"
    ] * len(heartbeats(receiver, queued["jobId"]))
    assert {r.event["data"]["state"] for r in heartbeats(receiver, queued["jobId"])} == {"queued"}
    assert {r.event["data"]["state"] for r in heartbeats(receiver, working["jobId"])} == {"working"}
    final = settled(http, sim)
    for body in (working, queued):
        beats = heartbeats(receiver, body["jobId"])
        assert beats
        for beat in beats:
            assert Webhook(body["callbackSecret"]).verify(beat.body, beat.headers) == beat.event
        assert len({r.msg_id for r in beats}) == len(beats)
    assert final["heartbeatsSent"] == len(
        [r for r in receiver.requests if r.type == "robot.heartbeat"]
    )
    assert final["eventsSent"] == 5 + 3  # heartbeats are counted apart
    assert final["heldJobs"] == 0

    # A job that never reports keeps beating; by its third beat the finished ones had time to.
    http.post(f"{sim.url}/_sim/config", json={"mode": "never_finish"}, timeout=5)
    alive = job_body(receiver)
    assert dispatch(http, sim, alive).status_code == 202
    wait_for(lambda: len(heartbeats(receiver, alive["jobId"])) >= 3, what="three more beats")
    for body in (working, queued):
        mine = [r for r in receiver.requests if body["jobId"] in r.path]
        assert mine[-1].type == "robot.batch.completed"  # nothing after the report


def test_heartbeats_are_spaced_by_the_interval(make_sim, receiver, http) -> None:
    sim = make_sim(mode="never_finish", heartbeat=0.2)
    body = job_body(receiver)
    began = time.monotonic()
    assert dispatch(http, sim, body).status_code == 202
    beats = wait_for(lambda: len(b := heartbeats(receiver, body["jobId"])) >= 4 and b, what="beats")
    stamps = [began, *(r.arrived for r in beats)]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(0.15 <= gap <= 1.0 for gap in gaps), gaps


def test_a_never_finishing_job_heartbeats_until_heartbeats_are_turned_off(
    make_sim, receiver, http
) -> None:
    sim = make_sim(mode="never_finish", heartbeat=0.05)
    body = job_body(receiver)
    assert dispatch(http, sim, body).status_code == 202
    settled(http, sim)  # its browser is free, but the robot still holds the job
    wait_for(lambda: len(heartbeats(receiver, body["jobId"])) >= 3, what="heartbeats")
    assert stats(http, sim)["heldJobs"] == 1
    assert {r.event["data"]["state"] for r in heartbeats(receiver, body["jobId"])} == {"stuck"}
    assert http.post(f"{sim.url}/_sim/config", json={"heartbeat": None}, timeout=5).ok
    wait_for(lambda: stats(http, sim)["heartbeatsSent"] >= 3, what="the beat on its way")
    count = len(heartbeats(receiver, body["jobId"]))
    # A normal job of three 0.1 s items lasts six intervals: time enough for beats to show.
    http.post(f"{sim.url}/_sim/config", json={"mode": "normal", "item_delay": 0.1}, timeout=5)
    assert dispatch(http, sim, job_body(receiver, items_of(3))).status_code == 202
    settled(http, sim)
    assert len(heartbeats(receiver, body["jobId"])) == count
    assert http.post(f"{sim.url}/_sim/reset", timeout=5).ok
    assert stats(http, sim)["heldJobs"] == 0


def test_heartbeats_can_be_turned_on_live(make_sim, receiver, http) -> None:
    sim = make_sim(item_delay=0.3)
    body = job_body(receiver, items_of(3))
    assert dispatch(http, sim, body).status_code == 202
    assert http.post(f"{sim.url}/_sim/config", json={"heartbeat": 0.05}, timeout=5).ok
    wait_for(lambda: heartbeats(receiver, body["jobId"]), what="a heartbeat")
    final = settled(http, sim)
    assert final["config"]["heartbeat"] == 0.05
    assert final["heartbeatsSent"] >= 1


def test_a_refused_heartbeat_is_counted_and_not_retried(make_sim, receiver, http) -> None:
    sim = make_sim(mode="never_finish", heartbeat=0.05)
    body = job_body(receiver)
    assert dispatch(http, sim, body).status_code == 202
    wait_for(lambda: stats(http, sim)["heartbeatsSent"] >= 1, what="a heartbeat")
    receiver.statuses = [422]
    wait_for(lambda: stats(http, sim)["heartbeatsFailed"] == 1, what="a refused heartbeat")
    refused = next(r for r in receiver.requests if r.status == 422)
    assert refused.type == "robot.heartbeat"
    sent = stats(http, sim)["heartbeatsSent"]
    wait_for(lambda: stats(http, sim)["heartbeatsSent"] > sent, what="the next heartbeat")
    assert sum(1 for r in receiver.requests if r.msg_id == refused.msg_id) == 1
    assert stats(http, sim)["eventsFailed"] == 0


def test_the_timeline_records_dispatch_arrivals_and_answered_reports(
    make_sim, receiver, http
) -> None:
    sim = make_sim(item_delay=0)
    before = time.time()
    bodies = [job_body(receiver) for _ in range(3)]
    for body in bodies:
        assert dispatch(http, sim, body).status_code == 202
    settled(http, sim)
    timeline = http.get(f"{sim.url}/_sim/timeline", timeout=5).json()
    assert [d["jobId"] for d in timeline["dispatches"]] == [b["jobId"] for b in bodies]
    assert sorted(r["jobId"] for r in timeline["reports"]) == sorted(b["jobId"] for b in bodies)
    assert {r["type"] for r in timeline["reports"]} == {"robot.batch.completed"}
    assert all(before <= d["at"] <= time.time() for d in timeline["dispatches"])
    arrived = {d["jobId"]: d["at"] for d in timeline["dispatches"]}
    assert all(r["at"] >= arrived[r["jobId"]] for r in timeline["reports"])
    # A browser worked each job from after its arrival until its report was answered.
    worked = {w["jobId"]: w for w in timeline["work"]}
    assert sorted(worked) == sorted(b["jobId"] for b in bodies)
    reported = {r["jobId"]: r["at"] for r in timeline["reports"]}
    for job_id, work in worked.items():
        assert arrived[job_id] <= work["start"] <= reported[job_id] <= work["end"]
    http.post(f"{sim.url}/_sim/reset", timeout=5)
    assert http.get(f"{sim.url}/_sim/timeline", timeout=5).json() == {
        "dispatches": [],
        "reports": [],
        "work": [],
    }


def test_finish_before_answer_waits_for_a_queued_batch(make_sim, receiver, http) -> None:
    sim = make_sim(browsers=1, item_delay=0.1)
    first = job_body(receiver, items_of(2))
    assert dispatch(http, sim, first).status_code == 202
    http.post(f"{sim.url}/_sim/config", json={"mode": "finish_before_answer"}, timeout=5)
    second = job_body(receiver)
    assert dispatch(http, sim, second).status_code == 202
    receiver.mark("answered")
    order = [x if isinstance(x, str) else x.path.split("/")[-2] + x.type for x in receiver.timeline]
    assert order.index(f"{first['jobId']}robot.batch.completed") < order.index("answered")
    assert order.index(f"{second['jobId']}robot.batch.completed") < order.index("answered")


def test_browsers_and_heartbeat_on_the_command_line() -> None:
    from orchestrator.local.robot_simulator import _parse_args

    args = _parse_args(["--browsers", "2", "--heartbeat", "0.5"])
    config = SimulatorConfig(**vars(args))
    assert (config.browsers, config.heartbeat) == (2, 0.5)
    defaults = SimulatorConfig(**vars(_parse_args([])))
    assert (defaults.browsers, defaults.heartbeat) == (None, None)
    for bad in (["--browsers", "0"], ["--heartbeat", "0"], ["--heartbeat", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            _parse_args(bad)
        assert exit_info.value.code == 2
