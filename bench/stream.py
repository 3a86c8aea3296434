"""Benchmark: live job streams (CONTRACT §13), latency and memory per open stream.

One web process with one gunicorn/gevent worker (so every stream is on the measured process),
a worker, beat and the ``accept`` responder (jobs stay ``processing``) on PostgreSQL and a
private Redis. With 1, 100 and 1,000 streams open (one measured stream on the measured job, the
others on other jobs, read and discarded by one selector thread), for each sample: send a signed
``robot.item.completed`` for the measured job; from its 200 answer to the moment the measured
stream delivers the event showing that item's tracking number (``latency_ms``). Samples start
one ``LIVE_REREAD_SECONDS`` (15 s) after the streams opened and are 0.25 s apart, so the timer
re-reads of every stream run during them.

Baseline in the same run, interleaved: the round trip of ``GET /api/jobs/<id>`` for the same job
(``get_ms``), the price of one read of the job over HTTP. Memory: the web worker's PSS and RSS
before the streams open and with them open, the difference divided by the number of streams.
Goals: p50 ≤ 20 ms at 100 streams; ≤ 50 KB per stream.
"""

from __future__ import annotations

import json
import queue
import selectors
import socket
import threading
import time
from pathlib import Path
from typing import Any

import requests

from orchestrator.local.processes import wait_until
from orchestrator.robot_events import ITEM_COMPLETED

from .common import API_TOKEN, Stack, emit, memory_mb, note, ratio, summary

NAME = "stream"
ONE_WORKER_WEB = (
    "python -c 'import webapp.__main__ as web; web.WORKERS = 1; "
    "web.WORKER_CONNECTIONS = 4000; web.main()'"
)
BACKGROUND_JOBS = 20  # the idle streams are spread over this many jobs


class IdleStreams:
    """Many open streams on raw sockets, read and discarded by one thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.selector = selectors.DefaultSelector()
        self.sockets: list[socket.socket] = []
        self.first_event: set[int] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def open(self, job_id: str) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        sock.sendall(
            f"GET /api/jobs/{job_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {API_TOKEN}\r\n\r\n".encode()
        )
        sock.setblocking(False)
        with self.lock:
            self.sockets.append(sock)
            self.selector.register(sock, selectors.EVENT_READ)

    def opened(self) -> int:
        with self.lock:
            return len(self.first_event)

    def _read(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                empty = not self.sockets
            if empty:
                time.sleep(0.01)
                continue
            for key, _ in self.selector.select(timeout=0.1):
                sock = key.fileobj
                try:
                    data = sock.recv(65536)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if b"event: job" in data:
                    with self.lock:
                        self.first_event.add(id(sock))
                if not data:
                    with self.lock:
                        self.selector.unregister(sock)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for sock in self.sockets:
            sock.close()
        self.selector.close()


class MeasuredStream:
    """One stream read in a thread; each event's job with its arrival time."""

    def __init__(self, base: str, job_id: str) -> None:
        self.events: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.answer = requests.get(
            f"{base}/api/jobs/{job_id}/stream",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            stream=True,
            timeout=(10, 60),
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for line in self.answer.iter_lines(chunk_size=None, decode_unicode=True):
                if line.startswith("data: "):
                    self.events.put((time.perf_counter(), json.loads(line[6:])))
        except (requests.RequestException, AttributeError, ValueError):
            pass  # closed by close(): the measurement moved on

    def until(self, check: Any, timeout: float = 30) -> float:
        deadline = time.monotonic() + timeout
        while True:
            at, job = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if check(job):
                return at

    def close(self) -> None:
        self.answer.close()


def _worker_pid(stack: Stack) -> int:
    master = stack.processes["web"].popen.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(children[0])


def run(quick: bool, redis_mode: str) -> bool:
    counts = (1, 100, 1000)
    samples = 20 if quick else 100
    items = samples * len(counts) + 5
    with Stack(
        NAME,
        redis_mode,
        robot="accept",
        processes=("robot", "worker", "beat"),
        ROBOT_SECONDS_PER_ITEM="60",
    ) as stack:
        stack.start_process("web", command=ONE_WORKER_WEB)
        measured = stack.submit(items=items)
        background = [stack.submit(items=2) for _ in range(BACKGROUND_JOBS)]
        wait_until(
            lambda: all(stack.job(j)["status"] == "processing" for j in [measured, *background]),
            120,
            "the jobs to be dispatched",
        )
        item_ids = [item["id"] for item in stack.job(measured)["items"]]
        web_pid = _worker_pid(stack)
        http = stack.http()
        idle = IdleStreams(stack.web_port)
        next_item = 0
        try:
            for count in counts:
                stream = MeasuredStream(stack.base, measured)
                stream.until(lambda job: True)  # its first event
                before = memory_mb([web_pid])
                want = count - 1
                while len(idle.sockets) < want:
                    idle.open(background[len(idle.sockets) % BACKGROUND_JOBS])
                wait_until(lambda want=want: idle.opened() >= want, 120, f"{count} streams")
                # Past one LIVE_REREAD_SECONDS (15 s): the streams' timer re-reads, spread over
                # the interval, run all through the samples (steady state, not a fresh start).
                time.sleep(16 if want else 1)
                after = memory_mb([web_pid])
                latencies, gets = [], []
                for _ in range(samples):
                    item_id = item_ids[next_item]
                    tracking = f"CO-{next_item}"
                    next_item += 1
                    body, headers = stack.signed(
                        measured,
                        ITEM_COMPLETED,
                        {"itemId": item_id, "status": "success", "trackingNumber": tracking},
                    )
                    answered = _post(http, stack, measured, headers, body)
                    arrived = stream.until(
                        lambda job, tracking=tracking: any(
                            i["trackingNumber"] == tracking for i in job["items"]
                        )
                    )
                    latencies.append((arrived - answered) * 1000)
                    t0 = time.perf_counter()
                    http.get(f"{stack.base}/api/jobs/{measured}", headers=stack.auth(), timeout=10)
                    gets.append((time.perf_counter() - t0) * 1000)
                    time.sleep(0.25)
                lat, get = summary(latencies), summary(gets)
                per_stream_kb = {
                    key: round((after[key] - before[key]) * 1024 / max(1, want), 1)
                    for key in ("pss_mb", "rss_mb")
                }
                emit(
                    NAME,
                    f"streams_{count}",
                    streams=count,
                    latency_ms=lat,
                    get_ms=get,
                    p50_ratio_to_get=ratio(lat["p50"], get["p50"]),
                    web_memory_before=before,
                    web_memory_after=after,
                    kb_per_stream={k.removesuffix("_mb"): v for k, v in per_stream_kb.items()},
                    goals={"p50_ms_at_100": 20, "kb_per_stream": 50},
                )
                note(f"{NAME}: {count} streams: latency p50 {lat['p50']} ms, {per_stream_kb}")
                stream.close()
        finally:
            idle.close()
    return True


def _post(
    http: requests.Session, stack: Stack, job_id: str, headers: dict[str, str], body: str
) -> float:
    answer = http.post(
        f"{stack.base}/api/robot/jobs/{job_id}/events", data=body, headers=headers, timeout=10
    )
    at = time.perf_counter()
    assert answer.status_code == 200, answer.text
    return at
