"""Resubmitting failed items (CONTRACT §3) through the real processes and the robot simulator."""

from __future__ import annotations

from typing import Any

import pytest

from .harness import System, orders

pytestmark = pytest.mark.integration


def resubmit(system: System, job_id: str, body: dict[str, Any] | None = None, key: str = ""):
    headers = system.headers(**({"Idempotency-Key": key} if key else {}))
    return system.http.post(
        f"{system.base}/api/jobs/{job_id}/resubmit", json=body, headers=headers, timeout=10
    )


def received(system: System, job_id: str) -> list[str]:
    """The orderIds the robot received for a job."""
    return system.robot_stats()["orders"][job_id]


def test_items_the_portal_rejected_go_through_when_resubmitted(robot: System) -> None:
    robot.robot_config(failure_rate=1.0)  # the portal rejects every order for a while
    batch = orders(3, ciudad="Cali")
    old = robot.wait_final(robot.submit(batch).json()["id"])
    assert old["status"] == "completed"
    assert [item["status"] for item in old["items"]] == ["error"] * 3
    robot.robot_config(failure_rate=0.0)  # and then takes them again

    answer = resubmit(robot, old["id"], key="retry-1")
    assert answer.status_code == 202, answer.text
    new = answer.json()
    assert new["resubmitOf"] == old["id"]
    assert answer.headers["Location"] == f"/api/jobs/{new['id']}"
    done = robot.wait_final(new["id"])

    assert done["status"] == "completed"
    assert [item["orderId"] for item in done["items"]] == [o["orderId"] for o in batch]
    assert all(item["trackingNumber"].startswith("CO") for item in done["items"])
    assert received(robot, new["id"]) == [o["orderId"] for o in batch]
    assert robot.robot_stats()["dispatches"][new["id"]] == 1
    # A retried request with the same key is the same job: nothing is dispatched again.
    again = resubmit(robot, old["id"], key="retry-1")
    assert again.status_code == 200 and again.json()["id"] == new["id"]
    assert robot.robot_stats()["dispatches"][new["id"]] == 1
    assert len(robot.robot_stats()["dispatches"]) == 2


def test_the_robot_receives_only_the_chosen_orders_with_their_pedido_input(robot: System) -> None:
    batch = orders(5)
    batch[1]["pedidoInput"]["_simulate"] = "fail"
    batch[2]["pedidoInput"]["_simulate"] = "skip"  # never reported: unknown
    batch[4]["pedidoInput"]["_simulate"] = "fail"
    old = robot.wait_final(robot.submit(batch).json()["id"])
    statuses = [item["status"] for item in old["items"]]
    assert statuses == ["success", "error", "unknown", "success", "error"]

    # Without itemIds: every error item, and only those, reach the robot.
    errors = resubmit(robot, old["id"]).json()
    first = robot.wait_final(errors["id"])
    assert first["status"] == "completed"
    assert received(robot, errors["id"]) == [batch[1]["orderId"], batch[4]["orderId"]]
    # Same pedidoInput: the simulator rejects those orders again, for the same reason.
    assert [item["error"] for item in first["items"]] == ["portal rejected the address"] * 2

    # The unknown item, after the portal check, alone.
    unknown = old["items"][2]["id"]
    assert resubmit(robot, old["id"], {"itemIds": [unknown]}).status_code == 422
    checked = resubmit(robot, old["id"], {"itemIds": [unknown], "confirmUnknown": True})
    assert checked.status_code == 202, checked.text
    second = robot.wait_final(checked.json()["id"])
    assert second["status"] == "completed"
    assert received(robot, second["id"]) == [batch[2]["orderId"]]
    # A success item is never sent again.
    success = resubmit(robot, old["id"], {"itemIds": [old["items"][0]["id"]]})
    assert success.status_code == 422
    assert (
        sum(ids.count(batch[0]["orderId"]) for ids in robot.robot_stats()["orders"].values()) == 1
    )
