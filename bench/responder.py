"""A minimal stand-in robot for the benchmarks: answers every dispatch 202 at once.

``python -m bench.responder --port N --mode accept|instant|instant_items``

* ``accept``: answer 202 and never report (the job waits until someone sends its report);
* ``instant``: answer 202, then at once POST one signed ``robot.batch.completed`` carrying every
  item's result (an instant robot, one callback per job);
* ``instant_items``: like the simulator with ``--item-delay 0``: ``item.started`` and
  ``item.completed`` per item, then ``batch.completed`` (2 N + 1 callbacks per job).

It records the arrival time (``time.time()``) of every dispatch so that a benchmark can measure
submit-to-dispatch latency: ``GET /_bench/dispatch?job=<id>`` and ``GET /_bench/stats``.
Standard library HTTP server on purpose: the stand-in must cost as little CPU as possible.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from standardwebhooks import Webhook

log = logging.getLogger("bench.responder")

MODES = ("accept", "instant", "instant_items")


class State:
    """Dispatch arrival times and callback counters, shared by the handler threads."""

    def __init__(self, mode: str, callback_threads: int) -> None:
        self.lock = threading.Lock()
        self.mode = mode
        self.dispatched: dict[str, float] = {}
        self.duplicates = 0
        self.sent = 0
        self.failed = 0
        self.pool = ThreadPoolExecutor(callback_threads, thread_name_prefix="callbacks")
        self.local = threading.local()

    def session(self) -> requests.Session:
        session = getattr(self.local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False
            self.local.session = session
        return session

    def post(self, url: str, hook: Webhook, event_type: str, data: dict[str, Any]) -> None:
        body = json.dumps({"type": event_type, "data": data}, separators=(",", ":"))
        msg_id = f"msg_{uuid.uuid4().hex}"
        for attempt in range(4):
            if attempt:
                time.sleep(0.2 * attempt)
            now = datetime.now(UTC)
            headers = {
                "Content-Type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": hook.sign(msg_id, now, body),
            }
            try:
                status = (
                    self.session().post(url, data=body, headers=headers, timeout=10).status_code
                )
            except requests.RequestException:
                continue
            if status < 500:
                with self.lock:
                    if status == 200:
                        self.sent += 1
                    else:
                        self.failed += 1
                return
        with self.lock:
            self.failed += 1

    def report(self, job: dict[str, Any], per_item: bool) -> None:
        try:
            url, hook = job["callbackUrl"], Webhook(job["callbackSecret"])
            results = [
                {
                    "itemId": item["itemId"],
                    "status": "success",
                    "trackingNumber": f"CO{uuid.uuid4().int % 10**10:010d}",
                }
                for item in job["items"]
            ]
            if per_item:
                for result in results:
                    self.post(url, hook, "robot.item.started", {"itemId": result["itemId"]})
                    self.post(url, hook, "robot.item.completed", result)
            self.post(url, hook, "robot.batch.completed", {"items": results})
        except Exception:
            log.exception("job %s: reporting failed", job.get("jobId"))


def make_handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Keep quiet: one log line per request would cost more than the answer."""

        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            path = urlsplit(self.path).path
            if path == "/_bench/mode":
                mode = json.loads(raw or b"{}").get("mode")
                if mode not in MODES:
                    self._answer(400, {"error": f"mode must be one of {MODES}"})
                    return
                state.mode = mode
                self._answer(200, {"mode": mode})
                return
            if path != "/api/v1/jobs":
                self._answer(404, {"error": "not found"})
                return
            arrived = time.time()
            job = json.loads(raw)
            job_id = job["jobId"]
            with state.lock:
                if job_id in state.dispatched:
                    state.duplicates += 1
                else:
                    state.dispatched[job_id] = arrived
            if state.mode != "accept":
                state.pool.submit(state.report, job, state.mode == "instant_items")
            self._answer(202, {"accepted": True, "jobId": job_id})

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/healthz":
                self._answer(200, {"status": "ok"})
            elif parts.path == "/_bench/dispatch":
                job_id = parse_qs(parts.query).get("job", [""])[0]
                with state.lock:
                    self._answer(200, {"t": state.dispatched.get(job_id)})
            elif parts.path == "/_bench/stats":
                with state.lock:
                    self._answer(
                        200,
                        {
                            "mode": state.mode,
                            "dispatches": len(state.dispatched),
                            "duplicateDispatches": state.duplicates,
                            "callbacksSent": state.sent,
                            "callbacksFailed": state.failed,
                        },
                    )
            else:
                self._answer(404, {"error": "not found"})

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.responder", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, default="accept")
    parser.add_argument("--callback-threads", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    state = State(args.mode, args.callback_threads)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(state))
    server.daemon_threads = True
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
    thread.start()
    print(f"bench responder on 127.0.0.1:{args.port} (mode {args.mode})", flush=True)
    stop.wait()
    server.shutdown()
    server.server_close()
    state.pool.shutdown(wait=False, cancel_futures=True)
    logging.shutdown()
    os._exit(0)  # never wait at exit for a callback thread stuck on a dead web process


if __name__ == "__main__":
    main()
