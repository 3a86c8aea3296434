"""Benchmark 5: a long deadline under a short broker visibility timeout.

One 500-item job (deadline = 500 x 30 s + 300 s = 4 h 15 min) dispatched to the robot stand-in,
which never reports; the worker runs with ``BROKER_VISIBILITY_TIMEOUT=60`` and
``WAIT_POLL_MAX_SECONDS=30``. For at least 5 minutes the benchmark records every task event the
worker sends (``--events``) and, each second, the broker's copies of the job's
``wait_for_report`` message (queued + delivered-unacked) and the job's poller token. Then it
sends the batch.completed and watches the chain end.

Pass: no ``wait_for_report`` message delivered twice (a redelivery after the visibility timeout),
never more than one copy of the job's waiting message in the broker, every poll holding a token
no other poll held, the job open until the report, then closed exactly once (the worker logs
"job <id> completed" once: by the report listener on its wake-up, or by a ``finalize`` task that
a poll started) and no poll after the next scheduled one.
"""

from __future__ import annotations

import ast
import itertools
import json
import threading
import time
from collections import Counter
from typing import Any

from .common import FINAL, Stack, emit, note

NAME = "long_deadline"


class EventRecorder(threading.Thread):
    """Collect the worker's task events from the broker (what Flower would see)."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(name="event-recorder", daemon=True)
        self.app = stack.celery_client()
        self.events: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.receiver: Any = None

    def run(self) -> None:
        with self.app.connection() as conn:
            self.receiver = self.app.events.Receiver(
                conn, handlers={"*": self.events.append}, app=self.app
            )
            self.ready.set()
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.join(timeout=10)


def _broker_copies(stack: Stack, job_id: str) -> int:
    """The job's wait_for_report messages in the broker: queued and delivered-unacked."""
    count = 0
    raw = list(stack.redis.hvals("unacked")) + list(stack.redis.lrange("orchestrator", 0, -1))
    for value in raw:
        payload = json.loads(value)
        message = payload[0] if isinstance(payload, list) else payload
        headers = message.get("headers", {})
        if headers.get("task") == "orchestrator.wait_for_report" and job_id in str(
            headers.get("argsrepr", "")
        ):
            count += 1
    return count


def run(quick: bool, redis_mode: str) -> bool:
    duration = 60.0 if quick else 300.0
    env = {
        "BROKER_VISIBILITY_TIMEOUT": "60",
        "WAIT_POLL_MAX_SECONDS": "30",
        "HOUSEKEEPING_INTERVAL_SECONDS": "15",
    }
    with Stack(NAME, redis_mode, robot="accept", **env) as stack:
        recorder = EventRecorder(stack)
        recorder.start()
        recorder.ready.wait(10)
        time.sleep(1)
        job_id = stack.submit(items=500)
        started = time.monotonic()
        job = stack.job(job_id)
        while job["deadline"] is None and time.monotonic() - started < 30:
            time.sleep(0.2)
            job = stack.job(job_id)
        note(f"{NAME}: job {job_id} deadline {job['deadline']}; watching for {duration:.0f} s")
        copies: list[int] = []
        tokens: list[str] = []
        statuses: Counter[str] = Counter()
        while time.monotonic() - started < duration:
            copies.append(_broker_copies(stack, job_id))
            token = stack.redis.get(f"orchestrator:job:{job_id}:poller")
            if token is not None and (not tokens or tokens[-1] != token.decode()):
                tokens.append(token.decode())
            statuses[stack.job(job_id)["status"]] += 1
            time.sleep(1.0)
        watched_s = time.monotonic() - started
        answer = stack.send_event(job_id, "robot.batch.completed", {"items": []})
        reported, reported_wall = time.monotonic(), time.time()
        final = stack.job(job_id)
        while final["status"] not in FINAL and time.monotonic() - reported < 60:
            time.sleep(0.05)
            final = stack.job(job_id)
        finished_after_ms = (time.monotonic() - reported) * 1000
        note(f"{NAME}: reported; watching the chain end for 40 s")
        after_copies = []
        end = time.monotonic() + 40
        while time.monotonic() < end:
            after_copies.append(_broker_copies(stack, job_id))
            time.sleep(1.0)
        recorder.stop()
        events = recorder.events
        names: dict[str, str] = {}
        received: Counter[str] = Counter()
        poll_tokens: Counter[str] = Counter()
        poll_times: list[float] = []
        finalize_results: list[str] = []
        for event in events:
            uuid, kind = event.get("uuid"), event.get("type")
            if kind == "task-received":
                names[uuid] = event.get("name", "")
                received[uuid] += 1
                if event.get("name") == "orchestrator.wait_for_report":
                    args = ast.literal_eval(event.get("args") or "()")
                    if args and args[0] == job_id:
                        poll_times.append(float(event.get("timestamp", 0)))
                        if len(args) > 2 and args[2]:
                            poll_tokens[args[2]] += 1
            elif kind == "task-succeeded" and names.get(uuid) == "orchestrator.finalize":
                finalize_results.append(str(event.get("result")))
        polls = [u for u, n in names.items() if n == "orchestrator.wait_for_report"]
        finalizes = [u for u, n in names.items() if n == "orchestrator.finalize"]
        gaps = [round(b - a, 1) for a, b in itertools.pairwise(poll_times)]
        # Each poll is a new message with its own task id (the waiting step sends the next
        # poll itself), so a redelivered copy shows as a task id received twice, and as a
        # token (or, for the first poll, no token) seen twice.
        first_polls = len(poll_times) - sum(poll_tokens.values())
        by_token = max(first_polls - 1, 0) + sum(n - 1 for n in poll_tokens.values())
        by_task_id = sum(n - 1 for u, n in received.items() if u in set(polls))
        redelivered = max(by_token, by_task_id)
        closing = [r for r in finalize_results if r.strip("'\"") in FINAL]
        worker_log = stack.processes["worker"].log()[-2_000_000:]
        closes = worker_log.count(f"job {job_id} completed")
        by_listener = worker_log.count(f"job {job_id}: closed by the report listener")
        figures = {
            "job_items": 500,
            "deadline": job["deadline"],
            "visibility_timeout_s": 60,
            "wait_poll_max_s": 30,
            "watched_s": round(watched_s, 1),
            "polls": len(poll_times),
            "poll_task_ids": len(polls),
            "polls_with_token": sum(poll_tokens.values()),
            "distinct_tokens": len(poll_tokens),
            "token_reused": sum(1 for n in poll_tokens.values() if n > 1),
            "redelivered_messages": redelivered,
            "poll_gap_s": {"min": min(gaps, default=None), "max": max(gaps, default=None)},
            "max_broker_copies_while_waiting": max(copies, default=0),
            "min_broker_copies_while_waiting": min(copies, default=0),
            "broker_copies_after_report": after_copies[:1] + after_copies[-1:],
            "job_status_samples": dict(statuses),
            "report_answer": answer.status_code,
            "final_status": final["status"],
            "finished_after_report_ms": round(finished_after_ms, 1),
            "finalize_tasks": len(finalizes),
            "finalize_results": finalize_results,
            "finalizes_that_closed_the_job": len(closing),
            "closes_logged": closes,
            "closed_by_report_listener": by_listener,
            "polls_after_report": sum(1 for t in poll_times if t > reported_wall),
            "events_recorded": len(events),
        }
        met = (
            redelivered == 0
            and figures["token_reused"] == 0
            and figures["max_broker_copies_while_waiting"] <= 1
            and set(statuses) == {"processing"}
            and final["status"] == "completed"
            and closes == 1
            and len(closing) + by_listener == 1
            and after_copies[-1:] == [0]
            and figures["polls_after_report"] <= 1
            and watched_s >= (55 if quick else 300)
        )
        emit(NAME, "summary", **figures, met=met)
        return met
