"""Who may do what, and who did (CONTRACT §12): roles on every route, 403s, the audit log."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from flask import Flask
from sqlalchemy import func, select

from orchestrator import audit, lifecycle, notifications, tasks
from orchestrator.config import bare_token_name
from orchestrator.db import session_scope
from orchestrator.models import AuditEntry, Job, Notification
from webapp import access, create_app

from ..conftest import REDIS_URL
from ..orchestrator.test_notifications import SECRET

TOKENS = {
    "read": "reader-s3cr3t-token",
    "submit": "shop-s3cr3t-token",
    "operate": "ops-s3cr3t-token",
}
NAMES = {"read": "grafana", "submit": "shop", "operate": "ana"}
BARE = "bare-s3cr3t-token"  # an existing deployment's token: operate
ORDERS = {"orders": [{"orderId": "A-1", "pedidoInput": {"x": 1}}]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def enqueued(monkeypatch) -> list:
    sent: list = []
    monkeypatch.setattr(tasks, "enqueue_delivery", lambda app, job_id: sent.append(job_id))
    return sent


def roles_app(make_settings, url: str) -> Flask:
    entries = tuple(f"{NAMES[role]}:{role}:{token}" for role, token in TOKENS.items())
    settings = make_settings(
        database_url=url,
        redis_url=REDIS_URL,
        api_tokens=(*entries, BARE),
        notify_url="http://127.0.0.1:9/hook",
        notify_secret=SECRET,
    )
    return create_app(settings)


@pytest.fixture
def app(sqlite_url, make_settings, fake_redis, started, enqueued) -> Flask:
    return roles_app(make_settings, sqlite_url)


@pytest.fixture
def client(app):
    return app.test_client()


# The tests' own set-up acts as this actor; entries() leaves its entries out.
FIXTURE = audit.Actor("fixture", "operate")


def entries(url: str, **where: str) -> list[AuditEntry]:
    with session_scope(url) as session:
        query = select(AuditEntry).where(AuditEntry.actor != FIXTURE.name).order_by(AuditEntry.id)
        for name, value in where.items():
            query = query.where(getattr(AuditEntry, name) == value)
        rows = list(session.scalars(query))
        session.expunge_all()
    return rows


def count(url: str, model: type) -> int:
    with session_scope(url) as session:
        return int(session.scalar(select(func.count()).select_from(model)))


def pending_job(url: str) -> str:
    with session_scope(url) as session:
        return lifecycle.create_job(session, ORDERS["orders"]).id


def cancelled_job(url: str) -> str:
    """A finished job whose one item is in error (cancelled before its dispatch)."""
    job_id = pending_job(url)
    with session_scope(url) as session:
        lifecycle.cancel(session, job_id, actor=FIXTURE)
    return job_id


def a_notification(url: str) -> str:
    cancelled_job(url)  # its job.finished notification
    with session_scope(url) as session:
        return str(session.scalar(select(Notification.id).limit(1)))


@dataclass(frozen=True)
class Call:
    """One request of a route: its method, the role it needs, and how to build its path."""

    method: str
    needs: str
    path: Callable[[str], str]
    body: dict | None = None
    ok: int = 200


# Every route that takes a bearer token. A route added to the app without a row here fails
# test_every_bearer_route_is_in_the_table; without a rule in webapp.access it fails sooner.
CALLS: dict[str, Call] = {
    "jobs.submit": Call("POST", "submit", lambda url: "/api/jobs", ORDERS, 202),
    "jobs.read": Call("GET", "read", lambda url: f"/api/jobs/{pending_job(url)}"),
    "jobs.list_jobs": Call("GET", "read", lambda url: "/api/jobs"),
    # A final job: the stream sends one event and closes (CONTRACT §13).
    "jobs.stream": Call("GET", "read", lambda url: f"/api/jobs/{cancelled_job(url)}/stream"),
    "jobs.cancel": Call("POST", "operate", lambda url: f"/api/jobs/{pending_job(url)}/cancel"),
    "jobs.resubmit": Call(
        "POST", "submit", lambda url: f"/api/jobs/{cancelled_job(url)}/resubmit", {}, 202
    ),
    "dispatch.read": Call("GET", "read", lambda url: "/api/dispatch"),
    "dispatch.pause": Call("POST", "operate", lambda url: "/api/dispatch/pause", {"reason": "x"}),
    "dispatch.resume": Call("POST", "operate", lambda url: "/api/dispatch/resume"),
    "robots.list_robots": Call("GET", "read", lambda url: "/api/robots"),
    "robots.read": Call("GET", "read", lambda url: "/api/robots/default"),
    "robots.pause": Call(
        "POST", "operate", lambda url: "/api/robots/default/pause", {"reason": "x"}
    ),
    "robots.resume": Call("POST", "operate", lambda url: "/api/robots/default/resume"),
    "notifications.list_notifications": Call("GET", "read", lambda url: "/api/notifications"),
    "notifications.redeliver": Call(
        "POST",
        "operate",
        lambda url: f"/api/notifications/{a_notification(url)}/redeliver",
        ok=202,
    ),
    "audit.list_entries": Call("GET", "operate", lambda url: "/api/audit"),
    "metrics.metrics_page": Call("GET", "read", lambda url: "/metrics"),
}
ORDER = ("read", "submit", "operate")


def test_every_bearer_route_is_in_the_table(app) -> None:
    bearer_routes = {
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if access.rule_for(rule.endpoint, rule.methods) is not None
        and not rule.endpoint.startswith("dashboard.")
    }
    assert bearer_routes == set(CALLS)
    for endpoint, call in CALLS.items():
        rule = next(r for r in app.url_map.iter_rules() if r.endpoint == endpoint)
        assert access.rule_for(endpoint, rule.methods).role == call.needs  # type: ignore[union-attr]


def test_a_state_changing_route_without_a_rule_stops_the_app() -> None:
    app = Flask(__name__)
    app.add_url_rule("/api/couriers/<n>/stop", "couriers.stop", lambda n: "", methods=["POST"])
    app.add_url_rule("/api/couriers", "couriers.list", lambda: "")  # a GET: read by default
    with pytest.raises(access.MissingRule, match=r"couriers\.stop"):
        access.check_rules(app)
    assert access.rule_for("couriers.list", {"GET", "HEAD", "OPTIONS"}) == access.READ


def test_every_app_route_has_a_rule_or_is_public(app) -> None:
    access.check_rules(app)  # raises MissingRule naming a route without one
    public = {
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if access.rule_for(rule.endpoint, rule.methods) is None
    }
    assert public == {
        "static",
        "openapi",
        "dashboard_home",
        "dashboard.login",
        "dashboard.static",
        "callbacks.receive_event",
        "health.healthz",
    }


@pytest.mark.parametrize("endpoint", sorted(CALLS))
def test_without_a_token_every_route_is_401_and_leaves_no_entry(client, sqlite_url, endpoint):
    call = CALLS[endpoint]
    path = call.path(sqlite_url)
    before = count(sqlite_url, AuditEntry)
    kwargs = {"json": call.body} if call.body is not None else {}
    answer = client.open(path, method=call.method, **kwargs)
    assert answer.status_code == 401
    assert answer.json["error"]["code"] == "unauthorized"
    assert count(sqlite_url, AuditEntry) == before


@pytest.mark.parametrize("role", ORDER)
@pytest.mark.parametrize("endpoint", sorted(CALLS))
def test_each_role_against_every_route(client, sqlite_url, endpoint, role) -> None:
    call = CALLS[endpoint]
    allowed = ORDER.index(role) >= ORDER.index(call.needs)
    path = call.path(sqlite_url)
    jobs_before = count(sqlite_url, Job)
    before = {row.id for row in entries(sqlite_url)}
    with session_scope(sqlite_url) as session:
        state_before = session.scalars(select(Job.status).order_by(Job.id)).all()

    kwargs = {"json": call.body} if call.body is not None else {}
    answer = client.open(path, method=call.method, headers=bearer(TOKENS[role]), **kwargs)
    new = [row for row in entries(sqlite_url) if row.id not in before]

    if allowed:
        assert answer.status_code == call.ok, answer.get_data(as_text=True)
        changes = call.method == "POST"
        assert [(e.actor, e.role, e.outcome) for e in new] == (
            [(NAMES[role], role, "ok")] if changes else []
        )
        return
    assert answer.status_code == 403
    assert answer.json["error"]["code"] == "forbidden"
    # Nothing done: no job made, none changed; the one write is the denied entry.
    assert count(sqlite_url, Job) == jobs_before
    with session_scope(sqlite_url) as session:
        assert session.scalars(select(Job.status).order_by(Job.id)).all() == state_before
    (entry,) = new
    assert (entry.actor, entry.role, entry.outcome) == (NAMES[role], role, "denied")
    rule = access.RULES.get(endpoint, access.READ)
    assert entry.action == rule.action
    assert entry.address == "127.0.0.1"


def test_a_denied_entry_names_what_was_asked(client, sqlite_url) -> None:
    job_id = pending_job(sqlite_url)
    client.post(f"/api/jobs/{job_id}/cancel", headers=bearer(TOKENS["submit"]))
    client.post("/api/dispatch/pause", json={"reason": "x"}, headers=bearer(TOKENS["read"]))
    client.get("/api/audit", headers=bearer(TOKENS["submit"]))
    shown = [(e.action, e.target, e.outcome) for e in entries(sqlite_url)]
    assert shown == [
        ("job.cancelled", job_id, "denied"),
        ("dispatch.paused", "*", "denied"),
        ("read", "/api/audit", "denied"),
    ]


def test_a_bare_token_keeps_every_right_and_is_named_by_its_digest(client, sqlite_url) -> None:
    answer = client.post("/api/jobs", json=ORDERS, headers=bearer(BARE))
    assert answer.status_code == 202
    assert answer.json["createdBy"] == bare_token_name(BARE)
    job_id = answer.json["id"]
    assert client.post(f"/api/jobs/{job_id}/cancel", headers=bearer(BARE)).status_code == 200
    assert client.get("/api/audit", headers=bearer(BARE)).status_code == 200
    shown = [(e.actor, e.role, e.action, e.target) for e in entries(sqlite_url)]
    assert shown == [
        (bare_token_name(BARE), "operate", "job.submitted", job_id),
        (bare_token_name(BARE), "operate", "job.cancelled", job_id),
    ]


# --- what each change records ---


def test_submit_and_resubmit_record_who_and_what(client, sqlite_url) -> None:
    shop = bearer(TOKENS["submit"])
    job = client.post("/api/jobs", json=ORDERS, headers=shop).json
    assert job["createdBy"] == "shop"
    assert client.get(f"/api/jobs/{job['id']}", headers=shop).json["createdBy"] == "shop"
    listed = client.get("/api/jobs", headers=shop).json["jobs"]
    assert [j["createdBy"] for j in listed] == ["shop"]

    old = cancelled_job(sqlite_url)
    new = client.post(f"/api/jobs/{old}/resubmit", json={}, headers=shop).json
    assert new["createdBy"] == "shop" and new["resubmitOf"] == old
    with session_scope(sqlite_url) as session:
        (item_id,) = session.scalars(select(lifecycle.Item.id).where(lifecycle.Item.job_id == old))

    submitted, resubmitted = entries(sqlite_url)
    assert (submitted.action, submitted.target, submitted.actor) == (
        "job.submitted",
        job["id"],
        "shop",
    )
    assert submitted.details == {"orders": 1, "priority": 0}
    assert (resubmitted.action, resubmitted.target) == ("job.resubmitted", old)
    assert resubmitted.details == {"jobId": new["id"], "itemIds": [item_id], "priority": 0}


def test_a_job_older_than_names_shows_created_by_null(client, sqlite_url) -> None:
    job_id = pending_job(sqlite_url)  # created without a name, as before the migration
    assert client.get(f"/api/jobs/{job_id}", headers=bearer(BARE)).json["createdBy"] is None


def test_an_idempotent_repeat_changes_nothing_and_leaves_no_entry(client, sqlite_url) -> None:
    shop = {**bearer(TOKENS["submit"]), "Idempotency-Key": "cart-7"}
    first = client.post("/api/jobs", json=ORDERS, headers=shop)
    again = client.post("/api/jobs", json=ORDERS, headers=shop)
    assert (first.status_code, again.status_code) == (202, 200)
    assert [e.action for e in entries(sqlite_url)] == ["job.submitted"]


def test_a_refused_change_leaves_no_entry(client, sqlite_url) -> None:
    ops = bearer(TOKENS["operate"])
    job_id = cancelled_job(sqlite_url)
    assert client.post(f"/api/jobs/{job_id}/cancel", headers=ops).status_code == 409
    assert client.post("/api/jobs/nope/cancel", headers=ops).status_code == 404
    assert client.post("/api/dispatch/pause", json={}, headers=ops).status_code == 422
    assert entries(sqlite_url) == []


def test_pause_and_resume_record_the_reason_and_target_every_robot(client, sqlite_url) -> None:
    ops = bearer(TOKENS["operate"])
    until = "2999-01-01T00:00:00+00:00"
    pause = {"reason": "portal maintenance", "until": until}
    assert client.post("/api/dispatch/pause", json=pause, headers=ops).status_code == 200
    assert client.post("/api/dispatch/resume", headers=ops).status_code == 200
    paused, resumed = entries(sqlite_url)
    assert (paused.action, paused.target, paused.actor) == ("dispatch.paused", "*", "ana")
    assert paused.details == {"reason": "portal maintenance", "until": until, "wasPaused": False}
    assert (resumed.action, resumed.target, resumed.details) == (
        "dispatch.resumed",
        "*",
        {"wasPaused": True},
    )


def test_redeliver_records_the_notification(client, sqlite_url) -> None:
    note = a_notification(sqlite_url)
    answer = client.post(f"/api/notifications/{note}/redeliver", headers=bearer(TOKENS["operate"]))
    assert answer.status_code == 202
    (entry,) = entries(sqlite_url)
    assert (entry.action, entry.target, entry.actor) == ("notification.redelivered", note, "ana")


def test_the_address_is_the_client_behind_trusted_proxies(make_settings, sqlite_url, fake_redis):
    from dataclasses import replace

    app = roles_app(make_settings, sqlite_url)
    state = app.extensions["orchestrator"]
    app = create_app(replace(state.settings, trusted_proxy_hops=1))
    client = app.test_client()
    headers = {**bearer(TOKENS["read"]), "X-Forwarded-For": "203.0.113.9"}
    assert client.get("/api/audit", headers=headers).status_code == 403
    (entry,) = entries(sqlite_url)
    assert entry.address == "203.0.113.9"


# --- the orchestrator's own changes ---


def test_a_pause_after_failures_and_a_resume_at_until_are_by_system(sqlite_url, make_settings):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from orchestrator.dispatch_control import DispatchControl

    settings = make_settings(database_url=sqlite_url, robot_pause_after_failures=1)
    job_id = pending_job(sqlite_url)
    with session_scope(sqlite_url) as session:
        lifecycle.claim_dispatch(session, job_id, settings)
    with session_scope(sqlite_url) as session:
        lifecycle.fail_dispatch(session, settings, job_id, "connection refused", False)
    with session_scope(sqlite_url) as session:
        session.execute(
            update(DispatchControl).values(paused_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    with session_scope(sqlite_url) as session:
        assert lifecycle.resume_if_due(session, settings)
    shown = [(e.actor, e.role, e.action, e.target) for e in entries(sqlite_url)]
    assert shown == [
        ("system", "system", "dispatch.paused", "*"),
        ("system", "system", "dispatch.resumed", "*"),
    ]
    assert entries(sqlite_url)[0].details["reason"] == "connection refused"


# --- GET /api/audit ---


def test_the_audit_log_is_newest_first_filtered_exactly_and_paged(client, sqlite_url) -> None:
    shop, ops = bearer(TOKENS["submit"]), bearer(TOKENS["operate"])
    ids = [client.post("/api/jobs", json=ORDERS, headers=shop).json["id"] for _ in range(3)]
    client.post(f"/api/jobs/{ids[0]}/cancel", headers=ops)
    client.get("/api/audit", headers=shop)  # denied: read

    page = client.get("/api/audit?limit=2", headers=ops).json
    assert [e["action"] for e in page["entries"]] == ["read", "job.cancelled"]
    first = page["entries"][0]
    assert set(first) == {
        "id",
        "at",
        "actor",
        "role",
        "action",
        "target",
        "outcome",
        "details",
        "address",
    }
    assert (first["outcome"], first["actor"], first["target"]) == ("denied", "shop", "/api/audit")
    assert first["at"].endswith("+00:00")
    rest = client.get(f"/api/audit?limit=2&cursor={page['nextCursor']}", headers=ops).json
    assert [e["target"] for e in rest["entries"]] == [ids[2], ids[1]]
    last = client.get(f"/api/audit?limit=2&cursor={rest['nextCursor']}", headers=ops).json
    assert [e["target"] for e in last["entries"]] == [ids[0]] and last["nextCursor"] is None

    by_shop = client.get("/api/audit?actor=shop&action=job.submitted", headers=ops).json
    assert [e["target"] for e in by_shop["entries"]] == ids[::-1]
    assert client.get("/api/audit?actor=sho", headers=ops).json["entries"] == []  # exact
    about = client.get(f"/api/audit?target={ids[0]}", headers=ops).json["entries"]
    assert [e["action"] for e in about] == ["job.cancelled", "job.submitted"]


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "cursor=forged", "actor="])
def test_bad_audit_queries_are_422(client, query) -> None:
    answer = client.get(f"/api/audit?{query}", headers=bearer(TOKENS["operate"]))
    assert answer.status_code == 422


def test_no_token_or_secret_reaches_the_audit_log_the_logs_or_the_answers(
    client, sqlite_url, app, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = app.extensions["orchestrator"].settings.secrets()
    answers = []
    for token in TOKENS.values():
        headers = bearer(token)
        answers.append(client.post("/api/jobs", json=ORDERS, headers=headers))
        answers.append(client.post("/api/dispatch/pause", json={"reason": "r"}, headers=headers))
        answers.append(client.get("/api/audit", headers=headers))
    answers.append(client.get("/api/audit", headers=bearer("not-a-token-s3cr3t")))
    logged = caplog.text
    stored = json.dumps([audit.entry_dict(e) for e in entries(sqlite_url)])
    shown = "".join(a.get_data(as_text=True) for a in answers)
    assert len(entries(sqlite_url)) >= 6
    for secret in [*secrets, "not-a-token-s3cr3t"]:
        assert secret not in stored
        assert secret not in logged
        assert secret not in shown


def test_retention_keeps_the_audit_entries(client, sqlite_url) -> None:
    from orchestrator.housekeeping import prune_finished

    ops = bearer(TOKENS["operate"])
    job_id = client.post("/api/jobs", json=ORDERS, headers=ops).json["id"]
    client.post(f"/api/jobs/{job_id}/cancel", headers=ops)
    prune_finished(sqlite_url, 0)
    assert client.get(f"/api/jobs/{job_id}", headers=ops).status_code == 404
    assert [e.target for e in entries(sqlite_url)] == [job_id, job_id]


def test_prune_audit_deletes_only_old_entries(sqlite_url) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    with session_scope(sqlite_url) as session:
        for n in range(3):
            audit.record(session, audit.SYSTEM, "dispatch.paused", "*", {"n": n})
    with session_scope(sqlite_url) as session:
        session.execute(
            update(AuditEntry)
            .where(AuditEntry.id < 3)
            .values(at=datetime.now(UTC) - timedelta(days=10))
        )
    assert audit.prune(sqlite_url, 5, dry_run=True) == 2
    assert count(sqlite_url, AuditEntry) == 3
    assert audit.prune(sqlite_url, 5) == 2
    assert [e.details for e in entries(sqlite_url)] == [{"n": 2}]


def test_notifications_carry_created_by(client, sqlite_url) -> None:
    job_id = client.post("/api/jobs", json=ORDERS, headers=bearer(TOKENS["submit"])).json["id"]
    with session_scope(sqlite_url) as session:
        lifecycle.cancel(session, job_id, actor=audit.SYSTEM)
    with session_scope(sqlite_url) as session:
        payload = session.scalar(
            select(Notification.payload).where(
                Notification.job_id == job_id, Notification.type == notifications.JOB_FINISHED
            )
        )
    assert payload["createdBy"] == "shop"


def test_named_tokens_are_found_in_constant_time(monkeypatch) -> None:
    from orchestrator.config import parse_api_tokens
    from webapp import auth

    calls: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    tokens = parse_api_tokens(("a:read:first-token", "second-token", "c:operate:third-token"))
    for presented, name in (
        ("first-token", "a"),  # found at once: every entry is still compared
        ("third-token", "c"),
        ("a:read:first-token", None),  # the entry's text is not its token
        ("first-tokeX", None),
    ):
        calls.clear()
        found = auth.find_token(presented, tokens)
        assert (found.name if found else None) == name
        assert len(calls) == len(tokens)
        assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)
