"""Scenario 4: PostgreSQL unreachable during callbacks (every connection cut, new ones refused)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.integration.harness import orders

from .conftest import Rig, record, rig
from .tools import Stopwatch

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def cut(tmp_path_factory) -> Iterator[Rig]:
    with rig(
        tmp_path_factory.mktemp("database-outage"),
        database="postgres",
        cuttable_database=True,
        robot_args="--workers 32",
        ROBOT_SECONDS_PER_ITEM="5",
        ROBOT_DEADLINE_MARGIN_SECONDS="60",
    ) as r:
        yield r


def _health(r: Rig) -> int:
    return requests.get(f"{r.system.base}/healthz", timeout=10).status_code


def test_callback_during_a_database_cut_answers_503_and_its_retry_applies_once(cut: Rig) -> None:
    r = cut
    assert r.proxy is not None
    r.system.robot_reset()
    r.system.robot_config(mode="never_finish")
    job_id = r.system.submit(orders(2)).json()["id"]
    r.wait(lambda: r.system.job(job_id)["dispatchedAt"], 30, "the dispatch")
    item = r.system.job(job_id)["items"][1]
    result = {"itemId": item["id"], "status": "success", "trackingNumber": "CO-RETRIED"}
    webhook_id = f"msg_{uuid.uuid4().hex}"

    r.proxy.cut()
    outage = Stopwatch()
    during = r.system.send_event(job_id, "robot.item.completed", result, webhook_id=webhook_id)
    health = _health(r)
    r.proxy.restore()
    r.wait(lambda: _health(r) == 200, 30, "the database to answer again")
    back_in = outage.seconds()

    assert during.status_code == 503, during.text
    assert during.json()["error"]["code"] == "unavailable"
    assert health == 503
    # Nothing of the refused delivery was applied.
    assert r.db.scalar("SELECT count(*) FROM events WHERE webhook_id = :w", w=webhook_id) == 0
    assert r.db.scalar("SELECT status FROM items WHERE id = :i", i=item["id"]) == "processing"

    retry = r.system.send_event(job_id, "robot.item.completed", result, webhook_id=webhook_id)
    again = r.system.send_event(job_id, "robot.item.completed", result, webhook_id=webhook_id)

    assert (retry.status_code, retry.json()["status"]) == (200, "applied")
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert r.db.scalar("SELECT count(*) FROM events WHERE webhook_id = :w", w=webhook_id) == 1
    after = r.system.job(job_id)["items"][1]
    assert (after["status"], after["trackingNumber"]) == ("success", "CO-RETRIED")
    record(
        "4a callback during a database cut",
        first_answer=during.status_code,
        retry=retry.json()["status"],
        replay=again.json()["status"],
        event_rows=1,
        database_back_s=back_in,
    )


def test_robot_retries_through_a_database_cut_and_the_job_completes(cut: Rig) -> None:
    r = cut
    assert r.proxy is not None
    r.system.robot_reset()
    r.system.robot_config(item_delay=0.4)
    job_id = r.system.submit(orders(6)).json()["id"]
    r.wait(lambda: r.system.job(job_id)["counts"]["success"] >= 1, 30, "the first result")
    refused = re.compile(rf'POST /api/robot/jobs/{job_id}/events HTTP/1.1" 503')

    r.proxy.cut()
    outage = Stopwatch()
    r.wait(lambda: len(refused.findall(r.system.processes["web"].log())) >= 3, 30, "3 refusals")
    r.proxy.restore()
    cut_for = outage.seconds()
    job = r.system.wait_final(job_id, timeout=60)

    assert job["status"] == "completed"
    assert job["counts"]["success"] == 6
    assert r.system.robot_stats()["dispatches"][job_id] == 1
    # What the robot sent for this job, as its log says: one line per answered attempt.
    sent = re.findall(
        rf"job {job_id}: sent \S+ (msg_\w+) -> (\d+)", r.system.processes["robot"].log()
    )
    delivered = {msg for msg, status in sent if status == "200"}
    retried = {msg for msg, status in sent if status == "503"}
    rows = r.db.rows(
        "SELECT webhook_id, count(*) FROM events WHERE job_id = :j GROUP BY webhook_id", j=job_id
    )
    # 6 started + 6 completed + 1 batch report, each applied once however often it was sent.
    assert {msg for msg, _ in rows} == delivered
    assert len(delivered) == 13
    assert {count for _, count in rows} == {1}
    assert retried and retried <= delivered
    record(
        "4b robot retries through a database cut",
        database_cut_s=cut_for,
        callbacks_answered_503=sum(1 for _, status in sent if status == "503"),
        events_retried_then_applied=len(retried),
        events_applied=len(rows),
        final=job["status"],
    )
