"""GET /api/notifications and POST /api/notifications/<id>/redeliver (CONTRACT §3)."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from orchestrator import audit, lifecycle, notifications, tasks
from orchestrator.db import session_scope
from orchestrator.models import Notification
from webapp import create_app

from ..conftest import API_TOKEN, REDIS_URL
from ..orchestrator.test_notifications import SECRET

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def enqueued(monkeypatch) -> list:
    sent: list = []
    monkeypatch.setattr(tasks, "enqueue_delivery", lambda app, job_id: sent.append(job_id))
    return sent


def make_app(make_settings, url: str, **overrides):
    settings = make_settings(
        database_url=url, redis_url=REDIS_URL, api_tokens=(API_TOKEN,), **overrides
    )
    return create_app(settings)


@pytest.fixture
def client(sqlite_url, make_settings, fake_redis, enqueued):
    app = make_app(
        make_settings, sqlite_url, notify_url="http://127.0.0.1:9/hook", notify_secret=SECRET
    )
    return app.test_client()


def add(url: str, count: int, status: str = "pending") -> list[str]:
    ids = []
    for n in range(count):
        with session_scope(url) as session:
            ids.append(notifications.record(session, notifications.DISPATCH_PAUSED, {"n": n}) or "")
    with session_scope(url) as session:
        session.execute(update(Notification).where(Notification.id.in_(ids)).values(status=status))
    return ids


def test_the_list_needs_a_token(client) -> None:
    assert client.get("/api/notifications").status_code == 401
    assert client.post("/api/notifications/x/redeliver").status_code == 401


def test_an_empty_outbox(client) -> None:
    answer = client.get("/api/notifications", headers=AUTH)
    assert answer.status_code == 200
    assert answer.json == {"notifications": [], "nextCursor": None}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=sent", "status"),
        ("status=", "status"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("cursor=forged", "cursor"),
    ],
)
def test_bad_query_values_are_422_naming_the_field(client, query, field) -> None:
    answer = client.get(f"/api/notifications?{query}", headers=AUTH)
    assert answer.status_code == 422
    assert field in answer.json["error"]["details"]


def test_pages_are_newest_first_and_the_cursor_follows_on(client, sqlite_url) -> None:
    ids = add(sqlite_url, 5)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(f"/api/notifications?{query}", headers=AUTH).json
        seen += [n["id"] for n in body["notifications"]]
        pages += 1
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids)) and pages == 3
    first = client.get("/api/notifications?limit=1", headers=AUTH).json["notifications"][0]
    assert set(first) == {
        "id",
        "type",
        "jobId",
        "status",
        "attempts",
        "lastError",
        "createdAt",
        "deliveredAt",
        "nextAttemptAt",
    }
    assert (first["type"], first["jobId"], first["attempts"]) == ("dispatch.paused", None, 0)
    assert first["createdAt"].endswith("+00:00")


def test_the_status_filter(client, sqlite_url) -> None:
    pending = add(sqlite_url, 2)
    failed = add(sqlite_url, 1, status="failed")
    delivered = add(sqlite_url, 1, status="delivered")
    for status, wanted in (("pending", pending), ("failed", failed), ("delivered", delivered)):
        body = client.get(f"/api/notifications?status={status}", headers=AUTH).json
        assert [n["id"] for n in body["notifications"]] == list(reversed(wanted))


def test_redeliver_makes_it_pending_and_due_now_after_the_commit(
    client, sqlite_url, enqueued
) -> None:
    [failed] = add(sqlite_url, 1, status="failed")
    enqueued.clear()
    answer = client.post(f"/api/notifications/{failed}/redeliver", headers=AUTH)
    assert answer.status_code == 202
    assert answer.json["id"] == failed and answer.json["status"] == "pending"
    assert answer.json["nextAttemptAt"] is not None
    assert enqueued == [None]  # the stream of notifications about no job


def test_redeliver_an_unknown_id_is_404(client) -> None:
    answer = client.post("/api/notifications/msg_unknown/redeliver", headers=AUTH)
    assert answer.status_code == 404
    assert answer.json["error"]["code"] == "not_found"


def test_redeliver_with_notifications_off_is_409(
    tmp_path, make_settings, fake_redis, enqueued
) -> None:
    from tests.conftest import migrated_sqlite

    url = migrated_sqlite(str(tmp_path / "off.db"))
    on = make_app(make_settings, url, notify_url="http://127.0.0.1:9/h", notify_secret=SECRET)
    [row] = add(url, 1)
    off = make_app(make_settings, url).test_client()
    answer = off.post(f"/api/notifications/{row}/redeliver", headers=AUTH)
    assert answer.status_code == 409 and answer.json["error"]["code"] == "notifications_off"
    assert on is not None


# --- the dashboard's notifications page and the job page's section ---


def _signed_in(client):
    from .test_dashboard import sign_in

    assert sign_in(client).status_code == 303
    return client


def test_the_dashboard_lists_failed_and_pending_with_their_error_and_redelivers(
    client, sqlite_url, enqueued, monkeypatch
) -> None:
    monkeypatch.delenv("DASHBOARD_PASSWORD", raising=False)
    from .test_dashboard import csrf_of

    [failed] = add(sqlite_url, 1, status="failed")
    [pending] = add(sqlite_url, 1)
    with session_scope(sqlite_url) as session:
        session.execute(
            update(Notification)
            .where(Notification.id == failed)
            .values(last_error="answered HTTP 500", attempts=7)
        )
    signed = _signed_in(client)
    page = signed.get("/dashboard/notifications")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert failed in html and pending in html and "answered HTTP 500" in html
    assert html.count(">Redeliver</button>") == 2
    enqueued.clear()
    without_csrf = signed.post(f"/dashboard/notifications/{failed}/redeliver")
    assert without_csrf.status_code in (400, 403) and enqueued == []
    answer = signed.post(
        f"/dashboard/notifications/{failed}/redeliver",
        data={"csrf_token": csrf_of(html), "back": "https://evil.example/"},
    )
    assert answer.status_code == 303
    assert answer.headers["Location"].endswith("/dashboard/notifications")
    assert enqueued == [None]
    after = signed.get("/dashboard/notifications").get_data(as_text=True)
    assert "will be sent again" in after
    with session_scope(sqlite_url) as session:
        row = session.scalar(select(Notification).where(Notification.id == failed))
        assert row is not None and row.status == "pending"


def test_the_job_page_shows_its_notifications(client, sqlite_url, monkeypatch) -> None:
    monkeypatch.delenv("DASHBOARD_PASSWORD", raising=False)
    with session_scope(sqlite_url) as session:
        job_id = lifecycle.create_job(session, [{"orderId": "A", "pedidoInput": {}}]).id
    with session_scope(sqlite_url) as session:
        lifecycle.cancel(session, job_id, actor=audit.SYSTEM)
    signed = _signed_in(client)
    html = signed.get(f"/dashboard/jobs/{job_id}").get_data(as_text=True)
    assert 'id="notifications"' in html and "job.finished" in html
    assert ">Redeliver</button>" in html
