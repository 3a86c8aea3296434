"""Signed notifications to a real receiver (CONTRACT §8), from the Procfile's real processes.

One system on SQLite with a small backoff (0.4 s) and give-up window (14 s); the receiver is a
threading HTTP server in this process that verifies every signature with the standardwebhooks
package on its own. The scenarios run one after the other, each waiting for its own
notifications to settle, so that the receiver's script of answers is theirs alone.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from orchestrator.local.processes import bin_path, run_line

from .conftest import flush_redis
from .harness import System, orders, wait_until
from .receiver import Answer, Receiver

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"integration-notify-secret-0123456").decode()
BACKOFF = 0.4
GIVE_UP = 14.0
REDIS_DB = 12


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    running = Receiver(SECRET).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def system(tmp_path_factory, receiver: Receiver) -> Iterator[System]:
    log_dir = tmp_path_factory.mktemp("notifications")
    flush_redis(REDIS_DB)
    running = System(
        log_dir,
        f"sqlite:///{log_dir / 'orchestrator.db'}",
        redis_db=REDIS_DB,
        HOUSEKEEPING_INTERVAL_SECONDS="1",
        NOTIFY_URL=receiver.url,
        NOTIFY_SECRET=SECRET,
        NOTIFY_BACKOFF_SECONDS=str(BACKOFF),
        NOTIFY_GIVE_UP_SECONDS=str(GIVE_UP),
    )
    running.extra_args["beat"] = f"--schedule={log_dir / 'celerybeat-schedule'}"
    try:
        yield running.start()
    finally:
        running.stop()
        flush_redis(REDIS_DB)


@pytest.fixture
def robot(system: System) -> Iterator[System]:
    system.robot_reset()
    yield system
    system.robot_reset()


def notes(system: System, **query: Any) -> list[dict[str, Any]]:
    answer = system.http.get(
        f"{system.base}/api/notifications",
        params={"limit": 200, **query},
        headers=system.headers(),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["notifications"]


def note_of(system: System, job_id: str, type: str = "job.finished") -> dict[str, Any] | None:
    found = [n for n in notes(system) if n["jobId"] == job_id and n["type"] == type]
    return found[0] if found else None


def settled(system: System, job_id: str, type: str = "job.finished") -> dict[str, Any] | None:
    note = note_of(system, job_id, type)
    return note if note is not None and note["status"] != "pending" else None


def wait(what: str, check: Any, system: System, timeout: float = 60) -> Any:
    try:
        return wait_until(check, timeout, what, interval=0.05)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{system.logs()}") from None


def finished_job(system: System, count: int = 2, **pedido: Any) -> dict[str, Any]:
    answer = system.submit(orders(count, **pedido))
    assert answer.status_code == 202, answer.text
    return system.wait_final(answer.json()["id"])


def test_a_finished_job_is_delivered_signed_with_the_job_as_the_api_shows_it(
    robot: System, receiver: Receiver
) -> None:
    job = finished_job(robot)
    got = wait("the receiver to get job.finished", lambda: receiver.delivered(job["id"]), robot)

    assert got.verified  # standardwebhooks.Webhook(secret).verify(body, headers) held
    assert got.path == "/hooks/orchestrator"
    assert got.body is not None and set(got.body) == {"type", "timestamp", "data"}
    assert got.type == "job.finished"
    assert got.body["data"] == robot.job(job["id"])  # the job with its items, as GET shows it
    assert got.body["data"]["status"] == "completed" and len(got.body["data"]["items"]) == 2
    assert got.body["timestamp"].endswith("+00:00")
    note = wait("delivered in the API", lambda: settled(robot, job["id"]), robot)
    assert (note["id"], note["status"], note["attempts"]) == (got.webhook_id, "delivered", 1)
    assert note["lastError"] is None and note["deliveredAt"] and note["nextAttemptAt"] is None
    assert len(receiver.for_job(job["id"])) == 1


def test_a_cancelled_job_is_notified_too(robot: System, receiver: Receiver) -> None:
    robot.robot_config(mode="never_finish")
    answer = robot.submit(orders(1))
    job_id = answer.json()["id"]
    cancel = robot.http.post(
        f"{robot.base}/api/jobs/{job_id}/cancel", headers=robot.headers(), timeout=10
    )
    assert cancel.status_code == 200
    got = wait("job.finished of the cancel", lambda: receiver.delivered(job_id), robot)
    assert got.verified and got.body["data"]["status"] == "cancelled"


def test_retries_carry_the_same_id_with_doubling_gaps(robot: System, receiver: Receiver) -> None:
    receiver.answer_next(Answer(500), Answer(503), Answer(404), Answer(200))
    job = finished_job(robot)
    wait("the fourth attempt to be delivered", lambda: receiver.delivered(job["id"]), robot)

    attempts = receiver.for_job(job["id"])
    assert [a.answered for a in attempts] == [500, 503, 404, 200]
    assert len({a.webhook_id for a in attempts}) == 1
    assert all(a.verified for a in attempts)  # each attempt signed anew, same id and body
    assert len({str(a.body) for a in attempts}) == 1
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(attempts)]
    # BACKOFF, then doubling: never sooner than that (the machine may add, never subtract).
    for n, gap in enumerate(gaps):
        assert gap >= BACKOFF * 2**n - 0.05, gaps
    assert gaps[2] > gaps[0] * 2.5, gaps  # 1.6 s vs 0.4 s, far apart even on a busy machine
    note = wait("delivered in the API", lambda: settled(robot, job["id"]), robot)
    assert (note["status"], note["attempts"]) == ("delivered", 4)


def test_a_late_update_waits_for_the_finished_notification_while_it_is_retried(
    robot: System, receiver: Receiver
) -> None:
    # The robot never reports one item: the job completes with it unknown.
    receiver.answer_next(*[Answer(500)] * 4)
    skipped = {"orderId": "late-one", "pedidoInput": {"_simulate": "skip"}}
    answer = robot.submit([*orders(2), skipped])
    job = robot.wait_final(answer.json()["id"])
    unknown = next(i for i in job["items"] if i["status"] == "unknown")
    wait("the first failed attempt", lambda: receiver.for_job(job["id"]), robot)
    late = robot.send_event(
        job["id"],
        "robot.item.completed",
        {"itemId": unknown["id"], "status": "success", "trackingNumber": "LATE-1"},
    )
    assert late.status_code == 200 and late.json()["status"] == "late"
    wait("job.updated delivered", lambda: receiver.delivered(job["id"], "job.updated"), robot)

    seen = receiver.for_job(job["id"])
    kinds = [(r.type, r.answered) for r in seen]
    first_finished_ok = kinds.index(("job.finished", 200))
    first_update = next(n for n, (kind, _) in enumerate(kinds) if kind == "job.updated")
    assert first_update > first_finished_ok, kinds
    assert kinds[:first_finished_ok] == [("job.finished", 500)] * 4
    updated = receiver.delivered(job["id"], "job.updated")
    assert updated is not None and updated.verified
    item = next(i for i in updated.body["data"]["items"] if i["id"] == unknown["id"])
    assert (item["status"], item["trackingNumber"]) == ("success", "LATE-1")
    assert updated.body["data"]["status"] == "completed"  # the job's status does not change
    assert updated.body["data"] == robot.job(job["id"])


def test_the_same_late_result_again_sends_no_update(robot: System, receiver: Receiver) -> None:
    answer = robot.submit([{"orderId": "skip-1", "pedidoInput": {"_simulate": "skip"}}])
    job = robot.wait_final(answer.json()["id"])
    item_id = job["items"][0]["id"]
    result = {"itemId": item_id, "status": "success", "trackingNumber": "T-1"}
    assert robot.send_event(job["id"], "robot.item.completed", result).status_code == 200
    wait("job.updated", lambda: receiver.delivered(job["id"], "job.updated"), robot)
    again = robot.send_event(job["id"], "robot.item.completed", result)
    assert again.status_code == 200 and again.json()["status"] == "late"
    # Recorded in the transaction that answered: nothing more is, or will be, for this job.
    kinds = [n["type"] for n in notes(robot) if n["jobId"] == job["id"]]
    assert kinds == ["job.updated", "job.finished"]  # newest first
    assert [r.type for r in receiver.for_job(job["id"])] == ["job.finished", "job.updated"]


def test_redirects_are_not_followed(robot: System, receiver: Receiver) -> None:
    elsewhere = f"http://127.0.0.1:{receiver.port}/somewhere-else"
    receiver.answer_next(Answer(307, location=elsewhere), Answer(302, location=elsewhere))
    job = finished_job(robot)
    wait("delivered after two redirects", lambda: receiver.delivered(job["id"]), robot)

    assert "/somewhere-else" not in receiver.paths()
    assert [r.answered for r in receiver.for_job(job["id"])] == [307, 302, 200]
    note = wait("settled", lambda: settled(robot, job["id"]), robot)
    assert note["attempts"] == 3


def test_a_redirect_is_a_failed_attempt_with_its_reason(robot: System, receiver: Receiver) -> None:
    elsewhere = f"http://127.0.0.1:{receiver.port}/somewhere-else"
    receiver.answer_next(*[Answer(308, location=elsewhere)] * 100)
    job = finished_job(robot)

    def failing() -> dict[str, Any] | None:
        note = note_of(robot, job["id"])
        return note if note and note["attempts"] >= 1 and note["lastError"] else None

    note = wait("a recorded failure", failing, robot)
    assert "redirect" in note["lastError"] and "not followed" in note["lastError"]
    assert "127.0.0.1" not in note["lastError"]  # no URL in the reason
    receiver.answer_next()
    wait("delivered once the redirects stop", lambda: receiver.delivered(job["id"]), robot)
    assert "/somewhere-else" not in receiver.paths()


def test_a_slow_receiver_times_out_and_the_attempt_counts_as_failed(
    robot: System, receiver: Receiver
) -> None:
    receiver.answer_next(Answer(200, delay=11.0))  # answered, but after the 10 s limit
    job = finished_job(robot)
    note = wait("delivered by the second attempt", lambda: settled(robot, job["id"]), robot, 40)

    got = receiver.for_job(job["id"])
    assert len(got) == 2 and got[0].webhook_id == got[1].webhook_id
    assert got[1].at - got[0].at >= 10.0  # the second came only after the first timed out
    assert (note["status"], note["attempts"]) == ("delivered", 2)


def test_receiver_down_for_the_whole_window_fails_then_redelivers_with_the_same_id(
    robot: System, receiver: Receiver
) -> None:
    receiver.stop()
    try:
        job = finished_job(robot)
        note = wait("failed after the give-up window", lambda: settled(robot, job["id"]), robot)
    finally:
        receiver.start()
    assert note["status"] == "failed"
    assert note["lastError"] == "could not connect to NOTIFY_URL"
    assert note["attempts"] >= 4  # 0.4, 0.8, 1.6, 3.2, 6.4 s … within 14 s
    assert note["nextAttemptAt"] is None and note["deliveredAt"] is None
    failed = notes(robot, status="failed")
    assert note["id"] in [n["id"] for n in failed]
    assert receiver.for_job(job["id"]) == []

    answer = robot.http.post(
        f"{robot.base}/api/notifications/{note['id']}/redeliver",
        headers=robot.headers(),
        timeout=10,
    )
    assert answer.status_code == 202 and answer.json()["status"] == "pending"
    got = wait("the redelivery", lambda: receiver.delivered(job["id"]), robot)
    assert got.webhook_id == note["id"] and got.verified
    again = wait("delivered", lambda: settled(robot, job["id"]), robot)
    assert again["status"] == "delivered"

    # Redeliver a delivered one: sent again, same id.
    answer = robot.http.post(
        f"{robot.base}/api/notifications/{note['id']}/redeliver",
        headers=robot.headers(),
        timeout=10,
    )
    assert answer.status_code == 202
    wait("a second delivery", lambda: len(receiver.for_job(job["id"])) == 2, robot)
    assert {r.webhook_id for r in receiver.for_job(job["id"])} == {note["id"]}


def test_the_api_lists_filters_and_pages(robot: System) -> None:
    everything = notes(robot)
    assert len(everything) >= 8
    assert everything == sorted(everything, key=lambda n: n["createdAt"], reverse=True)
    page = robot.http.get(
        f"{robot.base}/api/notifications?limit=3", headers=robot.headers(), timeout=10
    ).json()
    assert len(page["notifications"]) == 3 and page["nextCursor"]
    rest = robot.http.get(
        f"{robot.base}/api/notifications",
        params={"limit": 200, "cursor": page["nextCursor"]},
        headers=robot.headers(),
        timeout=10,
    ).json()
    assert [n["id"] for n in page["notifications"] + rest["notifications"]] == [
        n["id"] for n in everything
    ]
    assert {n["status"] for n in notes(robot, status="delivered")} == {"delivered"}
    bad = robot.http.get(
        f"{robot.base}/api/notifications?status=lost", headers=robot.headers(), timeout=10
    )
    assert bad.status_code == 422
    unknown = robot.http.post(
        f"{robot.base}/api/notifications/msg_nope/redeliver", headers=robot.headers(), timeout=10
    )
    assert unknown.status_code == 404
    assert requests.get(f"{robot.base}/api/notifications", timeout=10).status_code == 401


def test_the_secret_never_reaches_a_log(system: System) -> None:
    logs = "\n".join(p.log() for p in system.processes.values())
    assert "notification" in logs  # the worker did log about them
    assert SECRET not in logs and SECRET.removeprefix("whsec_") not in logs


@pytest.mark.parametrize("process", ["release", "web", "worker", "beat"])
def test_notify_url_without_its_secret_stops_the_process_with_one_line(process: str) -> None:
    env = {
        "PATH": bin_path(),
        "APP_ENV": "development",
        "NOTIFY_URL": "http://127.0.0.1:1/hooks",
    }
    done = run_line(process, env, timeout=60)
    assert done.returncode != 0
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert lines == ["configuration error: NOTIFY_SECRET is required when NOTIFY_URL is set"]
