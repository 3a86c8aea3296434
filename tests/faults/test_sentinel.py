"""Scenario 13: Redis Sentinel fails the master over under load (CONTRACT §10).

A private master, replica and three Sentinels; ``REDIS_URL`` lists the Sentinels and
``REDIS_SENTINEL_MASTER`` names the group, for the rendezvous and the broker alike. Twenty
jobs wait; the robot's callbacks (retried on 503, as a robot does) are in flight across the
failover. Every callback answer is counted: none may be a 500.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from .conftest import record, rig
from .tools import SentinelGroup, attempts, event_body, post_event, signed_headers

pytestmark = pytest.mark.faults

JOBS = 20


def _report(base: str, job_id: str, item_id: str, answers: Counter[int], lock: threading.Lock):
    """Send the job's item result and batch completion, retrying each until it is applied."""
    for event_type, data in (
        ("robot.item.completed", {"itemId": item_id, "status": "success", "trackingNumber": "T1"}),
        ("robot.batch.completed", {"items": []}),
    ):
        body = event_body(event_type, data)
        headers = signed_headers(job_id, body)  # one webhook-id, every retry the same
        for _ in range(200):
            try:
                status = post_event(base, job_id, body, headers).status_code
            except requests.RequestException:
                status = -1  # no answer at all: retried like a 503
            with lock:
                answers[status] += 1
            if status == 200:
                break
            time.sleep(0.2)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("how", ["sentinel_failover", "master_sigkilled"])
def test_a_sentinel_failover_loses_no_job_and_answers_no_500(log_dir: Path, how: str) -> None:
    group = SentinelGroup(log_dir, db=3).start()
    try:
        with rig(
            log_dir,
            database="postgres",
            robot_args="--workers 32",
            redis_url=group.url,
            REDIS_SENTINEL_MASTER=group.master_name,
            ROBOT_DEADLINE_MARGIN_SECONDS="600",
            # Rare: a report whose announcement the failover lost must be found by the
            # report listener when it subscribes again, not by housekeeping.
            HOUSEKEEPING_INTERVAL_SECONDS="120",
        ) as r:
            r.system.robot_config(mode="never_finish")
            jobs = r.submit_many(JOBS, items=1)
            r.wait(lambda: len(r.robot_dispatches()) == JOBS, 60, "every job dispatched")
            items = dict(r.db.rows("SELECT job_id, id FROM items"))
            answers: Counter[int] = Counter()
            lock = threading.Lock()

            def robot() -> None:
                # One job reported every 0.25 s: about 5 s of callbacks around the failover.
                with ThreadPoolExecutor(4) as pool:
                    futures = []
                    for job_id in jobs:
                        futures.append(
                            pool.submit(
                                _report, r.system.base, job_id, items[job_id], answers, lock
                            )
                        )
                        time.sleep(0.25)
                    for future in futures:
                        future.result()

            sender = threading.Thread(target=robot)
            sender.start()
            try:
                r.wait(lambda: answers[200] >= JOBS // 2, 30, "a quarter of the jobs reported")
                promoted = group.failover() if how == "sentinel_failover" else group.kill_master()
            finally:
                sender.join()
            r.wait(
                lambda: r.db.all_final(JOBS),
                max(1.0, 60 - (time.monotonic() - promoted)),
                "every reported job final within 60 s of the promotion",
            )
            final_after = round(time.monotonic() - promoted, 2)
            health = requests.get(f"{r.system.base}/healthz", timeout=5).json()

            assert dict(r.db.job_statuses()) == {"completed": JOBS}
            assert set(dict(r.db.rows("SELECT status, count(*) FROM items GROUP BY status"))) == {
                "success"
            }
            assert answers[500] == 0
            assert set(answers) <= {200, 503, -1}, answers
            stats = r.system.robot_stats()
            assert stats["totalDispatches"] == JOBS and set(stats["dispatches"].values()) == {1}
            assert set(attempts(log_dir).values()) == {1}
            unannounced = r.system.processes["web"].log().count("unavailable to announce it")
            if unannounced:
                assert "reported while it was away" in r.system.processes["worker"].log()
            assert health == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}
            record(
                f"sentinel {how}",
                jobs=JOBS,
                callbacks_answered=sum(answers.values()),
                answers=dict(answers),
                reports_not_announced=unannounced,
                all_final_after_promotion_s=final_after,
                dispatches_per_job=1,
            )
    finally:
        group.stop()
