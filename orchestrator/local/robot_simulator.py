"""Play the robot's side of CONTRACT §4-§5: accept dispatches, send signed callbacks.

Self-contained on purpose: it imports nothing else from the orchestrator, so tests, benchmarks
and demos can run it as a stand-in for robot-coordinadora (``robot-simulator --port 8090``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hmac
import json
import logging
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
from flask import Flask, Response, jsonify, request
from flask.typing import ResponseReturnValue
from standardwebhooks import Webhook
from werkzeug.serving import BaseWSGIServer, make_server

log = logging.getLogger("robot_simulator")

MODES = (
    "normal",
    "never_finish",
    "http_500",
    "http_503",
    "http_400",
    "slow_answer",
    "duplicates",
    "finish_before_answer",
    "batch_failed",
    "redirect_307",
    "not_json_2xx",
)
REFUSALS = {"http_500": 500, "http_503": 503, "http_400": 400}
ITEM_ERROR = "portal rejected the address"
BATCH_ERROR = "portal unavailable"


def _is_number(value: Any, upper: float | None = None) -> bool:
    """Tell whether value is a non-negative number (at most upper)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    return ok and (upper is None or value <= upper)


def _is_positive(value: Any, integer: bool = False) -> bool:
    """Tell whether value is a number above zero (an integer if asked)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    return ok and (not integer or isinstance(value, int))


RUNTIME_OPTIONS: dict[str, Callable[[Any], bool]] = {
    "mode": lambda v: v in MODES,
    "item_delay": _is_number,
    "failure_rate": lambda v: _is_number(v, 1.0),
    "answer_delay": _is_number,
    "batch_items": lambda v: isinstance(v, bool),
    "token": lambda v: v is None or isinstance(v, str),
    "callback_retries": lambda v: _is_number(v) and isinstance(v, int),
    "browsers": lambda v: v is None or _is_positive(v, integer=True),
    "heartbeat": lambda v: v is None or _is_positive(v),
}


@dataclass(frozen=True)
class SimulatorConfig:
    """Hold the simulator's options (port 0 picks a free port)."""

    host: str = "127.0.0.1"
    port: int = 0
    mode: str = "normal"
    item_delay: float = 0.2
    failure_rate: float = 0.0
    answer_delay: float = 5.0
    batch_items: bool = True
    token: str | None = None
    callback_retries: int = 5
    retry_backoff: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 4.0)
    callback_timeout: float = 5.0
    seed: int | None = None
    workers: int = 16
    browsers: int | None = None  # batches worked at once; None: as many as the pool has threads
    heartbeat: float | None = None  # seconds between heartbeats of every held job; None: none

    def public(self) -> dict[str, Any]:
        """Return the options as JSON-ready data, with the token masked."""
        data = dataclasses.asdict(self)
        data["token"] = "***" if self.token else None
        data["retry_backoff"] = list(self.retry_backoff)
        return data


@dataclass(frozen=True)
class _Job:
    job_id: str
    callback_url: str
    secret: str
    items: list[dict[str, Any]]
    config: SimulatorConfig


@dataclass
class _Held:
    """A job the robot holds: accepted, its batch report not sent yet."""

    job: _Job
    since: float  # monotonic time of its acceptance, then of its last heartbeat
    state: str = "queued"  # queued, working, or stuck (never_finish: alive, never reports)
    beating: bool = False  # a heartbeat of this job is on its way
    closed: bool = False  # its batch report is being sent or it was given up: no more beats
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    done: threading.Event = dataclasses.field(default_factory=threading.Event)


def _new_msg_id() -> str:
    """Return a fresh Standard Webhooks message id."""
    return f"msg_{uuid.uuid4().hex}"


def signed_headers(secret: str, body: str, msg_id: str | None = None) -> dict[str, str]:
    """Headers of a callback signed as the robot signs it (Standard Webhooks, now)."""
    msg_id = msg_id or _new_msg_id()
    now = int(time.time())
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(now),
        "webhook-signature": Webhook(secret).sign(msg_id, datetime.fromtimestamp(now, UTC), body),
    }


class RobotSimulator:
    """Keep the simulator's state and run accepted jobs on a bounded thread pool."""

    def __init__(self, config: SimulatorConfig) -> None:
        """Set up the pool, the random source and empty statistics."""
        self._lock = threading.Lock()
        self._config = config
        self._rng = random.Random(config.seed)
        self._stop = threading.Event()
        self._executor = ThreadPoolExecutor(config.workers, thread_name_prefix="robot-sim")
        self._beats = ThreadPoolExecutor(4, thread_name_prefix="robot-sim-heartbeat")
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._held: dict[str, _Held] = {}
        self._waiting: deque[_Job] = deque()  # accepted, waiting for a free browser
        self._busy = 0  # browsers given a job (submitted to the pool, not finished)
        self._wake = threading.Event()
        self.reset()
        self._heartbeat_thread = threading.Thread(
            target=self._heartbeat_loop, name="robot-sim-heartbeats", daemon=True
        )
        self._heartbeat_thread.start()

    @property
    def config(self) -> SimulatorConfig:
        """Return the current options."""
        with self._lock:
            return self._config

    def update_config(self, changes: dict[str, Any]) -> SimulatorConfig:
        """Apply runtime option changes, or raise ValueError naming the bad ones."""
        bad = sorted(
            k for k, v in changes.items() if k not in RUNTIME_OPTIONS or not RUNTIME_OPTIONS[k](v)
        )
        if bad:
            raise ValueError(f"unknown option or bad value: {', '.join(bad)}")
        with self._lock:
            self._config = dataclasses.replace(self._config, **changes)
            config = self._config
            self._wake.set()
        self._fill_browsers()
        return config

    def reset(self) -> None:
        """Forget every dispatch, accepted job, stuck job and counter (running jobs go on)."""
        with self._lock:
            self._dispatches: dict[str, int] = {}
            self._keys: dict[str, str | None] = {}
            self._traceparents: dict[str, str | None] = {}
            self._accepted: set[str] = set()
            # The orderIds of each accepted job, in the order received (what reached the robot).
            self._orders: dict[str, list[str]] = {}
            self._total = self._jobs_accepted = self._active = 0
            self._sent = self._failed = self._attempts = 0
            self._beats_sent = self._beats_failed = 0
            self._working = self._max_working = self._max_held = 0
            self._arrivals: list[dict[str, Any]] = []
            self._reports: list[dict[str, Any]] = []
            self._work: list[dict[str, Any]] = []  # when a browser worked each job
            for job_id in [j for j, held in self._held.items() if held.state == "stuck"]:
                self._held.pop(job_id).closed = True

    def stats(self) -> dict[str, Any]:
        """Return the statistics as JSON-ready data."""
        with self._lock:
            return {
                "dispatches": dict(self._dispatches),
                "totalDispatches": self._total,
                "idempotencyKeys": dict(self._keys),
                "traceparents": dict(self._traceparents),
                "orders": {job_id: list(ids) for job_id, ids in self._orders.items()},
                "jobsAccepted": self._jobs_accepted,
                "activeJobs": self._active,
                "eventsSent": self._sent,
                "eventsFailed": self._failed,
                "callbackAttempts": self._attempts,
                "workingJobs": self._working,
                "maxWorkingJobs": self._max_working,
                "queuedJobs": sum(1 for held in self._held.values() if held.state == "queued"),
                "heldJobs": len(self._held),
                "maxHeldJobs": self._max_held,
                "heartbeatsSent": self._beats_sent,
                "heartbeatsFailed": self._beats_failed,
                "config": self._config.public(),
            }

    def timeline(self) -> dict[str, Any]:
        """Return when each dispatch arrived, when each batch report was answered 2xx and when
        a browser worked each job (from taking it to its last report)."""
        with self._lock:
            return {
                "dispatches": list(self._arrivals),
                "reports": list(self._reports),
                "work": list(self._work),
            }

    def record_dispatch(
        self, job_id: str | None, idempotency_key: str | None, traceparent: str | None = None
    ) -> None:
        """Count one dispatch request, whatever its fate (and the trace context it carried)."""
        with self._lock:
            self._total += 1
            self._arrivals.append({"jobId": job_id, "at": time.time()})
            if job_id is not None:
                self._dispatches[job_id] = self._dispatches.get(job_id, 0) + 1
                self._keys[job_id] = idempotency_key
                self._traceparents[job_id] = traceparent

    def accept(self, job_id: str, items: list[dict[str, Any]] | None = None) -> bool:
        """Mark a job accepted and active; return False if it already was accepted."""
        with self._lock:
            if job_id in self._accepted:
                return False
            self._accepted.add(job_id)
            self._orders[job_id] = [str(item.get("orderId")) for item in items or []]
            self._jobs_accepted += 1
            self._active += 1
            return True

    def hold(self, job: _Job) -> threading.Event:
        """Take an accepted job: a free browser works it, else it waits in arrival order.

        Return an event that is set once its items have been worked through.
        """
        with self._lock:
            held = self._held[job.job_id] = _Held(job, time.monotonic())
            self._max_held = max(self._max_held, len(self._held))
            self._waiting.append(job)
            self._wake.set()
        self._fill_browsers()
        return held.done

    def _fill_browsers(self) -> None:
        """Give waiting jobs to free browsers, oldest first."""
        while True:
            with self._lock:
                limit = self._config.browsers
                if not self._waiting or (limit is not None and self._busy >= limit):
                    return
                job = self._waiting.popleft()
                self._busy += 1
            try:
                self._executor.submit(self.run_job, job)
            except RuntimeError:  # the pool is shut down
                self._finish_job(job)
                return

    def wait(self, seconds: float) -> bool:
        """Sleep up to seconds; return True if the simulator is stopping."""
        return self._stop.wait(seconds)

    def request_stop(self) -> None:
        """Make every job, wait and heartbeat stop at its next step."""
        self._stop.set()
        self._wake.set()

    def close(self) -> None:
        """Stop the jobs between steps, shut the pools down and close HTTP sessions."""
        self.request_stop()
        self._heartbeat_thread.join()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._beats.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            waiting, self._waiting = list(self._waiting), deque()
        for job in waiting:
            self._finish_job(job, browser=False)
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def run_job(self, job: _Job) -> None:
        """Process a job's items in order, reporting each one, then report the batch."""
        with self._lock:
            held = self._held.get(job.job_id)
            if held is not None:
                held.state = "working"
            self._working += 1
            self._max_working = max(self._max_working, self._working)
        started = time.time()
        try:
            self._process(job)
        except Exception:
            log.exception("job %s: simulator error", job.job_id)
        finally:
            with self._lock:
                self._working -= 1
                self._work.append({"jobId": job.job_id, "start": started, "end": time.time()})
            self._finish_job(job)
            self._fill_browsers()

    def _finish_job(self, job: _Job, browser: bool = True) -> None:
        """Free the job's browser; forget it unless it stays held without reporting."""
        with self._lock:
            self._active -= 1
            self._busy -= int(browser)
            held = self._held.get(job.job_id)
            if held is None:
                return
            if held.closed or self._stop.is_set() or job.config.mode != "never_finish":
                self._held.pop(job.job_id, None)
                held.closed = True
            else:
                held.state = "stuck"
        held.done.set()

    def _close(self, job: _Job) -> None:
        """Stop the job's heartbeats before its batch report, waiting for one on its way."""
        with self._lock:
            held = self._held.get(job.job_id)
        if held is not None:
            with held.lock:
                held.closed = True

    def _heartbeat_loop(self) -> None:
        """Send each held job's heartbeat when it is due, until the simulator stops."""
        while not self._stop.is_set():
            due: list[_Held] = []
            pause = 1.0
            with self._lock:
                self._wake.clear()
                interval, now = self._config.heartbeat, time.monotonic()
                for held in self._held.values() if interval else ():
                    if held.beating or held.closed:
                        continue
                    if now - held.since >= interval:
                        held.beating = True
                        due.append(held)
                    else:
                        pause = min(pause, held.since + interval - now)
            for held in due:
                try:
                    self._beats.submit(self._beat, held)
                except RuntimeError:  # the pool is shut down
                    return
            self._wake.wait(pause)

    def _beat(self, held: _Held) -> None:
        """Send one heartbeat for a held job, once, without retrying."""
        try:
            with held.lock:
                if held.closed or self._stop.is_set():
                    return
                payload = json.dumps(
                    {"type": "robot.heartbeat", "data": {"state": held.state}},
                    separators=(",", ":"),
                )
                sent = self._post(held.job, "robot.heartbeat", _new_msg_id(), payload)
            with self._lock:
                if sent is not None and sent < 300:
                    self._beats_sent += 1
                else:
                    self._beats_failed += 1
        finally:
            with self._lock:
                held.beating = False
                held.since = time.monotonic()
                self._wake.set()

    def _process(self, job: _Job) -> None:
        mode = job.config.mode
        results: list[dict[str, Any]] = []
        for item in job.items:
            if self._stop.is_set():
                return
            item_id, behaviour = item["itemId"], item["pedidoInput"].get("_simulate")
            if behaviour == "skip":
                log.info("job %s: item %s skipped, never reported", job.job_id, item_id)
                continue
            self._emit(job, "robot.item.started", {"itemId": item_id})
            if mode in ("never_finish", "batch_failed"):
                break
            if self.wait(job.config.item_delay):
                return
            result = self._outcome(item_id, behaviour == "fail", job.config.failure_rate)
            self._emit(job, "robot.item.completed", result)
            results.append(result)
        if mode == "never_finish":
            log.info("job %s: never finishing (mode never_finish)", job.job_id)
            return
        self._close(job)
        if mode == "batch_failed":
            self._emit(job, "robot.batch.failed", {"error": BATCH_ERROR})
        else:
            self._emit(
                job, "robot.batch.completed", {"items": results if job.config.batch_items else []}
            )

    def _outcome(self, item_id: str, forced_failure: bool, failure_rate: float) -> dict[str, Any]:
        with self._lock:
            roll, number = self._rng.random(), self._rng.randrange(10**10)
        if forced_failure or roll < failure_rate:
            return {"itemId": item_id, "status": "error", "error": ITEM_ERROR}
        return {"itemId": item_id, "status": "success", "trackingNumber": f"CO{number:010d}"}

    def _emit(self, job: _Job, event_type: str, data: dict[str, Any]) -> bool:
        """Send one event (three times in mode duplicates); return True if delivered."""
        payload = json.dumps({"type": event_type, "data": data}, separators=(",", ":"))
        msg_id = _new_msg_id()
        delivered = self._deliver(job, event_type, msg_id, payload)
        if job.config.mode == "duplicates":
            self._deliver(job, event_type, msg_id, payload)
            self._deliver(job, event_type, _new_msg_id(), payload)
        return delivered

    def _deliver(self, job: _Job, event_type: str, msg_id: str, payload: str) -> bool:
        """POST one signed webhook, retrying connection errors and 5xx with backoff."""
        cfg = job.config
        for attempt in range(cfg.callback_retries + 1):
            if attempt:
                steps = cfg.retry_backoff or (0.0,)
                if self.wait(steps[min(attempt, len(steps)) - 1]):
                    break
            status = self._post(job, event_type, msg_id, payload)
            if status is None:
                continue
            if status < 300:
                with self._lock:
                    self._sent += 1
                    if event_type.startswith("robot.batch."):
                        self._reports.append(
                            {"jobId": job.job_id, "type": event_type, "at": time.time()}
                        )
                return True
            if status < 500:
                log.warning(
                    "job %s: %s refused with %d, not retried", job.job_id, event_type, status
                )
                break
        with self._lock:
            self._failed += 1
        log.warning("job %s: gave up on %s %s", job.job_id, event_type, msg_id)
        return False

    def _post(self, job: _Job, event_type: str, msg_id: str, payload: str) -> int | None:
        """POST one signed webhook once; return its status, or None if it got no answer."""
        timeout = job.config.callback_timeout
        headers = signed_headers(job.secret, payload, msg_id)
        with self._lock:
            self._attempts += 1
        try:
            with self._session().post(
                job.callback_url,
                data=payload.encode(),
                headers=headers,
                timeout=(min(2.0, timeout), timeout),
                allow_redirects=False,
            ) as response:
                status = response.status_code
        except requests.RequestException as exc:
            log.warning("job %s: %s %s failed: %s", job.job_id, event_type, msg_id, exc)
            return None
        log.info("job %s: sent %s %s -> %d", job.job_id, event_type, msg_id, status)
        return status

    def _session(self) -> requests.Session:
        """Return this thread's HTTP session, creating it on first use."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # talk to the callback URL directly, never via a proxy
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session


def _error(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> Any:
    """Build a JSON error response in the contract's shape."""
    return jsonify(error={"code": code, "message": message, "details": details or {}}), status


def _validate(body: dict[str, Any]) -> dict[str, str]:
    """Return the problems of a dispatch body, by field name."""
    problems: dict[str, str] = {}
    for name in ("jobId", "callbackUrl", "callbackSecret", "deadline"):
        if not isinstance(body.get(name), str) or not body[name]:
            problems[name] = "required non-empty string"
    url, secret = body.get("callbackUrl"), body.get("callbackSecret")
    if "callbackUrl" not in problems and not str(url).startswith(("http://", "https://")):
        problems["callbackUrl"] = "must be an http(s) URL"
    if "callbackSecret" not in problems:
        try:
            Webhook(str(secret))
            valid = str(secret).startswith("whsec_")
        except Exception:
            valid = False
        if not valid:
            problems["callbackSecret"] = "must be a Standard Webhooks secret (whsec_...)"
    items = body.get("items")
    if not isinstance(items, list):
        problems["items"] = "required list"
        return problems
    for index, item in enumerate(items):
        if not (
            isinstance(item, dict)
            and isinstance(item.get("itemId"), str)
            and item["itemId"]
            and isinstance(item.get("orderId"), str)
            and isinstance(item.get("pedidoInput"), dict)
        ):
            problems[f"items[{index}]"] = "needs itemId, orderId (strings), pedidoInput (object)"
    return problems


def create_app(config: SimulatorConfig | None = None) -> Flask:
    """Build the simulator's Flask app; its state is app.extensions["robot_simulator"]."""
    sim = RobotSimulator(config or SimulatorConfig())
    app = Flask(__name__)
    app.extensions["robot_simulator"] = sim

    @app.post("/api/v1/jobs")
    def dispatch() -> ResponseReturnValue:
        body = request.get_json(silent=True, force=True)
        job_id = body.get("jobId") if isinstance(body, dict) else None
        job_id = job_id if isinstance(job_id, str) else None
        cfg = sim.config
        sim.record_dispatch(
            job_id, request.headers.get("Idempotency-Key"), request.headers.get("traceparent")
        )
        log.info("dispatch for job %s (mode %s)", job_id, cfg.mode)
        if cfg.token:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, f"Bearer {cfg.token}".encode()):
                return _error(401, "unauthorized", "missing or bad bearer token")
        if not isinstance(body, dict):
            return _error(400, "malformed_json", "body must be a JSON object")
        problems = _validate(body)
        if problems or job_id is None:
            return _error(400, "invalid_dispatch", "dispatch body is invalid", problems)
        if cfg.mode in REFUSALS:
            return _error(REFUSALS[cfg.mode], "simulated_failure", f"simulated {cfg.mode}")
        if cfg.mode == "redirect_307":
            return Response(status=307, headers={"Location": request.path})
        if not sim.accept(job_id, body["items"]):
            log.info("job %s: duplicate dispatch, nothing started", job_id)
            return jsonify(duplicate=True, jobId=job_id), 200
        job = _Job(job_id, body["callbackUrl"], body["callbackSecret"], body["items"], cfg)
        log.info("job %s: accepted %d items", job_id, len(job.items))
        if cfg.mode == "slow_answer":
            sim.wait(cfg.answer_delay)
        worked = sim.hold(job)
        if cfg.mode == "finish_before_answer":
            worked.wait()
        if cfg.mode == "not_json_2xx":
            return Response("ok", status=200, mimetype="text/plain")
        return jsonify(accepted=True, jobId=job_id), 202

    @app.get("/_sim/stats")
    def stats() -> ResponseReturnValue:
        return jsonify(sim.stats())

    @app.get("/_sim/timeline")
    def timeline() -> ResponseReturnValue:
        return jsonify(sim.timeline())

    @app.post("/_sim/config")
    def update_config() -> ResponseReturnValue:
        changes = request.get_json(silent=True, force=True)
        if not isinstance(changes, dict):
            return _error(400, "malformed_json", "body must be a JSON object")
        try:
            return jsonify(sim.update_config(changes).public())
        except ValueError as exc:
            return _error(400, "invalid_config", str(exc), {"allowed": sorted(RUNTIME_OPTIONS)})

    @app.post("/_sim/reset")
    def reset() -> ResponseReturnValue:
        sim.reset()
        return jsonify(sim.stats())

    @app.get("/healthz")
    def healthz() -> ResponseReturnValue:
        return jsonify(status="ok")

    return app


class SimulatorServer:
    """Serve the simulator over real HTTP from a daemon thread."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        """Build the app; nothing listens until start()."""
        self.config = config or SimulatorConfig()
        self.app = create_app(self.config)
        self.simulator: RobotSimulator = self.app.extensions["robot_simulator"]
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """Return the bound port."""
        if self._server is None:
            raise RuntimeError("simulator server not started")
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        """Return the base URL, e.g. http://127.0.0.1:8090."""
        return f"http://{self.config.host}:{self.port}"

    def start(self) -> SimulatorServer:
        """Bind the port and serve in a daemon thread."""
        self._server = make_server(self.config.host, self.config.port, self.app, threaded=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and stop every job between steps, without waiting for them."""
        self.simulator.request_stop()
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._thread = None
        self.simulator.close()

    def __enter__(self) -> SimulatorServer:
        """Start the server if needed."""
        return self if self._server is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        """Stop the server."""
        self.stop()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="robot-simulator", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=os.environ.get("ROBOT_SIMULATOR_PORT", "8090"))
    parser.add_argument("--item-delay", type=float, default=0.2, help="seconds per item")
    parser.add_argument("--failure-rate", type=float, default=0.0, help="0..1")
    parser.add_argument("--mode", choices=MODES, default="normal")
    parser.add_argument("--token", default=os.environ.get("ROBOT_API_TOKEN") or None)
    parser.add_argument("--answer-delay", type=float, default=5.0, help="for mode slow_answer")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--callback-retries", type=int, default=5)
    parser.add_argument("--batch-items", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--browsers",
        type=int,
        default=None,
        help="batches worked at once, the rest wait in arrival order (default: no limit)",
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=None,
        metavar="SECONDS",
        help="send robot.heartbeat for every held job this often (default: never)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.failure_rate <= 1:
        parser.error("--failure-rate must be between 0 and 1")
    if args.workers < 1 or args.item_delay < 0 or args.answer_delay < 0:
        parser.error("--workers must be >= 1 and delays >= 0")
    if args.browsers is not None and args.browsers < 1:
        parser.error("--browsers must be >= 1")
    if args.heartbeat is not None and args.heartbeat <= 0:
        parser.error("--heartbeat must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until SIGTERM or SIGINT; return the exit code."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = SimulatorConfig(**vars(args))  # every option is named after its field
    signals: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        signals.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with SimulatorServer(config) as server:
        print(f"robot simulator listening on {server.url}", flush=True)
        log.info("options: %s", json.dumps(config.public()))
        while not signals:
            time.sleep(0.1)
        log.info("signal %d received, stopping", signals[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
