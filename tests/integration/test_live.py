"""Live job streams (CONTRACT §13) on the real processes: gunicorn/gevent web, worker, beat.

The system runs on a private redis-server (restarted by one test) and a web process with one
gunicorn worker, so that "one subscription per process" and "a slow reader does not hold up
the other streams of its process" are about one known process. The SIGTERM test starts the
Procfile's own web (two workers) beside it.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from orchestrator.event_stream import parse_events
from orchestrator.local.processes import Process, free_port, private_redis, redis_answers
from orchestrator.robot_events import ITEM_COMPLETED

from .harness import API_TOKEN, FINAL, System, orders, wait_until

pytestmark = pytest.mark.integration

ONE_WORKER_WEB = "python -c 'import webapp.__main__ as web; web.WORKERS = 1; web.main()'"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[dict[str, Any]]:
    log_dir = tmp_path_factory.mktemp("live-redis")
    started = private_redis(log_dir)
    # make test needs redis-server (.ci/run checks for it): its absence is a failure, not a skip.
    assert started is not None, "redis-server is not installed"
    url, process = started
    holder = {"url": url, "process": process, "log_dir": log_dir}
    yield holder
    holder["process"].stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory, redis_server) -> Iterator[System]:
    log_dir = tmp_path_factory.mktemp("live")
    system = System(
        log_dir,
        f"sqlite:///{log_dir / 'orchestrator.db'}",
        0,
        redis_url=redis_server["url"],
        LIVE_KEEPALIVE_SECONDS="1",
        # Announcements, not the timer, must carry these tests' events.
        LIVE_REREAD_SECONDS="600",
        ROBOT_SECONDS_PER_ITEM="5",
        ROBOT_DEADLINE_MARGIN_SECONDS="300",
    )
    system.extra_args["beat"] = f"--schedule={log_dir / 'celerybeat-schedule'}"
    try:
        system.start(("robot",))
        system.start_process("web", command=ONE_WORKER_WEB)
        system.start_process("worker")
        system.start_process("beat")
        yield system
    finally:
        system.stop()


@pytest.fixture
def robot(live: System) -> Iterator[System]:
    live.robot_reset()
    yield live
    live.robot_reset()


def stream_url(system: System, job_id: str) -> str:
    return f"{system.base}/api/jobs/{job_id}/stream"


# The streams a test opened; closed after it, so that a failed test leaves none open behind it
# (an open stream keeps the process's subscription, which the next tests count).
_opened: list[requests.Response] = []


@pytest.fixture(autouse=True)
def _close_streams() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def open_stream(system: System, job_id: str) -> requests.Response:
    answer = requests.get(
        stream_url(system, job_id), headers=system.headers(), stream=True, timeout=(5, 30)
    )
    _opened.append(answer)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/event-stream")
    assert answer.headers["Cache-Control"] == "no-cache"
    assert answer.headers["X-Accel-Buffering"] == "no"
    return answer


def jobs_of(answer: requests.Response) -> Iterator[dict[str, Any]]:
    """Yield the job of each event until the server closes the stream."""
    for event in parse_events(answer.iter_lines(chunk_size=None, decode_unicode=True)):
        assert event.type == "job"
        yield json.loads(event.data)


def stuck_job(system: System, count: int = 3) -> dict[str, Any]:
    """A processing job the robot never reports on (its first item started)."""
    system.robot_config(mode="never_finish")
    answer = system.submit(orders(count))
    assert answer.status_code == 202
    job_id = answer.json()["id"]
    return wait_until(
        lambda: (job := system.job(job_id))["status"] == "processing" and job, 30, "dispatch"
    )


def complete_item(system: System, job_id: str, item_id: str, tracking: str) -> None:
    data = {"itemId": item_id, "status": "success", "trackingNumber": tracking}
    assert system.send_event(job_id, ITEM_COMPLETED, data).status_code == 200


def cancel(system: System, job_id: str) -> None:
    answer = system.http.post(
        f"{system.base}/api/jobs/{job_id}/cancel", headers=system.headers(), timeout=10
    )
    assert answer.status_code == 200, answer.text


def channel_subscribers(system: System) -> int:
    client = redis.Redis.from_url(system.redis_url)
    try:
        [(_, count)] = client.pubsub_numsub("orchestrator:0:jobs")
        return int(count)
    finally:
        client.close()


# --- order and closing ---


def test_a_stream_follows_a_job_to_its_final_state_in_order_then_closes(robot):
    robot.robot_config(item_delay=0.2)
    job_id = robot.submit(orders(5)).json()["id"]
    seen = list(jobs_of(open_stream(robot, job_id)))  # ends only when the server closes
    final = robot.job(job_id)
    assert final["status"] in FINAL
    assert seen[-1] == final  # the last event shows the job as GET does
    assert all(job["status"] not in FINAL for job in seen[:-1])  # closed after the final one
    assert all(a != b for a, b in itertools.pairwise(seen))  # each event a change
    order = ["pending", "processing", final["status"]]
    assert [order.index(job["status"]) for job in seen] == sorted(
        order.index(job["status"]) for job in seen
    )
    done = [job["counts"]["total"] - job["counts"]["pending"] for job in seen]
    assert done == sorted(done)
    assert len(seen) >= 3, seen  # the robot's item results arrived one by one


def test_a_final_job_gets_one_event_and_the_stream_closes(robot):
    job = robot.wait_final(robot.submit(orders(1)).json()["id"])
    assert list(jobs_of(open_stream(robot, job["id"]))) == [job]


def test_a_stream_is_401_without_a_valid_token_and_404_for_an_unknown_job_as_json(live):
    job_id = live.submit(orders(1)).json()["id"]
    for headers in ({}, live.headers("not-a-token")):
        answer = requests.get(stream_url(live, job_id), headers=headers, timeout=10)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "unauthorized"
    answer = requests.get(stream_url(live, "no-such-job"), headers=live.headers(), timeout=10)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


def test_each_change_is_one_event_and_comment_lines_keep_an_idle_stream_alive(robot):
    job = stuck_job(robot)
    answer = open_stream(robot, job["id"])
    lines = answer.iter_lines(chunk_size=None, decode_unicode=True)

    def next_event() -> dict[str, Any]:
        data = None
        for line in lines:
            if line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
            elif line == "" and data is not None:
                return data
        raise AssertionError("the stream ended")

    assert next_event() == robot.job(job["id"])
    comments = 0
    for line in lines:  # LIVE_KEEPALIVE_SECONDS=1 here; nothing changes meanwhile
        comments += line.startswith(":")
        if comments == 2:
            break
    complete_item(robot, job["id"], job["items"][1]["id"], "CO-LIVE-1")
    changed = next_event()
    assert changed["items"][1]["trackingNumber"] == "CO-LIVE-1"
    cancel(robot, job["id"])
    assert next_event()["status"] == "cancelled"
    assert list(lines) == []  # closed after the final event


# --- one subscription, a slow reader ---


def test_one_subscription_serves_every_stream_of_the_process(robot):
    jobs = [stuck_job(robot) for _ in range(2)]
    streams = [open_stream(robot, job["id"]) for job in jobs for _ in range(25)]
    readers = [jobs_of(answer) for answer in streams]
    for reader in readers:
        next(reader)  # each stream is open and registered
    assert channel_subscribers(robot) == 1  # 50 streams, one web process, one subscription
    for job in jobs:
        cancel(robot, job["id"])
    for reader in readers:
        assert [job["status"] for job in reader] == ["cancelled"]
    # Nobody listens any more: the subscription ends too (a few seconds after the last one).
    wait_until(lambda: channel_subscribers(robot) == 0, 30, "the subscription to end")


def raw_stream(system: System, job_id: str, receive_buffer: int) -> socket.socket:
    """Open a stream on a socket with a small receive buffer, and never read it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", system.web_port))
    request = (
        f"GET /api/jobs/{job_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {API_TOKEN}\r\n\r\n"
    )
    sock.sendall(request.encode())
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Read what is buffered; True once the server closed (or reset) the connection."""
    sock.settimeout(0.2)
    try:
        while chunk := sock.recv(1 << 20):
            del chunk
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def test_a_client_that_never_reads_is_cut_off_and_the_others_keep_receiving(robot):
    slow_job = stuck_job(robot, count=200)  # each event of it is about 30 KB
    fast_job = stuck_job(robot, count=12)
    slow = raw_stream(robot, slow_job["id"], receive_buffer=4096)
    fast = jobs_of(open_stream(robot, fast_job["id"]))
    assert next(fast)["status"] == "processing"
    try:
        cut = False
        for n, item in enumerate(slow_job["items"][1:]):
            complete_item(robot, slow_job["id"], item["id"], f"CO-SLOW-{n}")
            if n % 20 == 0:  # the other stream of the process still gets each change
                k = n // 20 + 1
                complete_item(robot, fast_job["id"], fast_job["items"][k]["id"], f"F{n}")
                assert next(fast)["items"][k]["trackingNumber"] == f"F{n}"
            if "fell behind" in robot.processes["web"].log():
                cut = True
                break
        assert cut, "the slow stream was never cut off"
        wait_until(lambda: closed_by_server(slow), 30, "the slow stream's connection to close")
        cancel(robot, fast_job["id"])
        assert next(fast)["status"] == "cancelled"
    finally:
        slow.close()
        cancel(robot, slow_job["id"])


# --- Redis restarted while streams are open ---


def test_after_a_redis_restart_the_streams_still_get_every_change_and_the_final_event(
    robot, redis_server
):
    job = stuck_job(robot)
    streams = [jobs_of(open_stream(robot, job["id"])) for _ in range(5)]
    for stream in streams:
        assert next(stream)["status"] == "processing"
    wait_until(lambda: channel_subscribers(robot) == 1, 10, "the subscription")
    url = redis_server["url"]
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    redis_server["process"].stop()
    # A change while Redis is down: committed, its announcement lost.
    complete_item(robot, job["id"], job["items"][1]["id"], "CO-OUTAGE")
    binary = "redis-server"
    redis_server["process"] = Process(
        "redis-again",
        f"{binary} --port {port} --bind 127.0.0.1 --save '' --appendonly no",
        {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        redis_server["log_dir"],
    )
    wait_until(lambda: redis_answers(url), 10, "redis-server to be back")
    # The web process subscribes again and every stream reads its job once.
    for stream in streams:
        assert next(stream)["items"][1]["trackingNumber"] == "CO-OUTAGE"
    wait_until(lambda: channel_subscribers(robot) == 1, 10, "the new subscription")
    cancel(robot, job["id"])
    for stream in streams:
        assert [j["status"] for j in stream] == ["cancelled"]


# --- SIGTERM with streams open ---


def test_the_web_process_exits_within_10_s_of_sigterm_with_200_streams_open(live, tmp_path: Path):
    port = free_port()
    env = {**live.env, "PORT": str(port), "PUBLIC_URL": f"http://127.0.0.1:{port}"}
    web = Process("web-sigterm", "python -m webapp", env, tmp_path)
    sockets: list[socket.socket] = []
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), 60, "the second web")
        live.robot_config(mode="never_finish")
        job = stuck_job(live)
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(
                f"GET /api/jobs/{job['id']}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {API_TOKEN}\r\n\r\n".encode()
            )
            sockets.append(sock)
        for sock in sockets:  # each stream is open: its first event arrived
            received = b""
            while b"event: job" not in received:
                chunk = sock.recv(65536)
                assert chunk, received.decode(errors="replace")
                received += chunk
        started = time.monotonic()
        web.popen.send_signal(signal.SIGTERM)
        web.popen.wait(30)
        took = time.monotonic() - started
        assert web.popen.returncode == 0, web.log()[-3000:]
        assert took < 10, f"exit took {took:.1f} s"
        for sock in sockets:  # every stream was ended, not left hanging
            sock.settimeout(5)
            while sock.recv(65536):
                pass
            sock.close()
        print(f"web exited {took:.2f} s after SIGTERM with 200 open streams")
    finally:
        for sock in sockets:
            sock.close()
        web.stop(signal.SIGKILL)
        live.robot_reset()
        if job := locals().get("job"):
            cancel(live, job["id"])


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
