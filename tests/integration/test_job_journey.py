"""One job's whole journey through the real processes (CONTRACT §1, §4, §5)."""

from __future__ import annotations

from datetime import datetime

import pytest

from .harness import ROBOT_TOKEN, System, orders, wait_until

pytestmark = pytest.mark.integration


def dispatches(system: System, job_id: str) -> int:
    return system.robot_stats()["dispatches"].get(job_id, 0)


def test_twenty_orders_complete_with_tracking_numbers(robot: System) -> None:
    answer = robot.submit(orders(20))
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    assert answer.headers["Location"] == f"/api/jobs/{job_id}"

    job = robot.wait_final(job_id)

    assert job["status"] == "completed"
    assert job["counts"] == {
        "total": 20,
        "pending": 0,
        "processing": 0,
        "success": 20,
        "error": 0,
        "unknown": 0,
    }
    assert all(item["trackingNumber"].startswith("CO") for item in job["items"])
    assert dispatches(robot, job_id) == 1
    stats = robot.robot_stats()
    assert stats["idempotencyKeys"][job_id] == job_id
    dispatched, deadline = (datetime.fromisoformat(job[k]) for k in ("dispatchedAt", "deadline"))
    assert (deadline - dispatched).total_seconds() == pytest.approx(20 * 1 + 4)


def test_item_errors_are_recorded_and_the_job_still_completes(robot: System) -> None:
    batch = orders(3)
    batch[1]["pedidoInput"]["_simulate"] = "fail"
    job = robot.wait_final(robot.submit(batch).json()["id"])

    assert job["status"] == "completed"
    by_order = {item["orderId"]: item for item in job["items"]}
    failed = by_order[batch[1]["orderId"]]
    assert failed["status"] == "error"
    assert failed["error"] == "portal rejected the address"
    assert failed["trackingNumber"] is None
    assert [by_order[o["orderId"]]["status"] for o in (batch[0], batch[2])] == ["success"] * 2


def test_unreported_items_become_unknown_when_the_batch_completes(robot: System) -> None:
    batch = orders(2)
    batch[0]["pedidoInput"]["_simulate"] = "skip"
    job = robot.wait_final(robot.submit(batch).json()["id"])

    assert job["status"] == "completed"
    assert [i["status"] for i in job["items"]] == ["unknown", "success"]


def test_completion_before_the_dispatch_answer_is_not_lost(robot: System) -> None:
    robot.robot_config(mode="finish_before_answer")
    job_id = robot.submit(orders(3)).json()["id"]

    job = robot.wait_final(job_id)

    assert job["status"] == "completed"
    assert job["counts"]["success"] == 3
    assert dispatches(robot, job_id) == 1


def test_robot_answering_500_fails_the_job_with_items_error_after_one_dispatch(
    robot: System,
) -> None:
    robot.robot_config(mode="http_500")
    job_id = robot.submit(orders(2)).json()["id"]

    job = robot.wait_final(job_id, timeout=20)

    assert job["status"] == "failed"
    assert "HTTP 500" in job["error"]
    assert [i["status"] for i in job["items"]] == ["error", "error"]
    assert dispatches(robot, job_id) == 1


def test_gateway_503_fails_the_job_with_items_unknown(robot: System) -> None:
    robot.robot_config(mode="http_503")
    job_id = robot.submit(orders(2)).json()["id"]

    job = robot.wait_final(job_id, timeout=20)

    assert job["status"] == "failed"
    assert "check the portal" in job["error"]
    assert [i["status"] for i in job["items"]] == ["unknown", "unknown"]
    assert dispatches(robot, job_id) == 1


def test_redirect_is_not_followed(robot: System) -> None:
    robot.robot_config(mode="redirect_307")
    job_id = robot.submit(orders(1)).json()["id"]

    job = robot.wait_final(job_id, timeout=20)

    assert job["status"] == "failed"
    assert job["items"][0]["status"] == "error"
    assert dispatches(robot, job_id) == 1


def test_robot_that_never_finishes_fails_at_the_deadline_and_late_results_still_land(
    robot: System,
) -> None:
    robot.robot_config(mode="never_finish")
    job_id = robot.submit(orders(2)).json()["id"]

    job = robot.wait_final(job_id, timeout=60)

    assert job["status"] == "failed"
    assert "deadline" in job["error"]
    assert datetime.fromisoformat(job["finishedAt"]) >= datetime.fromisoformat(job["deadline"])
    assert [i["status"] for i in job["items"]] == ["unknown", "unknown"]

    item = job["items"][1]
    late = robot.send_event(
        job_id,
        "robot.item.completed",
        {"itemId": item["id"], "status": "success", "trackingNumber": "CO-LATE-1"},
    )
    assert late.status_code == 200
    assert late.json()["status"] == "late"
    after = robot.job(job_id)
    assert after["status"] == "failed"
    assert after["items"][1]["status"] == "success"
    assert after["items"][1]["trackingNumber"] == "CO-LATE-1"
    assert dispatches(robot, job_id) == 1


def test_batch_failed_fails_the_job_with_the_robots_reason(robot: System) -> None:
    robot.robot_config(mode="batch_failed")
    job = robot.wait_final(robot.submit(orders(2)).json()["id"])

    assert job["status"] == "failed"
    assert "portal unavailable" in job["error"]
    assert {i["status"] for i in job["items"]} == {"unknown"}


def test_duplicate_deliveries_are_applied_once(robot: System) -> None:
    robot.robot_config(mode="duplicates")
    job_id = robot.submit(orders(3)).json()["id"]

    job = robot.wait_final(job_id)

    assert job["status"] == "completed"
    assert job["counts"]["success"] == 3
    assert dispatches(robot, job_id) == 1


def test_conflicting_result_for_a_final_item_is_refused(robot: System) -> None:
    job = robot.wait_final(robot.submit(orders(1)).json()["id"])
    item = job["items"][0]

    conflict = robot.send_event(
        job["id"], "robot.item.completed", {"itemId": item["id"], "status": "error", "error": "x"}
    )
    same = robot.send_event(
        job["id"],
        "robot.item.completed",
        {"itemId": item["id"], "status": "success", "trackingNumber": item["trackingNumber"]},
    )

    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "result_conflict"
    assert same.status_code == 200
    assert robot.job(job["id"])["items"][0] == item


def test_forged_other_job_and_stale_signatures_are_refused(robot: System) -> None:
    robot.robot_config(mode="never_finish")
    first = robot.submit(orders(1)).json()
    second = robot.submit(orders(1)).json()
    data = {"items": []}
    from orchestrator.signing import job_callback_secret

    other = robot.send_event(
        first["id"],
        "robot.batch.completed",
        data,
        secret=job_callback_secret("integration-master-secret", second["id"]),
    )
    forged = robot.send_event(
        first["id"], "robot.batch.completed", data, secret=job_callback_secret("guess", first["id"])
    )

    assert other.status_code == 401
    assert forged.status_code == 401
    assert robot.job(first["id"])["status"] in ("pending", "processing")


def test_double_submit_with_one_key_creates_one_job_and_one_dispatch(robot: System) -> None:
    batch = orders(2)
    first = robot.submit(batch, key="same-key-" + batch[0]["orderId"])
    again = robot.submit(batch, key="same-key-" + batch[0]["orderId"])

    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    robot.wait_final(first.json()["id"])
    assert dispatches(robot, first.json()["id"]) == 1


def test_cancel_after_dispatch_leaves_items_unknown_and_late_events_are_recorded(
    robot: System,
) -> None:
    robot.robot_config(mode="never_finish")
    job_id = robot.submit(orders(2)).json()["id"]
    wait_until(lambda: dispatches(robot, job_id) == 1, 20, "the dispatch")
    wait_until(lambda: robot.job(job_id)["dispatchedAt"], 20, "the dispatch to be recorded")

    answer = robot.http.post(
        f"{robot.base}/api/jobs/{job_id}/cancel", headers=robot.headers(), timeout=10
    )

    assert answer.status_code == 200
    assert answer.json()["status"] == "cancelled"
    assert [i["status"] for i in answer.json()["items"]] == ["unknown", "unknown"]
    again = robot.http.post(
        f"{robot.base}/api/jobs/{job_id}/cancel", headers=robot.headers(), timeout=10
    )
    assert again.status_code == 409
    late = robot.send_event(job_id, "robot.batch.completed", {"items": []})
    assert late.status_code == 200
    assert robot.job(job_id)["status"] == "cancelled"


def test_robot_receives_its_bearer_token(robot: System) -> None:
    robot.robot_config(token=ROBOT_TOKEN)
    job = robot.wait_final(robot.submit(orders(1)).json()["id"])

    assert job["status"] == "completed"
