"""The dashboard with several robots (CONTRACT §11): the Robots page, the robot on the job list,
job page, submit and resubmit forms, and pause and resume per robot and for every robot."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.robots import DAYS, Hours, RobotSettings
from webapp import library

from ..conftest import API_TOKEN
from .test_dashboard import csrf_of, form_page, post_batch, sign_in
from .test_dashboard_resubmit import form_fields


def _closed_hours() -> Hours:
    """Hours that are never open now: one hour, two days from today (UTC)."""
    day = DAYS[(datetime.now(UTC).weekday() + 2) % 7].capitalize()
    return Hours.parse(f"{day} 10:00-11:00", "America/Bogota")


@pytest.fixture
def robots_app(sqlite_url, make_settings, fake_redis, started):
    from ..conftest import unit_app

    several = (
        RobotSettings(name="north", url="http://127.0.0.1:9", max_active_jobs=2),
        RobotSettings(
            name="south",
            url="http://127.0.0.1:9",
            max_active_jobs=1,
            hours=_closed_hours(),
            timezone="America/Bogota",
        ),
    )

    def settings(**base: Any) -> Any:
        return make_settings(**base, several_robots=several)

    return unit_app(settings, sqlite_url)


@pytest.fixture
def browser(robots_app):
    client = robots_app.test_client()
    assert sign_in(client).status_code == 303
    return client


def submit(client, robot: str, count: int = 1) -> dict[str, Any]:
    """Submit a job for ``robot`` through the job API; return it."""
    orders = [{"orderId": f"ORD-{n}", "pedidoInput": {"n": n}} for n in range(count)]
    answer = client.post("/api/jobs", json={"orders": orders, "robot": robot}, headers=AUTH)
    assert answer.status_code == 202, answer.get_json()
    return answer.get_json()


AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def view(client, job_id: str) -> dict[str, Any]:
    with client.application.app_context():
        return library.get_job(job_id)


def robot_state(client, name: str | None = None) -> Any:
    return client.application.extensions["orchestrator"].dispatch_state(name)


def text(client, path: str) -> str:
    answer = client.get(path)
    assert answer.status_code == 200, answer.status_code
    return answer.get_data(as_text=True)


def robot_section(html: str, name: str) -> str:
    block = re.search(rf'<section class="card robot" data-robot="{name}">.*?</section>', html, re.S)
    assert block, f"no section for robot {name}"
    return block.group(0)


def test_the_robots_page_shows_each_robot_its_hours_and_its_own_queue(browser):
    north = [submit(browser, "north") for _ in range(2)]
    south = submit(browser, "south")
    html = text(browser, "/dashboard/dispatch")
    assert "<h1>Robots</h1>" in html and ">Robots</a>" in html  # the top bar names it too
    first, second = robot_section(html, "north"), robot_section(html, "south")
    assert html.index('data-robot="north"') < html.index('data-robot="south"')  # ROBOTS order
    # north: no hours, open, its two jobs at positions 1 and 2; south's job is not in its queue
    assert 'id="hours-north">any time' in first and 'id="open-north"' in first
    assert ">open<" in first and "next-open-north" not in first
    assert [north[0]["id"], north[1]["id"]] == re.findall(r'<tr data-job="([^"]+)"', first)
    assert south["id"] not in first
    assert 'id="capacity-north">0 / 2' in first and 'id="waiting-count-north">2' in first
    # south: its hours as configured, closed now, its next opening, its one job at position 1
    hours = _closed_hours()
    assert f'{hours.text} <span class="small">(America/Bogota)</span>' in second
    assert ">closed<" in second
    opens = hours.next_open(datetime.now(UTC))
    assert opens is not None
    assert opens.strftime("%Y-%m-%d %H:%M:%S UTC") in second
    assert re.findall(r'<tr data-job="([^"]+)"', second) == [south["id"]]
    assert "Outside its hours" in second
    # a form per robot, and one for every robot
    assert 'action="/dashboard/robots/north/pause"' in first
    assert 'action="/dashboard/robots/south/pause"' in second
    assert 'id="all-robots"' in html and 'action="/dashboard/dispatch/pause"' in html
    # the live fragment carries every robot's part, each found by its own id
    live = text(browser, "/dashboard/live/dispatch")
    assert 'id="live-north"' in live and 'id="live-south"' in live


def test_pause_and_resume_one_robot_then_every_robot(browser):
    csrf = csrf_of(text(browser, "/dashboard/dispatch"))
    answer = browser.post(
        "/dashboard/robots/south/pause",
        data={"csrf_token": csrf, "reason": "portal maintenance", "until": ""},
    )
    assert answer.status_code == 303 and answer.headers["Location"] == "/dashboard/dispatch"
    south, north = robot_state(browser, "south"), robot_state(browser, "north")
    assert (south.paused, south.paused_reason, south.paused_by) == (
        True,
        "portal maintenance",
        "api",
    )
    assert north.paused is False
    html = text(browser, "/dashboard/dispatch")
    assert "Dispatching to south paused until someone resumes it." in html
    audited = browser.get("/api/audit?action=dispatch.paused", headers=AUTH).get_json()
    assert [e["target"] for e in audited["entries"]] == ["south"]  # audited, for that robot
    banner = text(browser, "/dashboard/live/banner")  # on every page: one robot is paused
    assert 'data-paused-robots="south"' in banner and "portal maintenance" in banner
    assert 'id="resume-south"' in robot_section(html, "south")
    assert 'id="resume-north"' not in robot_section(html, "north")

    answer = browser.post("/dashboard/robots/south/resume", data={"csrf_token": csrf})
    assert answer.status_code == 303
    assert robot_state(browser, "south").paused is False
    assert "data-paused-robots" not in text(browser, "/dashboard/live/banner")

    until = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S")
    answer = browser.post(
        "/dashboard/dispatch/pause",
        data={"csrf_token": csrf, "reason": "end of day", "until": until},
    )
    assert answer.status_code == 303
    robots = [robot_state(browser, name) for name in ("north", "south")]
    assert [(r.paused, r.paused_reason) for r in robots] == [(True, "end of day")] * 2
    assert robot_state(browser).paused is True  # every robot paused: the combined state too
    browser.post("/dashboard/dispatch/resume", data={"csrf_token": csrf})
    assert [robot_state(browser, name).paused for name in ("north", "south")] == [False, False]


def test_robot_forms_need_csrf_a_valid_reason_and_a_known_robot(browser):
    csrf = csrf_of(text(browser, "/dashboard/dispatch"))
    assert browser.post("/dashboard/robots/north/pause", data={"reason": "x"}).status_code == 400
    assert browser.post("/dashboard/robots/north/resume", data={}).status_code == 400
    answer = browser.post(
        "/dashboard/robots/nowhere/pause", data={"csrf_token": csrf, "reason": "x"}
    )
    assert answer.status_code == 404 and "there is no robot nowhere" in answer.get_data(True)
    answer = browser.post("/dashboard/robots/north/pause", data={"csrf_token": csrf, "reason": ""})
    assert answer.status_code == 422
    assert "Dispatching was not paused." in answer.get_data(as_text=True)
    assert robot_state(browser, "north").paused is False


def test_the_job_list_shows_the_robot_and_filters_by_it(browser):
    north, south = submit(browser, "north"), submit(browser, "south")
    everything = text(browser, "/dashboard/")
    assert north["id"] in everything and south["id"] in everything
    assert '<td class="robot">north</td>' in everything
    assert '<td class="robot">south</td>' in everything
    only_south = text(browser, "/dashboard/?robot=south")
    assert south["id"] in only_south and north["id"] not in only_south
    assert 'href="/dashboard/?robot=south" data-robot="south" class="current"' in only_south
    live = text(browser, "/dashboard/live/jobs?robot=north")
    assert north["id"] in live and south["id"] not in live
    assert browser.get("/dashboard/?robot=nowhere").status_code == 404


def test_the_job_page_shows_its_robot(browser):
    job = submit(browser, "south")
    html = text(browser, f"/dashboard/jobs/{job['id']}")
    assert '<dd id="robot"><a href="/dashboard/?robot=south">south</a></dd>' in html


def test_the_submit_form_asks_for_the_robot(browser):
    html = text(browser, "/dashboard/submit")
    assert '<select name="robot" id="robot" required>' in html
    assert '<option value="north"' in html and '<option value="south"' in html
    batch = '{"orders": [{"orderId": "A-1", "pedidoInput": {}}]}'
    missing = post_batch(browser, batch)
    assert missing.status_code == 422
    assert "Robot: choose one of north, south." in missing.get_data(as_text=True)
    unknown = post_batch(browser, batch, robot="nowhere")
    assert unknown.status_code == 422
    answer = post_batch(browser, batch, robot="south")
    assert answer.status_code == 303
    job_id = answer.headers["Location"].rsplit("/", 1)[1]
    assert view(browser, job_id)["robot"] == "south"
    assert "Job submitted for robot south: 1 order." in text(browser, answer.headers["Location"])


def test_a_failed_couriers_error_orders_go_to_another_robot(browser):
    job = submit(browser, "south", count=2)
    cancelled = browser.post(f"/api/jobs/{job['id']}/cancel", headers=AUTH)
    assert cancelled.status_code == 200  # never dispatched: its items are error
    page = text(browser, f"/dashboard/jobs/{job['id']}")
    assert re.search(r'<select name="robot" id="robot-errors">', page)
    assert re.search(r'<option value="south" selected>south</option>', page)
    fields = {**form_fields(page, "resubmit-errors"), "robot": "north"}
    answer = browser.post(f"/dashboard/jobs/{job['id']}/resubmit", data=fields)
    assert answer.status_code == 303
    new_id = answer.headers["Location"].rsplit("/", 1)[1]
    new = view(browser, new_id)
    assert (new["robot"], new["resubmitOf"], new["counts"]["total"]) == ("north", job["id"], 2)
    assert "as this new job for robot north." in text(browser, answer.headers["Location"])


def test_one_robot_keeps_the_robot_and_queue_page_and_asks_for_no_robot(signed_in):
    html = signed_in.get("/dashboard/dispatch").get_data(as_text=True)
    assert "<h1>Robot and queue</h1>" in html and 'id="all-robots"' not in html
    assert 'id="capacity"' in html and 'id="hours">any time' in html
    assert 'action="/dashboard/dispatch/pause"' in html
    csrf, _ = form_page(signed_in)
    assert 'name="robot"' not in signed_in.get("/dashboard/submit").get_data(as_text=True)
    assert '<td class="robot">' not in signed_in.get("/dashboard/").get_data(as_text=True)
    assert csrf


@pytest.fixture
def signed_in(client):
    assert sign_in(client).status_code == 303
    return client
