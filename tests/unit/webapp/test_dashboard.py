"""The dashboard through the Flask test client: login, CSRF, list, job page, submit, cancel."""

from __future__ import annotations

import base64
import io
import json
import re
import zlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import flask
import pytest
import redis
from sqlalchemy import select

from orchestrator import lifecycle
from orchestrator.config import bare_token_name
from orchestrator.db import session_scope
from orchestrator.models import Item, Job
from orchestrator.robot_events import apply_event
from webapp.dashboard import login
from webapp.dashboard.login import session_key

from ..conftest import API_TOKEN, unit_app


def unit_app_with(make_settings, database_url: str, **overrides: Any):
    def settings(**base: Any) -> Any:
        return make_settings(**{**base, **overrides})

    return unit_app(settings, database_url)


PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _no_dashboard_password_in_the_environment(monkeypatch):
    """The app reads DASHBOARD_* when it is built: start every test from the defaults."""
    monkeypatch.delenv("DASHBOARD_USER", raising=False)
    monkeypatch.delenv("DASHBOARD_PASSWORD", raising=False)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def sign_in(client, password: str = API_TOKEN, user: str = "") -> Any:
    token = csrf_of(client.get("/dashboard/login").get_data(as_text=True))
    return client.post(
        "/dashboard/login", data={"csrf_token": token, "user": user, "password": password}
    )


@pytest.fixture
def signed_in(client):
    answer = sign_in(client)
    assert answer.status_code == 303
    return client


def form_page(client, path: str = "/dashboard/submit") -> tuple[str, str]:
    html = client.get(path).get_data(as_text=True)
    submission = re.search(r'name="submission" value="([0-9a-f]{32})"', html)
    assert submission
    return csrf_of(html), submission.group(1)


def post_batch(client, text: str = "", file: tuple[bytes, str] | None = None, **extra: str):
    csrf, submission = form_page(client)
    data: dict[str, Any] = {"csrf_token": csrf, "submission": submission, "text": text, **extra}
    if file is not None:
        data["file"] = (io.BytesIO(file[0]), file[1])
    return client.post("/dashboard/submit", data=data, content_type="multipart/form-data")


def problems(html: str) -> list[str]:
    block = re.search(r'<section class="flash error" id="problems".*?</section>', html, re.S)
    assert block, "no problem list on the page"
    return re.findall(r"<li>(.*?)</li>", block.group(0))


def job_rows(database_url: str) -> list[Job]:
    with session_scope(database_url) as session:
        return list(session.scalars(select(Job)))


def orders_json(*order_ids: str) -> str:
    return json.dumps({"orders": [{"orderId": o, "pedidoInput": {"n": o}} for o in order_ids]})


# --- login ---


def test_every_page_needs_a_login(client):
    for path in ("/dashboard/", "/dashboard/submit", "/dashboard/jobs/x"):
        answer = client.get(path)
        assert answer.status_code == 302
        assert answer.headers["Location"].startswith("/dashboard/login?next=")
    assert client.get("/dashboard/live/jobs").status_code == 401
    assert client.get("/").headers["Location"] == "/dashboard/"


def test_an_api_token_signs_in_and_returns_to_the_page_asked_for(client):
    token = csrf_of(client.get("/dashboard/login").get_data(as_text=True))
    answer = client.post(
        "/dashboard/login?next=/dashboard/submit",
        data={"csrf_token": token, "password": API_TOKEN},
    )
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/dashboard/submit"
    page = client.get("/dashboard/")
    assert page.status_code == 200
    assert "<h1>Jobs</h1>" in page.get_data(as_text=True)


def test_a_wrong_token_is_refused(client):
    answer = sign_in(client, "not-a-token")
    assert answer.status_code == 401
    assert "Wrong token" in answer.get_data(as_text=True)
    assert client.get("/dashboard/").status_code == 302


def test_no_password_login_unless_configured(client, app):
    assert app.config["DASHBOARD_PASSWORD"] is None
    assert sign_in(client, "", user="operator").status_code == 401
    assert sign_in(client, "operator", user="operator").status_code == 401
    assert 'name="user"' not in client.get("/dashboard/login").get_data(as_text=True)


def test_configured_user_and_password_sign_in(client, app):
    app.config["DASHBOARD_PASSWORD"] = PASSWORD
    assert sign_in(client, PASSWORD, user="someone-else").status_code == 401
    assert sign_in(client, PASSWORD + "x", user="operator").status_code == 401
    assert sign_in(client, PASSWORD, user="operator").status_code == 303
    assert "operator" in client.get("/dashboard/").get_data(as_text=True)


def test_next_never_leaves_the_dashboard(client):
    token = csrf_of(client.get("/dashboard/login").get_data(as_text=True))
    answer = client.post(
        "/dashboard/login?next=https://evil.example/dashboard",
        data={"csrf_token": token, "password": API_TOKEN},
    )
    assert answer.headers["Location"] == "/dashboard/"


def test_login_without_csrf_token_is_refused(client):
    client.get("/dashboard/login")
    answer = client.post("/dashboard/login", data={"password": API_TOKEN})
    assert answer.status_code == 400
    assert client.get("/dashboard/").status_code == 302


def test_session_key_is_derived_from_the_callback_secret(app):
    secret = app.extensions["orchestrator"].settings.robot_callback_secret
    assert app.secret_key == session_key(secret)
    assert app.secret_key != secret
    assert secret not in app.secret_key
    assert session_key("a") != session_key("b")


def test_the_session_cookie_holds_no_credential(client):
    sign_in(client)
    cookie = client.get_cookie("session")
    assert cookie is not None
    payload = cookie.value.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    if cookie.value.startswith("."):
        raw = zlib.decompress(raw)
    assert API_TOKEN.encode() not in raw
    assert bare_token_name(API_TOKEN).encode() in raw  # the token's name (CONTRACT §12)


def test_removing_a_token_ends_its_sessions(client, app):
    sign_in(client, "second-token")
    assert client.get("/dashboard/").status_code == 200
    state = app.extensions["orchestrator"]
    state.settings = replace(state.settings, api_tokens=(API_TOKEN,))
    assert client.get("/dashboard/").status_code == 302


def test_sign_out(signed_in):
    html = signed_in.get("/dashboard/").get_data(as_text=True)
    answer = signed_in.post("/dashboard/logout", data={"csrf_token": csrf_of(html)})
    assert answer.status_code == 303
    assert signed_in.get("/dashboard/").status_code == 302


# --- submit ---


def test_pasted_json_creates_a_job_and_starts_it(signed_in, sqlite_url, started):
    answer = post_batch(signed_in, orders_json("A-1", "A-2"))
    assert answer.status_code == 303
    job_id = answer.headers["Location"].rsplit("/", 1)[1]
    assert started.job_ids == [job_id]
    [job] = job_rows(sqlite_url)
    assert job.id == job_id and job.item_count == 2
    page = signed_in.get(answer.headers["Location"]).get_data(as_text=True)
    assert "Job submitted: 2 orders." in page
    assert 'data-order="A-1"' in page and 'data-order="A-2"' in page


def test_csv_upload_with_one_column_per_field(signed_in, sqlite_url, started):
    csv = "orderId,ciudad,peso_kg\nC-1,Cali,1.5\nC-2,Bogotá,2\n".encode()
    answer = post_batch(signed_in, file=(csv, "orders.csv"))
    assert answer.status_code == 303
    with session_scope(sqlite_url) as session:
        items = list(session.scalars(select(Item).order_by(Item.position)))
        assert [(i.order_id, i.pedido_input) for i in items] == [
            ("C-1", {"ciudad": "Cali", "peso_kg": "1.5"}),
            ("C-2", {"ciudad": "Bogotá", "peso_kg": "2"}),
        ]
    assert len(started.job_ids) == 1


def test_csv_upload_with_a_pedido_input_column(signed_in, sqlite_url):
    csv = b'orderId,pedidoInput\nP-1,"{""ciudad"": ""Cali"", ""peso"": 2}"\n'
    assert post_batch(signed_in, file=(csv, "orders.csv")).status_code == 303
    with session_scope(sqlite_url) as session:
        item = session.scalars(select(Item)).one()
        assert item.pedido_input == {"ciudad": "Cali", "peso": 2}


def test_bad_rows_are_listed_by_line_and_nothing_is_created(signed_in, sqlite_url, started):
    csv = b'orderId,pedidoInput\nB-1,{}\n,{}\nB-3,"[1, 2]"\nB-1,{}\n'
    answer = post_batch(signed_in, file=(csv, "orders.csv"))
    assert answer.status_code == 422
    assert problems(answer.get_data(as_text=True)) == [
        "line 3: orderId is empty",
        "line 4: pedidoInput must be a JSON object ({...})",
        "line 5: orderId &#39;B-1&#39; repeats line 2",
    ]
    assert job_rows(sqlite_url) == [] and started.job_ids == []


def test_the_batch_size_limit_applies(signed_in, sqlite_url):
    answer = post_batch(signed_in, orders_json(*[f"N-{n}" for n in range(51)]))
    assert answer.status_code == 422
    assert problems(answer.get_data(as_text=True)) == [
        "a job takes at most 50 orders; this batch has 51"
    ]
    assert job_rows(sqlite_url) == []


def test_invalid_json_names_its_line(signed_in):
    answer = post_batch(signed_in, '{"orders": [\n  {"orderId": "J-1",}\n]}')
    assert answer.status_code == 422
    [problem] = problems(answer.get_data(as_text=True))
    assert problem.startswith("line 2: invalid JSON")
    # The pasted text stays in the form to be fixed.
    assert "J-1" in answer.get_data(as_text=True)


def test_empty_form_and_both_inputs_are_refused(signed_in):
    assert problems(post_batch(signed_in).get_data(as_text=True)) == [
        "Choose a file or paste the orders."
    ]
    answer = post_batch(signed_in, orders_json("X"), file=(b"orderId,x\nY,1\n", "o.csv"))
    assert problems(answer.get_data(as_text=True)) == ["Upload a file or paste text, not both."]


def test_a_double_submit_of_one_form_makes_one_job(signed_in, sqlite_url, started):
    csrf, submission = form_page(signed_in)
    data = {"csrf_token": csrf, "submission": submission, "text": orders_json("D-1")}
    first = signed_in.post("/dashboard/submit", data=data)
    second = signed_in.post("/dashboard/submit", data=data)
    assert first.headers["Location"] == second.headers["Location"]
    assert len(job_rows(sqlite_url)) == 1 and len(started.job_ids) == 1
    page = signed_in.get(second.headers["Location"]).get_data(as_text=True)
    assert "This form was submitted before" in page


def test_submit_without_csrf_token_creates_nothing(signed_in, sqlite_url):
    _, submission = form_page(signed_in)
    answer = signed_in.post(
        "/dashboard/submit", data={"submission": submission, "text": orders_json("Z")}
    )
    assert answer.status_code == 400
    assert "reload" in answer.get_data(as_text=True)
    assert job_rows(sqlite_url) == []


def test_a_foreign_sessions_csrf_token_is_refused(signed_in, app, sqlite_url):
    other = app.test_client()
    sign_in(other)
    foreign = csrf_of(other.get("/dashboard/submit").get_data(as_text=True))
    _, submission = form_page(signed_in)
    answer = signed_in.post(
        "/dashboard/submit",
        data={"csrf_token": foreign, "submission": submission, "text": orders_json("F")},
    )
    assert answer.status_code == 400
    assert job_rows(sqlite_url) == []


# --- job list and job page ---


def _submit(client) -> str:
    answer = post_batch(client, orders_json("T-1", "T-2", "T-3"))
    return answer.headers["Location"].rsplit("/", 1)[1]


def _run_robot(database_url: str, make_settings, job_id: str) -> None:
    """Walk the job through dispatch and the robot's callbacks as a worker and the edge would."""
    settings = make_settings(database_url=database_url)
    with session_scope(database_url) as session:
        lifecycle.mark_processing(session, job_id)
    with session_scope(database_url) as session:
        ticket = lifecycle.claim_dispatch(session, job_id, settings)
        assert ticket is not None
    with session_scope(database_url) as session:
        lifecycle.record_dispatch_result(session, job_id, "accepted")
    first, second, third = (item["itemId"] for item in ticket.items)
    events = [
        ("robot.item.started", {"itemId": first}),
        ("robot.item.completed", {"itemId": first, "status": "success", "trackingNumber": "CO42"}),
        ("robot.item.completed", {"itemId": second, "status": "error", "error": "bad address"}),
        ("robot.batch.completed", {"items": []}),
    ]
    for n, (event_type, data) in enumerate(events):
        with session_scope(database_url) as session:
            apply_event(session, job_id, f"msg_{n}", event_type, data)
    with session_scope(database_url) as session:
        assert lifecycle.finalize(session, job_id) == "completed"
    # A result the robot sends after the end is recorded as late and still applied.
    with session_scope(database_url) as session:
        late = {"itemId": third, "status": "success", "trackingNumber": "CO43"}
        apply_event(session, job_id, "msg_late", "robot.item.completed", late)


def test_job_page_shows_items_tracking_numbers_errors_and_timeline(
    signed_in, sqlite_url, make_settings
):
    job_id = _submit(signed_in)
    _run_robot(sqlite_url, make_settings, job_id)
    html = signed_in.get(f"/dashboard/jobs/{job_id}").get_data(as_text=True)
    assert 'data-final="true"' in html
    assert 'data-status="completed"' in html
    assert "CO42" in html and "bad address" in html and "CO43" in html
    steps = re.findall(
        r'<span class="step">(.*?)(?: <span class="badge badge-late">late</span>)?</span>', html
    )
    assert steps == [
        "created",
        "processing",
        "dispatched",
        "waiting for the robot",
        "item.started",
        "item.completed",
        "item.completed",
        "batch.completed",
        "completed",
        "item.completed",
    ]
    assert html.count("badge-late") == 1
    assert "T-1: success, tracking number CO42" in html
    assert "T-2: error, bad address" in html
    assert "Cancel job" not in html


def test_open_job_page_follows_its_event_stream_and_offers_cancel(signed_in):
    job_id = _submit(signed_in)
    html = signed_in.get(f"/dashboard/jobs/{job_id}").get_data(as_text=True)
    assert f'data-live="/dashboard/live/jobs/{job_id}"' in html
    assert f'data-events="/dashboard/live/jobs/{job_id}/events"' in html
    assert 'data-final="false"' in html and "Cancel job" in html
    fragment = signed_in.get(f"/dashboard/live/jobs/{job_id}").get_data(as_text=True)
    assert "<html" not in fragment and 'id="live"' in fragment


def test_cancel_button_cancels_and_a_second_press_says_why_not(signed_in, sqlite_url, app):
    job_id = _submit(signed_in)
    html = signed_in.get(f"/dashboard/jobs/{job_id}").get_data(as_text=True)
    answer = signed_in.post(f"/dashboard/jobs/{job_id}/cancel", data={"csrf_token": csrf_of(html)})
    assert answer.status_code == 303
    page = signed_in.get(f"/dashboard/jobs/{job_id}").get_data(as_text=True)
    assert "Job cancelled" in page and 'data-status="cancelled"' in page
    with session_scope(sqlite_url) as session:
        statuses = {i.status for i in session.scalars(select(Item))}
        assert statuses == {"error"}  # never dispatched: safe to submit again
    signed_in.post(f"/dashboard/jobs/{job_id}/cancel", data={"csrf_token": csrf_of(page)})
    again = signed_in.get(f"/dashboard/jobs/{job_id}").get_data(as_text=True)
    assert "already cancelled" in again


def test_cancel_needs_the_csrf_token(signed_in, sqlite_url):
    job_id = _submit(signed_in)
    assert signed_in.post(f"/dashboard/jobs/{job_id}/cancel").status_code == 400
    [job] = job_rows(sqlite_url)
    assert job.status == "pending"


def test_job_list_counts_filters_and_badges(signed_in, sqlite_url, make_settings):
    done = _submit(signed_in)
    _run_robot(sqlite_url, make_settings, done)
    waiting = _submit(signed_in)
    html = signed_in.get("/dashboard/").get_data(as_text=True)
    assert f'data-job="{done}"' in html and f'data-job="{waiting}"' in html
    assert '<span class="count" data-count="completed">1</span>' in html
    assert '<span class="count" data-count="pending">1</span>' in html
    only = signed_in.get("/dashboard/?status=completed").get_data(as_text=True)
    assert f'data-job="{done}"' in only and f'data-job="{waiting}"' not in only
    live = signed_in.get("/dashboard/live/jobs?status=pending").get_data(as_text=True)
    assert f'data-job="{waiting}"' in live and "<html" not in live


def test_job_list_pages_with_a_signed_cursor(signed_in, monkeypatch):
    from webapp.dashboard import views

    monkeypatch.setattr(views, "PAGE_SIZE", 2)
    ids = [_submit(signed_in) for _ in range(3)]
    first = signed_in.get("/dashboard/").get_data(as_text=True)
    assert f'data-job="{ids[0]}"' not in first
    older = re.search(r'href="(/dashboard/\?before=[^"]+)"', first)
    assert older
    second = signed_in.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert f'data-job="{ids[0]}"' in second
    assert signed_in.get("/dashboard/?before=forged").status_code == 404


def test_unknown_pages_answer_html_not_json(signed_in):
    answer = signed_in.get("/dashboard/jobs/no-such-job")
    assert answer.status_code == 404
    assert answer.mimetype == "text/html"
    assert "there is no job no-such-job" in answer.get_data(as_text=True)
    assert signed_in.get("/dashboard/?status=bogus").status_code == 404


def test_the_api_keeps_its_json_errors(client):
    answer = client.get("/api/jobs")
    assert answer.status_code == 401 and answer.is_json


def from_address(client, address: str) -> Any:
    client.environ_base["REMOTE_ADDR"] = address
    return client


def test_failed_sign_ins_back_off_per_address_and_user(client, fake_redis):
    attacker = from_address(client, "198.51.100.7")
    for _ in range(login.FREE_FAILURES):
        assert sign_in(attacker, "guess").status_code == 401
    waits = []
    for _ in range(4):
        refused = sign_in(attacker, API_TOKEN)  # even the right token waits its turn here
        assert refused.status_code == 429
        assert "Too many failed sign-ins" in refused.get_data(as_text=True)
        waits.append(int(refused.headers["Retry-After"]))
        wait_keys = fake_redis.keys(login._FAILURES + "*:wait")
        fake_redis.delete(*wait_keys)  # the wait is over
        assert sign_in(attacker, "guess").status_code == 401
    assert waits == [1, 2, 4, 8]  # each failure past the free ones doubles the wait
    assert fake_redis.ttl(fake_redis.keys(login._FAILURES + "*:wait")[0]) == 16


def test_a_flood_of_failed_sign_ins_never_refuses_someone_elses_correct_login(client, app):
    app.config["DASHBOARD_PASSWORD"] = PASSWORD
    attacker = from_address(client, "198.51.100.7")
    for n in range(60):  # guessing tokens under ever new user names changes nothing
        sign_in(attacker, f"guess-{n}", user=f"name-{n}")
    assert sign_in(attacker, "guess").status_code == 429
    # The operator's password from the same address: another user, another count.
    assert sign_in(attacker, PASSWORD, user="operator").status_code == 303
    # Anyone's token from another address.
    other = app.test_client()
    assert sign_in(from_address(other, "203.0.113.5"), API_TOKEN).status_code == 303


def test_a_successful_sign_in_forgets_the_failures(client, fake_redis):
    for _ in range(login.FREE_FAILURES - 1):
        assert sign_in(client, "guess").status_code == 401
    assert sign_in(client, API_TOKEN).status_code == 303
    assert fake_redis.keys(login._FAILURES + "*") == []


# --- the session cookie and its record ---


def set_cookie(answer) -> str:
    cookies = [v for k, v in answer.headers.items() if k == "Set-Cookie"]
    assert len(cookies) == 1, cookies
    return cookies[0]


def test_the_session_cookie_is_httponly_samesite_and_lasts_12_hours(client):
    before = datetime.now(UTC)
    cookie = set_cookie(sign_in(client))
    attributes = [part.strip() for part in cookie.split(";")]
    assert "HttpOnly" in attributes
    assert "SameSite=Lax" in attributes
    assert "Path=/" in attributes
    assert "Secure" not in attributes  # PUBLIC_URL is plain http here
    expires = parsedate_to_datetime(cookie.split("Expires=")[1].split(";")[0])
    assert timedelta(hours=12) - timedelta(minutes=1) <= expires - before <= timedelta(hours=12)


def test_the_session_cookie_is_secure_on_an_https_public_url(
    sqlite_url, make_settings, fake_redis, started
):
    app = unit_app_with(make_settings, sqlite_url, public_url="https://orchestrator.example")
    client = app.test_client()
    cookie = set_cookie(sign_in(client, API_TOKEN))
    assert "Secure" in [part.strip() for part in cookie.split(";")]


def test_the_live_refresh_does_not_extend_the_session(signed_in, monkeypatch):
    signed_in_at = login._now()
    for hours in (1, 6, 11.9):
        monkeypatch.setattr(login, "_now", lambda h=hours: signed_in_at + h * 3600)
        answer = signed_in.get("/dashboard/live/jobs")
        assert answer.status_code == 200
        assert "Set-Cookie" not in answer.headers
    monkeypatch.setattr(login, "_now", lambda: signed_in_at + 12 * 3600 + 1)
    assert signed_in.get("/dashboard/live/jobs").status_code == 401
    assert signed_in.get("/dashboard/").status_code == 302


def test_the_session_record_in_redis_expires_12_hours_after_sign_in(signed_in, fake_redis):
    (record,) = fake_redis.keys(login._SESSIONS + "*")
    assert 12 * 3600 - 5 <= fake_redis.ttl(record) <= 12 * 3600
    fake_redis.expire(record, 100)
    assert signed_in.get("/dashboard/live/jobs").status_code == 200
    assert fake_redis.ttl(record) <= 100  # a request never extends it
    fake_redis.delete(record)  # what its expiry does
    assert signed_in.get("/dashboard/").status_code == 302


def test_a_cookie_replayed_after_sign_out_is_refused(signed_in, app, fake_redis):
    kept = signed_in.get_cookie("session").value
    html = signed_in.get("/dashboard/").get_data(as_text=True)
    assert signed_in.post("/dashboard/logout", data={"csrf_token": csrf_of(html)}).status_code
    assert fake_redis.keys(login._SESSIONS + "*") == []
    thief = app.test_client()
    thief.set_cookie("session", kept)
    answer = thief.get("/dashboard/")
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith("/dashboard/login")


def test_without_redis_no_session_is_accepted_or_opened(signed_in, fake_redis, monkeypatch):
    def down(*_, **__):
        raise redis.ConnectionError("Redis is gone")

    monkeypatch.setattr(fake_redis, "exists", down)
    monkeypatch.setattr(fake_redis, "set", down)
    assert signed_in.get("/dashboard/").status_code == 302
    answer = sign_in(signed_in)
    assert answer.status_code == 503
    assert "needs Redis" in answer.get_data(as_text=True)


def test_requests_under_api_never_open_or_set_the_session_cookie(signed_in, app):
    # The job API takes bearer tokens only: a signed-in browser's cookie is not a credential.
    answer = signed_in.get("/api/jobs")
    assert answer.status_code == 401
    assert "Set-Cookie" not in answer.headers
    with app.test_request_context("/api/jobs"):
        assert app.session_interface.open_session(app, flask.request) is None
    with app.test_request_context("/dashboard/"):
        assert app.session_interface.open_session(app, flask.request) is not None
    # The dashboard session itself is untouched.
    assert signed_in.get("/dashboard/").status_code == 200


# --- the robot: capacity, queue, pause and resume (CONTRACT §7) ---

FUTURE = "2999-01-02T03:04:05"


def submit_api(client, auth, priority: int | None = None, orders: int = 1) -> str:
    body: dict[str, Any] = {
        "orders": [{"orderId": f"Q-{n}", "pedidoInput": {}} for n in range(orders)]
    }
    if priority is not None:
        body["priority"] = priority
    answer = client.post("/api/jobs", json=body, headers=auth)
    assert answer.status_code == 202, answer.get_data(as_text=True)
    return answer.get_json()["id"]


def dispatch_one(database_url: str, settings, job_id: str) -> None:
    """Claim the job's dispatch as the worker does: it becomes active."""
    with session_scope(database_url) as session:
        lifecycle.mark_processing(session, job_id)
    with session_scope(database_url) as session:
        assert lifecycle.claim_dispatch(session, job_id, settings) is not None


def queue_rows(html: str) -> list[tuple[str, str, str, str]]:
    """(job id, position, priority, orders) of each row of the queue table, in order."""
    return re.findall(
        r'<tr data-job="([^"]+)">\s*<td class="num">(\d+)</td>\s*<td class="num">(-?\d+)</td>'
        r"\s*<td>.*?</td>\s*<td class=\"num\">(\d+)</td>",
        html,
        re.S,
    )


def banner(html: str) -> str | None:
    match = re.search(r'<p class="banner" role="alert".*?</p>', html, re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", match.group(0))).strip() if match else None


def limit_robot(app, limit: int | None):
    state = app.extensions["orchestrator"]
    state.settings = replace(state.settings, robot_max_active_jobs=limit)
    return state.settings


def test_the_robot_page_shows_capacity_and_the_queue_in_dispatch_order(
    signed_in, app, auth, sqlite_url
):
    settings = limit_robot(app, 2)
    first = submit_api(signed_in, auth)
    low = submit_api(signed_in, auth, priority=-3, orders=2)
    high = submit_api(signed_in, auth, priority=7, orders=3)
    last = submit_api(signed_in, auth)
    dispatch_one(sqlite_url, settings, high)  # the first in order goes to the robot

    html = signed_in.get("/dashboard/dispatch").get_data(as_text=True)
    assert '<dd id="capacity">1 / 2</dd>' in html
    assert '<dd id="waiting-count">3</dd>' in html
    assert queue_rows(html) == [
        (first, "1", "0", "1"),
        (last, "2", "0", "1"),
        (low, "3", "-3", "2"),
    ]
    assert 'href="/dashboard/dispatch"' in signed_in.get("/dashboard/").get_data(as_text=True)
    # The live part shows the same, for the page's refresh.
    live = signed_in.get("/dashboard/live/dispatch").get_data(as_text=True)
    assert queue_rows(live) == queue_rows(html)
    assert "csrf_token" not in live  # the forms stay outside the part that is replaced
    # The positions are the API's.
    api = {j: signed_in.get(f"/api/jobs/{j}", headers=auth).get_json() for j in (first, low)}
    assert (api[first]["queuePosition"], api[low]["queuePosition"]) == (1, 3)

    limit_robot(app, None)
    html = signed_in.get("/dashboard/dispatch").get_data(as_text=True)
    assert '<dd id="capacity">1 (no limit)</dd>' in html


def test_an_empty_queue_says_so(signed_in):
    html = signed_in.get("/dashboard/dispatch").get_data(as_text=True)
    assert "No job is waiting for the robot." in html
    assert '<dd id="capacity">0 (no limit)</dd>' in html
    assert banner(html) is None


def test_pause_from_the_page_shows_the_banner_on_every_page_until_resumed(signed_in, auth, started):
    job_id = submit_api(signed_in, auth)
    csrf = csrf_of(signed_in.get("/dashboard/dispatch").get_data(as_text=True))
    answer = signed_in.post(
        "/dashboard/dispatch/pause",
        data={"csrf_token": csrf, "reason": "portal maintenance", "until": FUTURE},
    )
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/dashboard/dispatch"
    state = signed_in.get("/api/dispatch", headers=auth).get_json()
    assert state["paused"] is True
    assert state["pausedBy"] == "api"
    assert state["pausedReason"] == "portal maintenance"
    assert state["pausedUntil"].startswith("2999-01-02T03:04:05")  # read as UTC

    page = signed_in.get("/dashboard/dispatch").get_data(as_text=True)
    assert "Dispatching paused until 2999-01-02 03:04:05 UTC." in page
    for path in (
        "/dashboard/",
        "/dashboard/submit",
        f"/dashboard/jobs/{job_id}",
        "/dashboard/dispatch",
        "/dashboard/jobs/no-such-job",  # the error page too
        "/dashboard/?status=nope",
    ):
        text = banner(signed_in.get(path).get_data(as_text=True))
        assert text is not None, path
        assert text.startswith("Dispatching is paused. Reason: portal maintenance."), text
        assert "It resumes by itself at 2999-01-02 03:04:05 UTC." in text
        assert "1 waiting." in text
    live = signed_in.get("/dashboard/live/banner").get_data(as_text=True)
    assert "portal maintenance" in banner(live)
    assert "Resume dispatching" in page and "Change the pause" in page

    answer = signed_in.post("/dashboard/dispatch/resume", data={"csrf_token": csrf})
    assert answer.status_code == 303
    page = signed_in.get("/dashboard/dispatch").get_data(as_text=True)
    assert "Dispatching resumed" in page
    assert banner(page) is None
    assert banner(signed_in.get("/dashboard/live/banner").get_data(as_text=True)) is None
    assert signed_in.get("/api/dispatch", headers=auth).get_json()["paused"] is False


def test_a_pause_without_an_end_and_pausing_again_replaces_it(signed_in, auth):
    csrf = csrf_of(signed_in.get("/dashboard/dispatch").get_data(as_text=True))
    signed_in.post(
        "/dashboard/dispatch/pause",
        data={"csrf_token": csrf, "reason": "first", "until": FUTURE},
    )
    answer = signed_in.post(
        "/dashboard/dispatch/pause", data={"csrf_token": csrf, "reason": "second", "until": ""}
    )
    assert answer.status_code == 303
    state = signed_in.get("/api/dispatch", headers=auth).get_json()
    assert (state["pausedReason"], state["pausedUntil"]) == ("second", None)
    text = banner(signed_in.get("/dashboard/").get_data(as_text=True))
    assert "Reason: second. It stays paused until someone resumes it." in text


def test_an_end_time_with_an_offset_is_kept(signed_in, auth):
    csrf = csrf_of(signed_in.get("/dashboard/dispatch").get_data(as_text=True))
    signed_in.post(
        "/dashboard/dispatch/pause",
        data={"csrf_token": csrf, "reason": "r", "until": "2999-01-02T03:04:05-05:00"},
    )
    until = signed_in.get("/api/dispatch", headers=auth).get_json()["pausedUntil"]
    assert until.startswith("2999-01-02T08:04:05")


@pytest.mark.parametrize(
    ("form", "problem"),
    [
        ({"reason": ""}, "Reason:"),
        ({"reason": "   "}, "Reason:"),
        ({"reason": "x" * 501}, "Reason:"),
        ({"reason": "ok", "until": "2001-01-01T00:00"}, "End time: must be a time in the future"),
        ({"reason": "ok", "until": "tomorrow"}, "End time:"),
    ],
)
def test_a_bad_pause_form_names_the_problem_and_pauses_nothing(signed_in, auth, form, problem):
    csrf = csrf_of(signed_in.get("/dashboard/dispatch").get_data(as_text=True))
    answer = signed_in.post("/dashboard/dispatch/pause", data={"csrf_token": csrf, **form})
    assert answer.status_code == 422
    html = answer.get_data(as_text=True)
    found = problems(html)
    assert len(found) == 1 and found[0].startswith(problem), found
    assert f'value="{form["reason"].strip()}"' in html  # what was typed is kept
    assert signed_in.get("/api/dispatch", headers=auth).get_json()["paused"] is False


def test_pause_and_resume_need_the_csrf_token(signed_in, auth):
    assert signed_in.post("/dashboard/dispatch/pause", data={"reason": "x"}).status_code == 400
    assert signed_in.get("/api/dispatch", headers=auth).get_json()["paused"] is False
    signed_in.post("/api/dispatch/pause", json={"reason": "by the API"}, headers=auth)
    assert signed_in.post("/dashboard/dispatch/resume", data={}).status_code == 400
    assert signed_in.get("/api/dispatch", headers=auth).get_json()["paused"] is True


def test_strangers_get_no_banner_and_no_robot_page(client, auth):
    client.post("/api/dispatch/pause", json={"reason": "secret plans"}, headers=auth)
    login_page = client.get("/dashboard/login").get_data(as_text=True)
    assert "secret plans" not in login_page and banner(login_page) is None
    assert client.get("/dashboard/dispatch").status_code == 302
    assert client.get("/dashboard/live/banner").status_code == 401
    assert client.get("/dashboard/live/dispatch").status_code == 401
    assert client.post("/dashboard/dispatch/resume").status_code in (302, 400)
    assert client.get("/api/dispatch", headers=auth).get_json()["paused"] is True


def test_the_banner_says_when_dispatching_paused_itself_after_failures(signed_in, app, sqlite_url):
    from orchestrator import dispatch_control

    settings = app.extensions["orchestrator"].settings
    with session_scope(sqlite_url) as session:
        for _ in range(settings.robot_pause_after_failures):
            dispatch_control.count_failure(session, settings, "connection refused", True)
    text = banner(signed_in.get("/dashboard/submit").get_data(as_text=True))
    assert text is not None
    assert text.startswith(
        "Dispatching is paused by itself after 3 failed dispatches. Reason: 3 dispatches failed"
        " in a row; the last: connection refused."
    ), text
    assert "It stays paused until someone resumes it." in text


# --- hostile input that used to answer 500 ---


def test_a_next_with_control_characters_leads_to_the_job_list(client):
    for target in ("/dashboard%0d%0aX-Injected:%201", "/dashboard\\x", "/dashboard%E2%80%AE"):
        token = csrf_of(client.get("/dashboard/login").get_data(as_text=True))
        answer = client.post(
            f"/dashboard/login?next={target}", data={"csrf_token": token, "password": API_TOKEN}
        )
        assert answer.status_code == 303, target
        assert answer.headers["Location"] == "/dashboard/"
        assert "X-Injected" not in answer.headers


def test_a_paste_nested_too_deeply_is_a_problem_not_a_500(signed_in, sqlite_url):
    deep = 25_000  # within the unit app's MAX_BODY_BYTES
    text = '{"orders": [{"orderId": "A", "pedidoInput": {"a": ' + "[" * deep + "]" * deep
    answer = post_batch(signed_in, text + "}}]}")
    assert answer.status_code == 422
    assert problems(answer.get_data(as_text=True)) == ["the JSON is nested too deeply to read"]
    cell = '"' + "[" * deep + "]" * deep + '"'
    answer = post_batch(signed_in, file=(f"orderId,pedidoInput\nA,{cell}\n".encode(), "deep.csv"))
    assert answer.status_code == 422
    assert problems(answer.get_data(as_text=True)) == [
        "line 2: pedidoInput is nested too deeply to read"
    ]
    assert job_rows(sqlite_url) == []


def test_a_paste_or_upload_with_1e400_is_a_problem_and_makes_no_job(signed_in, sqlite_url):
    """CONTRACT §3: a number no double holds is refused, in the dashboard's batches too."""
    answer = post_batch(signed_in, '[{"orderId": "A", "pedidoInput": {"x": 1e400}}]')
    assert answer.status_code == 422
    assert problems(answer.get_data(as_text=True)) == [
        "a number does not fit a double (64-bit float) at 0.pedidoInput.x"
    ]
    csv = b'orderId,pedidoInput\nA,"{""x"": -1e400}"\n'
    answer = post_batch(signed_in, file=(csv, "big.csv"))
    assert answer.status_code == 422
    assert problems(answer.get_data(as_text=True)) == [
        "line 2: pedidoInput: a number does not fit a double (64-bit float) at x"
    ]
    assert job_rows(sqlite_url) == []


def _first_event(response) -> dict:
    for chunk in response.response:
        text = chunk.decode() if isinstance(chunk, bytes) else chunk
        for line in text.splitlines():
            if line.startswith("data: "):
                response.close()
                return json.loads(line.removeprefix("data: "))
    raise AssertionError("no event")


def test_the_job_page_and_the_list_have_session_authenticated_event_streams(client, signed_in, app):
    job_id = _submit(signed_in)
    list_html = signed_in.get("/dashboard/").get_data(as_text=True)
    assert 'data-events="/dashboard/live/events"' in list_html
    job_stream = signed_in.get(f"/dashboard/live/jobs/{job_id}/events", buffered=False)
    assert job_stream.mimetype == "text/event-stream"
    assert _first_event(job_stream)["id"] == job_id
    list_stream = signed_in.get("/dashboard/live/events", buffered=False)
    assert list_stream.mimetype == "text/event-stream"
    assert job_id in [job["id"] for job in _first_event(list_stream)]
    assert signed_in.get("/dashboard/live/jobs/no-such-job/events").status_code == 404


def test_the_event_streams_need_a_signed_in_person(client):
    assert client.get("/dashboard/live/events").status_code == 401
    assert client.get("/dashboard/live/jobs/any/events").status_code == 401


def test_the_dashboard_script_follows_event_streams_and_polls_only_the_rest():
    script = (Path(__file__).parents[3] / "webapp/dashboard/static/dashboard.js").read_text()
    assert "new EventSource(" in script
    assert 'hasAttribute("data-events")' in script
