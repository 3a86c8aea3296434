"""The dispatch control API and the job's priority and queuePosition (CONTRACT §3, §7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from orchestrator import lifecycle
from orchestrator.db import session_scope
from tests.unit.conftest import API_TOKEN, REDIS_URL
from webapp import create_app

STATE_KEYS = [
    "paused",
    "pausedReason",
    "pausedUntil",
    "pausedBy",
    "maxActiveJobs",
    "activeJobs",
    "queuedJobs",
    "failuresInARow",
]


@pytest.fixture
def limited(database_url, make_settings, fake_redis, started):
    """An app whose robot takes one job at a time, on SQLite and on PostgreSQL."""
    settings = make_settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        api_tokens=(API_TOKEN,),
        robot_max_active_jobs=1,
    )
    return create_app(settings)


def body(n: int = 1, **extra) -> dict:
    return {"orders": [{"orderId": f"ORD-{i}", "pedidoInput": {}} for i in range(n)], **extra}


def in_an_hour() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat()


def claim(app, job_id: str) -> bool:
    settings = app.extensions["orchestrator"].settings
    with session_scope(settings.database_url) as session:
        return lifecycle.claim_dispatch(session, job_id, settings) is not None


def test_get_dispatch_shows_the_state(client, auth) -> None:
    answer = client.get("/api/dispatch", headers=auth)

    assert answer.status_code == 200
    assert answer.get_json() == {
        "paused": False,
        "pausedReason": None,
        "pausedUntil": None,
        "pausedBy": None,
        "maxActiveJobs": None,
        "activeJobs": 0,
        "queuedJobs": 0,
        "failuresInARow": 0,
    }
    assert list(answer.get_json()) == STATE_KEYS


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/api/dispatch"), ("post", "/api/dispatch/pause"), ("post", "/api/dispatch/resume")],
)
def test_dispatch_routes_need_a_token(client, method, path) -> None:
    answer = getattr(client, method)(path, json={"reason": "x"})
    assert answer.status_code == 401
    assert answer.get_json()["error"]["code"] == "unauthorized"


def test_pause_answers_the_state_and_pausing_again_replaces_reason_and_until(client, auth) -> None:
    until = datetime.now(UTC) + timedelta(minutes=30)
    first = client.post(
        "/api/dispatch/pause",
        json={"reason": "portal maintenance", "until": until.isoformat()},
        headers=auth,
    )
    assert first.status_code == 200
    shown = first.get_json()
    assert (shown["paused"], shown["pausedReason"], shown["pausedBy"]) == (
        True,
        "portal maintenance",
        "api",
    )
    assert datetime.fromisoformat(shown["pausedUntil"]) == until
    assert shown["pausedUntil"].endswith("+00:00")

    again = client.post("/api/dispatch/pause", json={"reason": "longer"}, headers=auth)

    assert again.status_code == 200
    assert (again.get_json()["pausedReason"], again.get_json()["pausedUntil"]) == ("longer", None)
    assert client.get("/api/dispatch", headers=auth).get_json() == again.get_json()


def test_until_with_another_offset_is_shown_in_utc(client, auth) -> None:
    later = datetime.now(UTC) + timedelta(hours=2)
    local = later.astimezone(timezone(timedelta(hours=-5)))
    answer = client.post(
        "/api/dispatch/pause", json={"reason": "r", "until": local.isoformat()}, headers=auth
    )
    assert answer.status_code == 200
    assert datetime.fromisoformat(answer.get_json()["pausedUntil"]) == later


def test_resume_answers_the_state(client, auth) -> None:
    client.post("/api/dispatch/pause", json={"reason": "r"}, headers=auth)

    answer = client.post("/api/dispatch/resume", headers=auth)

    assert answer.status_code == 200
    assert answer.get_json()["paused"] is False
    assert answer.get_json()["pausedReason"] is None and answer.get_json()["pausedBy"] is None
    assert client.post("/api/dispatch/resume", headers=auth).status_code == 200  # again: fine


@pytest.mark.parametrize(
    ("pause_body", "field"),
    [
        ({}, "reason"),
        ({"reason": ""}, "reason"),
        ({"reason": "x" * 501}, "reason"),
        ({"reason": 5}, "reason"),
        ({"reason": None}, "reason"),
        ({"reason": "line\nbreak"}, "reason"),
        ({"reason": "r", "until": "2020-01-01T00:00:00Z"}, "until"),
        ({"reason": "r", "until": "2999-01-01T00:00:00"}, "until"),  # no offset
        ({"reason": "r", "until": "tomorrow"}, "until"),
        ({"reason": "r", "until": 1893456000}, "until"),
        ({"reason": "r", "until": None}, "until"),
        ({"reason": "r", "until": "9999-12-31T23:00:00-05:00"}, "until"),
        ({"reason": "r", "other": 1}, "other"),
    ],
)
def test_a_bad_pause_is_422_naming_the_field(client, auth, pause_body, field) -> None:
    answer = client.post("/api/dispatch/pause", json=pause_body, headers=auth)

    assert answer.status_code == 422
    error = answer.get_json()["error"]
    assert error["code"] == "validation_failed"
    assert field in error["details"]
    assert client.get("/api/dispatch", headers=auth).get_json()["paused"] is False


def test_reason_of_500_characters_is_accepted(client, auth) -> None:
    answer = client.post("/api/dispatch/pause", json={"reason": "x" * 500}, headers=auth)
    assert answer.status_code == 200


def test_pause_body_must_be_a_json_object(client, auth) -> None:
    assert client.post("/api/dispatch/pause", data="x", headers=auth).status_code == 415
    not_json = client.post(
        "/api/dispatch/pause", data="{", headers={**auth, "Content-Type": "application/json"}
    )
    assert not_json.status_code == 400
    assert client.post("/api/dispatch/pause", json=["r"], headers=auth).status_code == 422


def test_a_paused_job_waits_pending_and_resume_hands_it_off(limited, started) -> None:
    client = limited.test_client()
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    client.post("/api/dispatch/pause", json={"reason": "maintenance"}, headers=auth)
    job_id = client.post("/api/jobs", json=body(), headers=auth).get_json()["id"]
    assert claim(limited, job_id) is False
    assert client.get(f"/api/jobs/{job_id}", headers=auth).get_json()["status"] == "pending"
    started.job_ids.clear()

    answer = client.post("/api/dispatch/resume", headers=auth)

    assert answer.get_json()["queuedJobs"] == 1
    assert started.job_ids == [job_id]  # handed off at once, after the commit
    assert claim(limited, job_id) is True
    assert client.get("/api/dispatch", headers=auth).get_json()["activeJobs"] == 1


def test_cancel_of_the_active_job_hands_its_slot_to_the_next(limited, started) -> None:
    client = limited.test_client()
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    first = client.post("/api/jobs", json=body(), headers=auth).get_json()["id"]
    second = client.post("/api/jobs", json=body(), headers=auth).get_json()["id"]
    assert claim(limited, first) is True
    assert claim(limited, second) is False
    state = client.get("/api/dispatch", headers=auth).get_json()
    assert (state["maxActiveJobs"], state["activeJobs"], state["queuedJobs"]) == (1, 1, 1)
    started.job_ids.clear()

    assert client.post(f"/api/jobs/{first}/cancel", headers=auth).status_code == 200

    assert started.job_ids == [second]


def test_cancel_of_a_waiting_job_takes_it_out_of_the_order(limited) -> None:
    client = limited.test_client()
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    active = client.post("/api/jobs", json=body(), headers=auth).get_json()["id"]
    claim(limited, active)
    first = client.post("/api/jobs", json=body(2), headers=auth).get_json()
    second = client.post("/api/jobs", json=body(), headers=auth).get_json()
    assert (first["queuePosition"], second["queuePosition"]) == (1, 2)

    cancelled = client.post(f"/api/jobs/{first['id']}/cancel", headers=auth).get_json()

    assert cancelled["status"] == "cancelled" and cancelled["queuePosition"] is None
    assert [i["status"] for i in cancelled["items"]] == ["error", "error"]
    assert client.get(f"/api/jobs/{second['id']}", headers=auth).get_json()["queuePosition"] == 1


def test_submit_takes_a_priority_and_every_view_shows_it_with_the_position(limited) -> None:
    client = limited.test_client()
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    low = client.post("/api/jobs", json=body(), headers=auth)
    high = client.post("/api/jobs", json=body(priority=100), headers=auth)
    lowest = client.post("/api/jobs", json=body(priority=-100), headers=auth)

    assert low.status_code == high.status_code == lowest.status_code == 202
    assert [a.get_json()["priority"] for a in (low, high, lowest)] == [0, 100, -100]
    assert [a.get_json()["queuePosition"] for a in (low, high, lowest)] == [1, 1, 3]
    ids = {
        name: a.get_json()["id"] for name, a in (("low", low), ("high", high), ("lowest", lowest))
    }
    assert client.get(f"/api/jobs/{ids['low']}", headers=auth).get_json()["queuePosition"] == 2
    listed = client.get("/api/jobs", headers=auth).get_json()["jobs"]
    assert [(j["priority"], j["queuePosition"]) for j in listed] == [(-100, 3), (100, 1), (0, 2)]

    assert claim(limited, ids["low"]) is False  # high comes first
    assert claim(limited, ids["high"]) is True
    shown = client.get(f"/api/jobs/{ids['high']}", headers=auth).get_json()
    assert (shown["status"], shown["queuePosition"], shown["priority"]) == ("processing", None, 100)
    assert client.get(f"/api/jobs/{ids['low']}", headers=auth).get_json()["queuePosition"] == 1
    assert client.get(f"/api/jobs/{ids['lowest']}", headers=auth).get_json()["queuePosition"] == 2


@pytest.mark.parametrize("priority", ["5", 1.5, 5.0, True, False, None, 101, -101, [1], {}])
def test_a_priority_that_is_not_an_integer_in_range_is_422(client, auth, priority) -> None:
    answer = client.post("/api/jobs", json=body(priority=priority), headers=auth)

    assert answer.status_code == 422
    assert "priority" in answer.get_json()["error"]["details"]


def test_priority_defaults_to_0(client, auth) -> None:
    job = client.post("/api/jobs", json=body(), headers=auth).get_json()
    assert job["priority"] == 0 and job["queuePosition"] == 1


def test_the_same_key_with_another_priority_is_another_body(client, auth) -> None:
    headers = {**auth, "Idempotency-Key": "k-1"}
    assert client.post("/api/jobs", json=body(), headers=headers).status_code == 202
    assert client.post("/api/jobs", json=body(priority=3), headers=headers).status_code == 422
    assert client.post("/api/jobs", json=body(), headers=headers).status_code == 200


def test_openapi_names_the_dispatch_routes_and_the_new_fields(client) -> None:
    document = client.get("/openapi.json").get_json()
    assert {"/api/dispatch", "/api/dispatch/pause", "/api/dispatch/resume"} <= set(
        document["paths"]
    )
    job = document["components"]["schemas"]["Job"]
    assert {"priority", "queuePosition"} <= set(job["required"])
    assert (
        "robot.heartbeat"
        in document["components"]["schemas"]["RobotEvent"]["properties"]["type"]["enum"]
    )
