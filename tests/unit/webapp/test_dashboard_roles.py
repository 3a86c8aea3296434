"""The dashboard and roles (CONTRACT §12): controls by role, forged forms, sessions audited,
the Activity page and who acted in a job's timeline."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from orchestrator import lifecycle
from orchestrator.db import session_scope
from orchestrator.models import AuditEntry, Job, Notification

from .test_access import (
    NAMES,
    ORDERS,
    TOKENS,
    a_notification,
    bearer,
    cancelled_job,
    enqueued,  # noqa: F401 (a fixture)
    entries,
    pending_job,
    roles_app,
)
from .test_dashboard import PASSWORD, csrf_of, sign_in


@pytest.fixture(autouse=True)
def _no_dashboard_password_in_the_environment(monkeypatch):
    monkeypatch.delenv("DASHBOARD_USER", raising=False)
    monkeypatch.delenv("DASHBOARD_PASSWORD", raising=False)


@pytest.fixture
def app(sqlite_url, make_settings, fake_redis, started, enqueued):  # noqa: F811
    app = roles_app(make_settings, sqlite_url)
    app.config["DASHBOARD_PASSWORD"] = PASSWORD
    return app


def signed_in_as(app, role: str):
    client = app.test_client()
    assert sign_in(client, TOKENS[role]).status_code == 303
    return client


def page(client, path: str) -> str:
    answer = client.get(path)
    assert answer.status_code == 200, path
    return answer.get_data(as_text=True)


def forms(html: str) -> set[str]:
    return set(re.findall(r'<form[^>]*method="post"[^>]*action="([^"]+)"', html))


def test_a_read_token_sees_no_control_beyond_reading(app, sqlite_url) -> None:
    reader = signed_in_as(app, "read")
    open_job, done_job = pending_job(sqlite_url), cancelled_job(sqlite_url)
    a_notification(sqlite_url)
    for path in (
        "/dashboard/",
        f"/dashboard/jobs/{open_job}",
        f"/dashboard/jobs/{done_job}",
        "/dashboard/notifications",
        "/dashboard/dispatch",
    ):
        html = page(reader, path)
        assert forms(html) == {"/dashboard/logout"}, path
        assert "/dashboard/submit" not in html and "/dashboard/activity" not in html
    assert 'class="who">grafana<' in page(reader, "/dashboard/")


def test_a_submit_token_may_submit_and_resubmit_but_not_cancel(app, sqlite_url) -> None:
    shop = signed_in_as(app, "submit")
    open_job, done_job = pending_job(sqlite_url), cancelled_job(sqlite_url)
    assert f"/dashboard/jobs/{open_job}/cancel" not in page(shop, f"/dashboard/jobs/{open_job}")
    assert f"/dashboard/jobs/{done_job}/resubmit" in page(shop, f"/dashboard/jobs/{done_job}")
    assert "/dashboard/submit" in page(shop, "/dashboard/")
    assert "/dashboard/dispatch/pause" not in page(shop, "/dashboard/dispatch")


def test_an_operate_token_sees_every_control(app, sqlite_url) -> None:
    ops = signed_in_as(app, "operate")
    open_job = pending_job(sqlite_url)
    a_notification(sqlite_url)
    assert f"/dashboard/jobs/{open_job}/cancel" in page(ops, f"/dashboard/jobs/{open_job}")
    assert "/dashboard/dispatch/pause" in page(ops, "/dashboard/dispatch")
    assert "/redeliver" in page(ops, "/dashboard/notifications")
    assert "/dashboard/activity" in page(ops, "/dashboard/")


FORGED = {
    "cancel": ("read", lambda url: f"/dashboard/jobs/{pending_job(url)}/cancel", {}),
    "cancel by submit": ("submit", lambda url: f"/dashboard/jobs/{pending_job(url)}/cancel", {}),
    "pause": ("submit", lambda url: "/dashboard/dispatch/pause", {"reason": "forged"}),
    "resume": ("read", lambda url: "/dashboard/dispatch/resume", {}),
    "resubmit": ("read", lambda url: f"/dashboard/jobs/{cancelled_job(url)}/resubmit", {}),
    "submit": ("read", lambda url: "/dashboard/submit", {"text": "orderId\nA-1\n"}),
    "redeliver": (
        "submit",
        lambda url: f"/dashboard/notifications/{a_notification(url)}/redeliver",
        {},
    ),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_a_forged_form_beyond_the_role_is_403_and_does_nothing(app, sqlite_url, case) -> None:
    role, path_of, data = FORGED[case]
    client = signed_in_as(app, role)
    path = path_of(sqlite_url)
    with session_scope(sqlite_url) as session:
        jobs_before = session.scalars(select(Job.status).order_by(Job.id)).all()
        notes_before = session.scalars(select(Notification.status)).all()
    before = {e.id for e in entries(sqlite_url)}
    csrf = csrf_of(page(client, "/dashboard/"))

    answer = client.post(path, data={"csrf_token": csrf, **data})

    assert answer.status_code == 403
    with session_scope(sqlite_url) as session:
        assert session.scalars(select(Job.status).order_by(Job.id)).all() == jobs_before
        assert session.scalars(select(Notification.status)).all() == notes_before
    (entry,) = [e for e in entries(sqlite_url) if e.id not in before]
    assert (entry.actor, entry.role, entry.outcome) == (NAMES[role], role, "denied")
    assert entry.action != "read"


def test_the_activity_page_is_for_operate_only(app) -> None:
    reader = signed_in_as(app, "read")
    assert reader.get("/dashboard/activity").status_code == 403


def test_sign_in_sign_out_and_a_refused_sign_in_are_recorded(app, sqlite_url) -> None:
    client = app.test_client()
    assert sign_in(client, "wrong-password", user="mallory").status_code == 401
    assert sign_in(client, TOKENS["submit"]).status_code == 303
    csrf = csrf_of(page(client, "/dashboard/"))
    assert client.post("/dashboard/logout", data={"csrf_token": csrf}).status_code == 303
    assert sign_in(client, PASSWORD, user="operator").status_code == 303
    shown = [(e.actor, e.role, e.action, e.target, e.outcome) for e in entries(sqlite_url)]
    assert shown == [
        ("anonymous", "none", "session.refused", "mallory", "denied"),
        ("shop", "submit", "session.started", "shop", "ok"),
        ("shop", "submit", "session.ended", "shop", "ok"),
        ("operator", "operate", "session.started", "operator", "ok"),
    ]


def test_a_token_typed_as_the_user_name_is_not_recorded(app, sqlite_url) -> None:
    client = app.test_client()
    assert sign_in(client, "wrong", user=TOKENS["operate"]).status_code == 401
    (entry,) = entries(sqlite_url)
    assert TOKENS["operate"] not in entry.target


def test_dashboard_user_acts_with_operate_under_its_name(app, sqlite_url) -> None:
    client = app.test_client()
    assert sign_in(client, PASSWORD, user="operator").status_code == 303
    job_id = pending_job(sqlite_url)
    html = page(client, f"/dashboard/jobs/{job_id}")
    answer = client.post(f"/dashboard/jobs/{job_id}/cancel", data={"csrf_token": csrf_of(html)})
    assert answer.status_code == 303
    cancels = entries(sqlite_url, action="job.cancelled")
    assert [(e.actor, e.role, e.target) for e in cancels] == [("operator", "operate", job_id)]


def test_the_job_page_shows_who_submitted_cancelled_and_resubmitted(app, sqlite_url) -> None:
    api = app.test_client()
    job_id = api.post("/api/jobs", json=ORDERS, headers=bearer(TOKENS["submit"])).json["id"]
    api.post(f"/api/jobs/{job_id}/cancel", headers=bearer(TOKENS["operate"]))
    new = api.post(f"/api/jobs/{job_id}/resubmit", json={}, headers=bearer(TOKENS["submit"]))
    ops = signed_in_as(app, "operate")
    html = page(ops, f"/dashboard/jobs/{job_id}")
    assert "1 orders received by shop" in html
    assert "cancel asked" in html and "by ana (operate)" in html
    assert f"1 items as job {new.json['id'][:8]}, by shop (submit)" in html
    assert "received by shop" in page(ops, f"/dashboard/jobs/{new.json['id']}")


def test_the_activity_page_lists_newest_first_and_filters(app, sqlite_url) -> None:
    api = app.test_client()
    job_id = api.post("/api/jobs", json=ORDERS, headers=bearer(TOKENS["submit"])).json["id"]
    api.post(f"/api/jobs/{job_id}/cancel", headers=bearer(TOKENS["submit"]))  # denied
    api.post("/api/dispatch/pause", json={"reason": "r"}, headers=bearer(TOKENS["operate"]))
    ops = signed_in_as(app, "operate")

    html = page(ops, "/dashboard/activity")
    actions = re.findall(r'data-action="([^"]+)"', html)
    assert actions == ["session.started", "dispatch.paused", "job.cancelled", "job.submitted"]
    assert 'data-outcome="denied"' in html
    by_shop = re.findall(r'data-action="([^"]+)"', page(ops, "/dashboard/activity?actor=shop"))
    assert by_shop == ["job.cancelled", "job.submitted"]
    about = page(ops, f"/dashboard/activity?target={job_id}&action=job.submitted")
    assert re.findall(r'data-action="([^"]+)"', about) == ["job.submitted"]


def test_entries_of_people_never_hold_the_dashboard_password(app, sqlite_url) -> None:
    client = app.test_client()
    sign_in(client, PASSWORD, user="operator")
    sign_in(client, "not " + PASSWORD, user="operator")
    with session_scope(sqlite_url) as session:
        stored = " ".join(
            f"{e.actor} {e.target} {e.details}" for e in session.scalars(select(AuditEntry))
        )
    assert PASSWORD not in stored


def test_cancelling_by_hand_through_lifecycle_needs_an_actor(sqlite_url) -> None:
    job_id = pending_job(sqlite_url)
    with session_scope(sqlite_url) as session, pytest.raises(TypeError):
        lifecycle.cancel(session, job_id)  # type: ignore[call-arg]
