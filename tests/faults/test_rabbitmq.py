"""Scenarios 11 and 12: RabbitMQ as the broker (CONTRACT §10), on a private node.

The node runs with ``consumer_timeout = 60000``: a countdown held unacknowledged in a worker
for longer closes its channel and stops the worker. Native delayed delivery keeps every wait
in the broker's ``celery_delayed_*`` queues instead. One node per module (it takes seconds to
start); each scenario starts its own system on it. Redis stays the rendezvous.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis

from orchestrator.local.rabbitmq import PrivateRabbitMQ
from orchestrator.rendezvous import poller_key

from .conftest import Rig, record, rig
from .tools import Stopwatch, attempts, event_body, post_event, signed_headers

pytestmark = pytest.mark.faults

CONSUMER_TIMEOUT_S = 60
# Worker log lines that mean the consumer timeout (or any broker trouble) struck the worker.
BROKER_TROUBLE = ("PRECONDITION_FAILED", "Unrecoverable error", "acknowledgement", "timed out")


@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[PrivateRabbitMQ]:
    """A private RabbitMQ node for this module, stopped (and its folder removed) after."""
    # Not pytest's tmp_path: its parents are private to root, and the node runs as rabbitmq.
    base = Path(tempfile.mkdtemp(prefix="orch-rabbitmq-"))
    base.chmod(0o755)
    node = PrivateRabbitMQ(base, consumer_timeout_ms=CONSUMER_TIMEOUT_S * 1000)
    try:
        yield node.start()
    finally:
        node.stop()
        shutil.rmtree(base, ignore_errors=True)


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _worker_log(r: Rig) -> str:
    return r.system.processes["worker"].log()


def _delayed(node: PrivateRabbitMQ) -> int:
    return sum(n for q, n in node.queue_depths().items() if q.startswith("celery_delayed_"))


@pytest.mark.timeout(480)
def test_a_wait_of_three_consumer_timeouts_leaves_the_worker_running(
    log_dir: Path, rabbitmq: PrivateRabbitMQ
) -> None:
    wait_s = 3 * CONSUMER_TIMEOUT_S
    with rig(
        log_dir,
        database="postgres",
        CELERY_BROKER_URL=rabbitmq.url,
        ROBOT_SECONDS_PER_ITEM="1",
        ROBOT_DEADLINE_MARGIN_SECONDS=str(wait_s + 5),
        ROBOT_SETTLE_SECONDS="2",
        # Rare, so that the deadline job is settled by its own chain, not by housekeeping.
        HOUSEKEEPING_INTERVAL_SECONDS="30",
    ) as r:
        worker = r.system.processes["worker"]
        pid = worker.popen.pid
        rdb = redis.Redis.from_url(r.system.redis_url)
        r.system.robot_config(mode="never_finish")
        silent, woken = r.submit_many(2, items=1, threads=1)
        jobs = {j: r.system.job(j) for j in (silent, woken)}
        r.wait(lambda: len(r.robot_dispatches()) == 2, 60, "both dispatched")

        # The settle countdown: the first wait starts ROBOT_SETTLE_SECONDS after dispatch.
        r.wait(lambda: rdb.exists(poller_key(woken)), 30, "the first wait of the job")
        first_wait = time.time()
        dispatched_at = _ts(r.system.job(woken)["dispatchedAt"])
        settle_gap = round(first_wait - dispatched_at, 2)
        assert settle_gap >= 2.0

        # The waits live in the broker's delay queues, not unacknowledged in the worker.
        r.wait(lambda: _delayed(rabbitmq) >= 2, 30, "two waits in the delay queues")
        # A ready message may still be on its way to the worker on a loaded machine: wait.
        r.wait(lambda: rabbitmq.queue_depths().get("orchestrator", 0) == 0, 30, "no ready message")

        # One consumer timeout and more into the wait, the robot reports the second job.
        r.wait(
            lambda: time.time() - first_wait > CONSUMER_TIMEOUT_S + 10,
            CONSUMER_TIMEOUT_S + 20,
            "a consumer timeout to pass",
        )
        assert worker.alive() and worker.popen.pid == pid
        body = event_body("robot.batch.completed", {"items": []})
        answer = post_event(r.system.base, woken, body, signed_headers(woken, body))
        assert answer.status_code == 200, answer.text
        wake = Stopwatch()
        r.wait(lambda: r.system.job(woken)["status"] == "completed", 10, "the woken job")
        woken_in = wake.seconds()
        assert f"job {woken}: closed by the report listener on its wake-up" in _worker_log(r)

        # The silent job settles at its deadline, three consumer timeouts after dispatch.
        deadline = _ts(jobs[silent]["deadline"] or r.system.job(silent)["deadline"])
        final = r.system.wait_final(silent, timeout=wait_s + 60)
        assert final["status"] == "failed" and "deadline" in final["error"]
        settled_late_by = round(_ts(final["finishedAt"]) - deadline, 2)
        assert 0 <= settled_late_by < 60
        assert _ts(final["finishedAt"]) - _ts(final["dispatchedAt"]) >= wait_s

        log = _worker_log(r)
        assert worker.alive() and worker.popen.pid == pid
        assert not [line for line in log.splitlines() if any(t in line for t in BROKER_TROUBLE)]
        # The deadline job's own chain (its poll, then finalize) settled it.
        assert re.search(r"Task orchestrator\.finalize\[[0-9a-f-]+\] succeeded", log)
        # Housekeeping runs through RabbitMQ as well (beat → broker → worker).
        assert re.search(r"Task orchestrator\.housekeeping\[[0-9a-f-]+\] succeeded", log)
        assert set(r.robot_dispatches().values()) == {1}
        assert set(attempts(log_dir).values()) == {1}
        record(
            "rabbitmq consumer timeout 60 s",
            wait_s=round(_ts(final["finishedAt"]) - _ts(final["dispatchedAt"]), 1),
            worker_pid_unchanged=True,
            woken_after_report_s=woken_in,
            deadline_settled_late_by_s=settled_late_by,
            settle_gap_s=settle_gap,
        )


@pytest.mark.timeout(300)
def test_rabbitmq_restarted_mid_wait_loses_no_job_and_dispatches_none_twice(
    log_dir: Path, rabbitmq: PrivateRabbitMQ
) -> None:
    with rig(
        log_dir,
        database="postgres",
        robot_args="--workers 32",
        CELERY_BROKER_URL=rabbitmq.url,
        ROBOT_SECONDS_PER_ITEM="2",
        ROBOT_DEADLINE_MARGIN_SECONDS="30",
        ROBOT_SETTLE_SECONDS="1",
    ) as r:
        worker = r.system.processes["worker"]
        pid = worker.popen.pid
        # Reported after the restart: the robot takes 12 s per job.
        r.system.robot_config(item_delay=4.0)
        reported = r.submit_many(8, items=3)
        r.wait(lambda: len(r.robot_dispatches()) == 8, 60, "the reported jobs dispatched")
        # Never reported: only their deadline (about 36 s after dispatch) settles them.
        r.system.robot_config(mode="never_finish")
        silent = r.submit_many(3, items=3)
        r.wait(lambda: len(r.robot_dispatches()) == 11, 60, "the silent jobs dispatched")
        r.system.robot_config(mode="normal", item_delay=4.0)
        r.wait(lambda: _delayed(rabbitmq) >= 11, 30, "every wait in the delay queues")

        outage = Stopwatch()
        rabbitmq.restart()
        down_for = outage.seconds()
        # Submitted once the node is back: the web app's publisher reconnects by itself.
        after = r.submit_many(2, items=1)
        recovery = Stopwatch()
        r.wait(lambda: r.db.all_final(13), 120, "every job to finish")
        recovered_in = recovery.seconds()

        statuses = dict(r.db.rows("SELECT id, status FROM jobs"))
        assert {statuses[j] for j in reported + after} == {"completed"}
        assert {statuses[j] for j in silent} == {"failed"}
        stats = r.system.robot_stats()
        assert stats["totalDispatches"] == 13
        assert set(stats["dispatches"].values()) == {1}
        assert set(attempts(log_dir).values()) == {1} and len(attempts(log_dir)) == 13
        # The worker rode the restart out: the same process, reconnected.
        assert worker.alive() and worker.popen.pid == pid
        record(
            "rabbitmq node restarted mid-wait",
            jobs=13,
            node_down_and_up_s=down_for,
            all_final_after_restart_s=recovered_in,
            dispatches_per_job=1,
            worker_pid_unchanged=True,
        )
