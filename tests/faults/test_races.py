"""Scenario 7: races — concurrent submits, concurrent deliveries, a report at the deadline."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest
import requests
from celery import Celery

from tests import REDIS_PORT
from tests.integration.harness import API_TOKEN, orders

from .conftest import Rig, record, rig
from .tools import event_body, post_event, signed_headers

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def racing(request, tmp_path_factory) -> Iterator[Rig]:
    with rig(
        tmp_path_factory.mktemp(f"races-{request.param}"),
        database=request.param,
        ROBOT_SECONDS_PER_ITEM="1",
        ROBOT_DEADLINE_MARGIN_SECONDS="3",
    ) as r:
        yield r


def _all_at_once(count: int, call: Callable[[int], Any]) -> list[Any]:
    """Run ``call`` in ``count`` threads released together by a barrier."""
    barrier = threading.Barrier(count)

    def run(index: int) -> Any:
        barrier.wait(10)
        return call(index)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def _worker_log(r: Rig) -> str:
    return "\n".join(p.log() for n, p in r.system.processes.items() if n.startswith("worker"))


def test_twenty_concurrent_submits_with_one_key_make_one_job_and_one_dispatch(
    racing: Rig,
) -> None:
    r = racing
    r.system.robot_reset()
    body = {"orders": orders(2)}
    headers = {"Authorization": f"Bearer {API_TOKEN}", "Idempotency-Key": uuid.uuid4().hex}

    url = f"{r.system.base}/api/jobs"
    answers = _all_at_once(20, lambda _: requests.post(url, json=body, headers=headers, timeout=30))

    codes = Counter(answer.status_code for answer in answers)
    assert codes[202] == 1, codes
    assert set(codes) <= {202, 200, 409}, codes
    ids = {answer.json()["id"] for answer in answers if answer.status_code in (200, 202)}
    assert len(ids) == 1
    job_id = ids.pop()
    order_id = body["orders"][0]["orderId"]
    assert r.db.scalar("SELECT count(*) FROM items WHERE order_id = :o", o=order_id) == 1
    assert r.system.wait_final(job_id)["status"] == "completed"
    assert r.system.robot_stats()["dispatches"][job_id] == 1
    record(
        f"7a 20 concurrent submits, one Idempotency-Key ({r.kind})",
        answers="/".join(f"{code}x{n}" for code, n in sorted(codes.items())),
        jobs=1,
        robot_dispatches=1,
    )


def test_ten_concurrent_deliveries_of_one_webhook_id_apply_once(racing: Rig) -> None:
    r = racing
    r.system.robot_reset()
    r.system.robot_config(mode="never_finish")
    job_id = r.system.submit(orders(2)).json()["id"]
    r.wait(lambda: r.system.job(job_id)["dispatchedAt"], 30, "the dispatch")
    items = r.system.job(job_id)["items"]
    results = [
        {"itemId": item["id"], "status": "success", "trackingNumber": f"CO-RACE-{n}"}
        for n, item in enumerate(items)
    ]

    outcomes: dict[str, Counter[Any]] = {}
    for event_type, data in (
        ("robot.item.completed", results[0]),
        ("robot.batch.completed", {"items": results}),
    ):
        webhook_id = f"msg_{uuid.uuid4().hex}"
        body = event_body(event_type, data)
        headers = signed_headers(job_id, body, webhook_id)
        answers = _all_at_once(
            10, lambda _, b=body, h=headers: post_event(r.system.base, job_id, b, h)
        )
        outcomes[event_type] = Counter(
            (a.status_code, a.json().get("status", a.json().get("error", {}).get("code")))
            for a in answers
        )
        assert outcomes[event_type] == Counter({(200, "applied"): 1, (200, "duplicate"): 9})
        rows = r.db.scalar("SELECT count(*) FROM events WHERE webhook_id = :w", w=webhook_id)
        assert rows == 1

    job = r.system.wait_final(job_id)
    assert job["status"] == "completed"
    assert [(i["status"], i["trackingNumber"]) for i in job["items"]] == [
        ("success", "CO-RACE-0"),
        ("success", "CO-RACE-1"),
    ]
    r.wait(lambda: f"job {job_id} completed" in _worker_log(r), 30, "the finalize log line")
    assert _worker_log(r).count(f"job {job_id} completed") == 1
    record(
        f"7b 10 concurrent deliveries of one webhook-id ({r.kind})",
        item_completed="applied 1, duplicate 9",
        batch_completed="applied 1, duplicate 9",
        finalized=1,
    )


def test_batch_completed_exactly_at_the_deadline_gives_one_consistent_final_state(
    racing: Rig,
) -> None:
    r = racing
    r.system.robot_reset()
    r.system.robot_config(mode="never_finish")
    jobs = [r.system.submit(orders(2)).json()["id"] for _ in range(8)]
    r.wait(lambda: all(r.system.job(j)["deadline"] for j in jobs), 30, "8 dispatches")
    celery = Celery(broker=r.system.redis_url)
    celery.conf.task_default_queue = "orchestrator"
    # Around each deadline: the report and a finalize task (as the waiting chain would send)
    # leave together; the offsets put either one first, by a hair.
    offsets = [-0.03, -0.01, 0.0, 0.0, 0.005, 0.01, 0.02, 0.04]
    tries: dict[str, int] = {}

    def race(index: int) -> tuple[str, int, str, list[dict[str, Any]]]:
        job_id = jobs[index]
        job = r.system.job(job_id)
        results = [
            {"itemId": item["id"], "status": "success", "trackingNumber": f"CO-D{index}-{n}"}
            for n, item in enumerate(job["items"])
        ]
        body = event_body("robot.batch.completed", {"items": results})
        deadline = datetime.fromisoformat(job["deadline"]).timestamp() + offsets[index]
        time.sleep(max(0.0, deadline - time.time()))  # a wall-clock instant, not a condition
        celery.send_task("orchestrator.finalize", args=(job_id,))
        headers = signed_headers(job_id, body)
        tries[job_id] = 0
        for _attempt in range(6):  # as the robot does: a 5xx is retried
            tries[job_id] += 1
            answer = post_event(r.system.base, job_id, body, headers)
            if answer.status_code < 500:
                break
            time.sleep(0.2)
        return job_id, answer.status_code, answer.json().get("status", ""), results

    try:
        raced = _all_at_once(len(jobs), race)
    finally:
        celery.close()

    ways: Counter[str] = Counter()
    for job_id, code, outcome, results in raced:
        job = r.system.wait_final(job_id, timeout=30)
        assert code == 200
        if outcome == "applied":  # the report won: completed, whatever the deadline did
            assert (job["status"], job["error"]) == ("completed", None)
        else:  # the deadline won: failed, and the report was recorded as late
            assert outcome == "late"
            assert job["status"] == "failed" and "deadline" in job["error"]
        # Either way no result is lost: late results fill the unknown items.
        assert [(i["status"], i["trackingNumber"]) for i in job["items"]] == [
            ("success", result["trackingNumber"]) for result in results
        ]
        ways[job["status"]] += 1
    # One final state each, and it stays: a few more housekeeping runs change nothing.
    log = _worker_log(r)
    for job_id, *_ in raced:
        assert log.count(f"job {job_id} completed") + log.count(f"job {job_id} failed") == 1
    runs = _worker_log(r).count("orchestrator.housekeeping[")
    r.wait(
        lambda: _worker_log(r).count("orchestrator.housekeeping[") >= runs + 6, 30, "housekeeping"
    )
    assert {r.system.job(job_id)["status"] for job_id, *_ in raced} <= {"completed", "failed"}
    assert Counter(r.system.job(job_id)["status"] for job_id, *_ in raced) == ways
    retried = sum(1 for count in tries.values() if count > 1)
    # No step lost a deadlock or crashed on the way (PostgreSQL: lock order job -> items).
    assert "raised unexpected" not in _worker_log(r)
    assert retried == 0
    record(
        f"7c batch.completed at the deadline ({r.kind})",
        jobs=len(jobs),
        report_won=ways["completed"],
        deadline_won=ways["failed"],
        inconsistent=0,
        callbacks_needing_retry=retried,
    )


def test_racing_first_uses_of_redis_share_one_client(monkeypatch) -> None:
    """Two clients made by racing threads once left one unreferenced mid-command (a 500)."""
    from orchestrator import rendezvous

    real = rendezvous.redis.Redis.from_url

    def slow_from_url(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.05)  # widen the window between looking up and storing the client
        return real(*args, **kwargs)

    monkeypatch.setattr(rendezvous.redis.Redis, "from_url", slow_from_url)
    url = f"redis://127.0.0.1:{REDIS_PORT}/1?race={uuid.uuid4().hex}"
    try:
        clients = _all_at_once(10, lambda _: rendezvous.get_redis(url))
        assert len({id(client) for client in clients}) == 1
    finally:
        client = rendezvous._clients.pop((os.getpid(), url), None)
        if client is not None:
            client.close()
