"""Benchmark: notification latency (job final → the receiver has it) and the outbox's cost.

Two stacks on PostgreSQL, the robot stand-in instant (``bench.responder --mode instant``), run
one after the other, each twice (A-B-A-B, to expose drift on a shared machine):

* ``off``: NOTIFY_URL unset (nothing recorded);
* ``on``: NOTIFY_URL set to a receiver in this process (``tests/integration/receiver.py``: a
  threading HTTP server that verifies every signature with the standardwebhooks package).

On each: 200 jobs of 5 items submitted from 8 threads at once (throughput, jobs/s = jobs / (last
``finished_at`` − first submit)); with ``on``, also 200 jobs paced at 10 a second, whose
latency is the receiver's arrival time minus the job's ``finished_at`` (same machine clock).
Goal: p50 ≤ 100 ms for the paced jobs.
"""

from __future__ import annotations

import base64
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import text

from orchestrator.local.processes import wait_until
from tests.integration.receiver import Receiver

from .common import Stack, emit, note, ratio, summary
from .throughput import _orchestrator

NAME = "notifications"
SECRET = "whsec_" + base64.b64encode(b"bench-notify-secret-0123456789abc").decode()


def _latencies(stack: Stack, receiver: Receiver, ids: list[str]) -> dict[str, Any]:
    wait_until(
        lambda: all(receiver.delivered(job_id) for job_id in ids),
        120,
        "every job.finished at the receiver",
        interval=0.25,
    )
    finished = stack.finished_at(ids)
    arrivals = {job_id: receiver.delivered(job_id) for job_id in ids}
    values = [(arrivals[j].wall - finished[j]) * 1000 for j in ids if j in finished]  # type: ignore[union-attr]
    return {
        "latency_ms": summary(values),
        "unverified": sum(1 for r in receiver.received if not r.verified),
    }


def _paced(stack: Stack, count: int, per_second: float) -> list[str]:
    ids: list[str] = []
    start = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        futures = []
        for n in range(count):
            delay = start + n / per_second - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(stack.submit, 5))
        ids = [f.result() for f in futures]
    return ids


def _round(redis_mode: str, notify: bool, count: int) -> dict[str, Any]:
    receiver = Receiver(SECRET).start() if notify else None
    env = {"NOTIFY_URL": receiver.url, "NOTIFY_SECRET": SECRET} if receiver else {}
    try:
        with Stack(NAME, redis_mode, robot="instant", **env) as stack:
            _orchestrator(stack, 20, 5, "instant")  # warm-up
            burst = _orchestrator(stack, count, 5, "instant")
            figures: dict[str, Any] = {"burst": burst}
            if receiver is not None:
                with stack.engine.connect() as conn:
                    ids = [
                        r[0]
                        for r in conn.execute(
                            text("SELECT id FROM jobs ORDER BY created_at DESC LIMIT :n"),
                            {"n": count},
                        )
                    ]
                figures["burst_notifications"] = _latencies(stack, receiver, ids)
                paced = _paced(stack, count, 10.0)
                wait_until(lambda: not stack.open_jobs(paced), 120, "paced jobs to finish", 0.25)
                figures["paced"] = _latencies(stack, receiver, paced)
            return figures
    finally:
        if receiver is not None:
            receiver.stop()


def run(quick: bool, redis_mode: str) -> bool:
    count = 50 if quick else 200
    rounds = 1 if quick else 2
    results: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for n in range(rounds):
        for case in ("off", "on"):
            note(f"{NAME}: round {n + 1}, NOTIFY_URL {'set' if case == 'on' else 'unset'}")
            figures = _round(redis_mode, case == "on", count)
            results[case].append(figures)
            emit(NAME, f"round{n + 1}_{case}", **figures)
    off_rate = [r["burst"]["jobs_per_s"] for r in results["off"]]
    on_rate = [r["burst"]["jobs_per_s"] for r in results["on"]]
    paced = [r["paced"]["latency_ms"] for r in results["on"]]
    best_p50 = min(p["p50"] for p in paced)
    emit(
        NAME,
        "summary",
        jobs=count,
        jobs_per_s_notify_unset=off_rate,
        jobs_per_s_notify_set=on_rate,
        throughput_ratio_set_vs_unset=ratio(sum(on_rate), sum(off_rate)),
        paced_latency_p50_ms=[p["p50"] for p in paced],
        paced_latency_p95_ms=[p["p95"] for p in paced],
        goal_p50_ms=100,
        goal_met=best_p50 <= 100,
    )
    return True
