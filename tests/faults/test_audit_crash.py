"""The web process killed mid-request while people submit and cancel (CONTRACT §12): no
change without its audit entry, no entry without its change."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import requests

from orchestrator.config import bare_token_name
from tests.integration.harness import API_TOKEN, orders

from .conftest import record, rig

pytestmark = pytest.mark.faults

OPS_TOKEN = "ops-fault-s3cr3t"
WORKERS = 6


def _stream(base: str, stop: threading.Event, answered: Counter, lock: threading.Lock) -> None:
    """Submit a job and cancel it, over and over, until told to stop; count the answers."""
    session = requests.Session()
    submit_headers = {"Authorization": f"Bearer {API_TOKEN}"}
    cancel_headers = {"Authorization": f"Bearer {OPS_TOKEN}"}
    try:
        while not stop.is_set():
            try:
                made = session.post(
                    f"{base}/api/jobs",
                    json={"orders": orders(2)},
                    headers=submit_headers,
                    timeout=10,
                )
                outcome = f"submit {made.status_code}"
                if made.status_code == 202:
                    job_id = made.json()["id"]
                    with lock:
                        answered[outcome] += 1
                    gone = session.post(
                        f"{base}/api/jobs/{job_id}/cancel", headers=cancel_headers, timeout=10
                    )
                    outcome = f"cancel {gone.status_code}"
            except requests.RequestException:
                outcome = "connection lost"
                stop.wait(0.05)  # the web process is down: do not spin while it restarts
            with lock:
                answered[outcome] += 1
    finally:
        session.close()


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_web_process_killed_mid_request_leaves_every_change_with_its_entry(
    log_dir, database
) -> None:
    with rig(
        log_dir,
        database=database,
        names=("web",),  # no worker: jobs stay pending, so every one can be cancelled
        API_TOKENS=f"{API_TOKEN},ops:operate:{OPS_TOKEN}",
    ) as r:
        base = r.system.base
        stop = threading.Event()
        answered: Counter = Counter()
        lock = threading.Lock()
        threads = [
            threading.Thread(target=_stream, args=(base, stop, answered, lock))
            for _ in range(WORKERS)
        ]
        for thread in threads:
            thread.start()
        try:
            r.wait(lambda: answered["cancel 200"] >= 20, 120, "twenty cancels answered")
            r.system.processes["web"].kill()  # SIGKILL, requests in flight
            r.wait(lambda: answered["connection lost"] >= WORKERS, 60, "every stream to notice")
            r.system.start_process("web", label="web-2")
            seen = answered["cancel 200"]
            r.wait(lambda: answered["cancel 200"] >= seen + 20, 120, "twenty more cancels")
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)

        jobs = dict(r.db.rows("SELECT id, status FROM jobs"))
        by_bare_token = r.db.scalar(
            "SELECT count(*) FROM jobs WHERE created_by = :n", n=bare_token_name(API_TOKEN)
        )
        entries = r.db.rows("SELECT action, target, outcome FROM audit_entries")
        submitted = Counter(t for a, t, o in entries if a == "job.submitted" and o == "ok")
        cancelled = Counter(t for a, t, o in entries if a == "job.cancelled" and o == "ok")

        # No change without its entry, and no entry without its change: exactly one each.
        assert submitted == Counter(jobs.keys())
        cancelled_jobs = [job_id for job_id, status in jobs.items() if status == "cancelled"]
        assert cancelled == Counter(cancelled_jobs)
        assert by_bare_token == len(jobs)  # createdBy: the bare token's name, every job
        assert answered["cancel 200"] <= len(cancelled_jobs)
        assert answered["submit 202"] <= len(jobs)
        record(
            f"web killed amid submits and cancels ({r.kind})",
            jobs=len(jobs),
            cancelled=len(cancelled_jobs),
            connections_lost=answered["connection lost"],
        )
