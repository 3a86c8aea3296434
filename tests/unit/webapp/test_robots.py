"""Several robots at the HTTP edge (CONTRACT §3, §11): robot on submit, list and resubmit,
/api/robots, /api/dispatch over every robot, the per-robot gauges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestrator import lifecycle
from orchestrator.db import session_scope
from orchestrator.robots import Hours, RobotSettings
from tests.unit.conftest import API_TOKEN, REDIS_URL
from webapp import create_app

CLOSED_NOW = "Mon 00:00-00:01"


def body(n: int = 1, **extra) -> dict:
    return {"orders": [{"orderId": f"ORD-{i}", "pedidoInput": {}} for i in range(n)], **extra}


@pytest.fixture
def robots_app(database_url, make_settings, fake_redis, started):
    """Robots ``coordinadora`` (2 at once, closed now) and ``servientrega-2`` (no limit)."""
    robots = (
        RobotSettings(
            name="coordinadora",
            url="http://a.invalid",
            max_active_jobs=2,
            hours=Hours.parse(CLOSED_NOW, "America/Bogota"),
            timezone="America/Bogota",
        ),
        RobotSettings(name="servientrega-2", url="http://b.invalid"),
    )
    settings = make_settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        api_tokens=(API_TOKEN,),
        several_robots=robots,
    )
    return create_app(settings)


@pytest.fixture
def rc(robots_app):
    return robots_app.test_client()


def submit(rc, auth, robot: str | None, n: int = 1) -> dict:
    extra = {} if robot is None else {"robot": robot}
    answer = rc.post("/api/jobs", json=body(n, **extra), headers=auth)
    assert answer.status_code == 202, answer.get_json()
    return answer.get_json()


def claim(app, job_id: str) -> bool:
    settings = app.extensions["orchestrator"].settings
    with session_scope(settings.database_url) as session:
        return lifecycle.claim_dispatch(session, job_id, settings) is not None


def finish(app, job_id: str, reason: str = "portal down") -> None:
    settings = app.extensions["orchestrator"].settings
    with session_scope(settings.database_url) as session:
        lifecycle.finalize(session, job_id, lifecycle.Failure(reason, robot_may_have_it=False))


# --- submit ---


def test_submit_routes_the_job_to_its_robot(rc, auth, started) -> None:
    job = submit(rc, auth, "servientrega-2")
    assert job["robot"] == "servientrega-2"
    assert job["queuePosition"] == 1
    assert started.job_ids == [job["id"]]
    assert rc.get(f"/api/jobs/{job['id']}", headers=auth).get_json()["robot"] == "servientrega-2"


@pytest.mark.parametrize("robot", [None, "nobody", "", 7, ["coordinadora"], "COORDINADORA"])
def test_a_missing_or_unknown_robot_is_a_422_naming_the_field(rc, auth, robot, started) -> None:
    payload = body() if robot is None else body(robot=robot)
    answer = rc.post("/api/jobs", json=payload, headers=auth)
    assert answer.status_code == 422
    assert "robot" in answer.get_json()["error"]["details"]
    assert started.job_ids == []


def test_with_one_robot_robot_may_be_left_out_or_named_default(client, auth) -> None:
    left_out = client.post("/api/jobs", json=body(), headers=auth)
    named = client.post("/api/jobs", json=body(robot="default"), headers=auth)
    unknown = client.post("/api/jobs", json=body(robot="other"), headers=auth)
    assert (left_out.status_code, named.status_code, unknown.status_code) == (202, 202, 422)
    assert left_out.get_json()["robot"] == named.get_json()["robot"] == "default"
    assert "robot" in unknown.get_json()["error"]["details"]


def test_queue_positions_are_per_robot(rc, auth) -> None:
    a1, b1 = submit(rc, auth, "coordinadora"), submit(rc, auth, "servientrega-2")
    a2 = submit(rc, auth, "coordinadora")
    assert [a1["queuePosition"], b1["queuePosition"], a2["queuePosition"]] == [1, 1, 2]


# --- list ---


def test_the_list_filters_by_robot(rc, auth) -> None:
    a = submit(rc, auth, "coordinadora")
    b = submit(rc, auth, "servientrega-2")
    only_a = rc.get("/api/jobs?robot=coordinadora", headers=auth).get_json()["jobs"]
    everyone = rc.get("/api/jobs", headers=auth).get_json()["jobs"]
    assert [job["id"] for job in only_a] == [a["id"]]
    assert {job["id"] for job in everyone} == {a["id"], b["id"]}
    assert all("robot" in job for job in everyone)


@pytest.mark.parametrize("robot", ["nobody", "", "x" * 300])
def test_an_unknown_robot_in_the_list_is_a_422(rc, auth, robot) -> None:
    answer = rc.get(f"/api/jobs?robot={robot}", headers=auth)
    assert answer.status_code == 422
    assert "robot" in answer.get_json()["error"]["details"]


# --- resubmit ---


def test_resubmit_keeps_the_robot_or_moves_the_orders_to_another(robots_app, rc, auth) -> None:
    old = submit(rc, auth, "servientrega-2", n=2)
    assert claim(robots_app, old["id"])
    finish(robots_app, old["id"])  # refused before sending: items error

    same = rc.post(f"/api/jobs/{old['id']}/resubmit", headers=auth)
    moved = rc.post(f"/api/jobs/{old['id']}/resubmit", json={"robot": "coordinadora"}, headers=auth)
    unknown = rc.post(f"/api/jobs/{old['id']}/resubmit", json={"robot": "nobody"}, headers=auth)
    null = rc.post(f"/api/jobs/{old['id']}/resubmit", json={"robot": None}, headers=auth)

    assert same.status_code == 202 and same.get_json()["robot"] == "servientrega-2"
    assert moved.status_code == 202 and moved.get_json()["robot"] == "coordinadora"
    assert moved.get_json()["resubmitOf"] == old["id"]
    for refused in (unknown, null):
        assert refused.status_code == 422
        assert "robot" in refused.get_json()["error"]["details"]


# --- /api/robots ---


def test_get_robots_lists_every_robot_in_the_order_of_robots(rc, auth) -> None:
    submit(rc, auth, "coordinadora")
    answer = rc.get("/api/robots", headers=auth)
    assert answer.status_code == 200
    a, b = answer.get_json()["robots"]
    assert (a["name"], b["name"]) == ("coordinadora", "servientrega-2")
    assert set(a) == {
        "name",
        "paused",
        "pausedReason",
        "pausedUntil",
        "pausedBy",
        "maxActiveJobs",
        "activeJobs",
        "queuedJobs",
        "failuresInARow",
        "hours",
        "timezone",
        "open",
        "nextOpenAt",
    }
    assert (a["hours"], a["timezone"], a["open"], a["maxActiveJobs"], a["queuedJobs"]) == (
        CLOSED_NOW,
        "America/Bogota",
        False,
        2,
        1,
    )
    assert datetime.fromisoformat(a["nextOpenAt"]) > datetime.now(UTC)
    assert (b["hours"], b["timezone"], b["open"], b["nextOpenAt"]) == (None, "UTC", True, None)


def test_one_robot_without_robots_is_default(client, auth) -> None:
    [robot] = client.get("/api/robots", headers=auth).get_json()["robots"]
    assert (robot["name"], robot["hours"], robot["open"]) == ("default", None, True)
    assert client.get("/api/robots/default", headers=auth).get_json()["name"] == "default"


def test_pause_and_resume_one_robot(rc, auth) -> None:
    until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    paused = rc.post(
        "/api/robots/servientrega-2/pause",
        json={"reason": "courier portal maintenance", "until": until},
        headers=auth,
    )
    assert paused.status_code == 200
    state = paused.get_json()
    assert (state["name"], state["paused"], state["pausedBy"]) == ("servientrega-2", True, "api")
    assert datetime.fromisoformat(state["pausedUntil"]) == datetime.fromisoformat(until)
    other = rc.get("/api/robots/coordinadora", headers=auth).get_json()
    assert other["paused"] is False
    assert rc.get("/api/dispatch", headers=auth).get_json()["paused"] is False  # not every robot

    resumed = rc.post("/api/robots/servientrega-2/resume", headers=auth)
    assert resumed.status_code == 200 and resumed.get_json()["paused"] is False


def test_a_bad_pause_body_for_a_robot_is_a_422(rc, auth) -> None:
    answer = rc.post("/api/robots/coordinadora/pause", json={"reason": ""}, headers=auth)
    assert answer.status_code == 422
    assert "reason" in answer.get_json()["error"]["details"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/robots/nobody"),
        ("post", "/api/robots/nobody/pause"),
        ("post", "/api/robots/nobody/resume"),
        ("get", "/api/robots/COORDINADORA"),
    ],
)
def test_an_unknown_robot_in_the_url_is_a_404(rc, auth, method, path) -> None:
    answer = getattr(rc, method)(path, json={"reason": "x"}, headers=auth)
    assert answer.status_code == 404
    assert answer.get_json()["error"]["code"]


def test_robots_need_a_token(rc) -> None:
    assert rc.get("/api/robots").status_code == 401
    assert rc.post("/api/robots/coordinadora/pause", json={"reason": "x"}).status_code == 401


# --- /api/dispatch over every robot ---


def test_dispatch_pause_and_resume_act_on_every_robot(rc, auth) -> None:
    paused = rc.post("/api/dispatch/pause", json={"reason": "stock count"}, headers=auth)
    assert paused.status_code == 200
    assert (
        paused.get_json()["paused"] is True and paused.get_json()["pausedReason"] == "stock count"
    )
    robots = rc.get("/api/robots", headers=auth).get_json()["robots"]
    assert [r["paused"] for r in robots] == [True, True]

    resumed = rc.post("/api/dispatch/resume", headers=auth)
    assert resumed.get_json()["paused"] is False
    assert not any(r["paused"] for r in rc.get("/api/robots", headers=auth).get_json()["robots"])


def test_get_dispatch_combines_the_robots_states(robots_app, rc, auth) -> None:
    b = submit(rc, auth, "servientrega-2")
    assert claim(robots_app, b["id"])
    submit(rc, auth, "coordinadora")
    submit(rc, auth, "coordinadora")
    rc.post("/api/robots/coordinadora/pause", json={"reason": "a"}, headers=auth)
    rc.post("/api/robots/servientrega-2/pause", json={"reason": "b"}, headers=auth)

    state = rc.get("/api/dispatch", headers=auth).get_json()

    assert state == {
        "paused": True,  # every robot paused
        "pausedReason": None,  # they differ
        "pausedUntil": None,
        "pausedBy": "api",  # shared
        "maxActiveJobs": None,  # servientrega-2 has no limit
        "activeJobs": 1,
        "queuedJobs": 2,
        "failuresInARow": 0,
    }


# --- gauges ---


def test_the_gauges_have_one_series_per_robot(robots_app, rc, auth) -> None:
    b = submit(rc, auth, "servientrega-2")
    assert claim(robots_app, b["id"])
    submit(rc, auth, "coordinadora")
    rc.post("/api/robots/servientrega-2/pause", json={"reason": "b"}, headers=auth)

    text = rc.get("/metrics", headers=auth).get_data(as_text=True)

    for line in (
        'orchestrator_robot_active_jobs{robot="coordinadora"} 0.0',
        'orchestrator_robot_active_jobs{robot="servientrega-2"} 1.0',
        'orchestrator_robot_queued_jobs{robot="coordinadora"} 1.0',
        'orchestrator_robot_queued_jobs{robot="servientrega-2"} 0.0',
        'orchestrator_robot_paused{robot="coordinadora"} 0.0',
        'orchestrator_robot_paused{robot="servientrega-2"} 1.0',
        'orchestrator_robot_open{robot="coordinadora"} 0.0',
        'orchestrator_robot_open{robot="servientrega-2"} 1.0',
        "orchestrator_active_jobs 1.0",
        "orchestrator_queued_jobs 1.0",
        "orchestrator_dispatch_paused 0.0",  # not every robot
    ):
        assert line in text, line
    rc.post("/api/robots/coordinadora/pause", json={"reason": "a"}, headers=auth)
    text = rc.get("/metrics", headers=auth).get_data(as_text=True)
    assert "orchestrator_dispatch_paused 1.0" in text


def test_the_openapi_document_lists_the_robot_routes(rc) -> None:
    paths = rc.get("/openapi.json").get_json()["paths"]
    for path in (
        "/api/robots",
        "/api/robots/{name}",
        "/api/robots/{name}/pause",
        "/api/robots/{name}/resume",
    ):
        assert path in paths
