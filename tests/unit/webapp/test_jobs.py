"""The job API (CONTRACT §3) through the Flask test client, on a migrated SQLite file."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from itsdangerous import URLSafeSerializer
from sqlalchemy import create_engine, func, select, update
from sqlalchemy.orm import Session

from orchestrator import audit, housekeeping, lifecycle, rendezvous, submission
from orchestrator.db import session_scope
from orchestrator.models import Item, Job
from webapp import create_app
from webapp.schemas import SubmitSchema

from ..conftest import API_TOKEN, unit_app

DAY = timedelta(days=1)

JOB_KEYS = {
    "id",
    "status",
    "error",
    "createdAt",
    "dispatchedAt",
    "deadline",
    "finishedAt",
    "priority",
    "queuePosition",
    "resubmitOf",
    "robot",
    "createdBy",
    "counts",
    "items",
}
ITEM_KEYS = {"id", "orderId", "status", "trackingNumber", "error"}
COUNT_KEYS = {"total", "pending", "processing", "success", "error", "unknown"}


def order(n: int | str, **pedido: Any) -> dict[str, Any]:
    return {"orderId": f"ORD-{n}", "pedidoInput": pedido or {"n": n}}


def submit(client, headers, orders=None, raw: str | None = None, **extra_headers):
    """POST /api/jobs with the given orders (or a raw JSON text)."""
    data = raw if raw is not None else json.dumps({"orders": orders or [order(1)]})
    return client.post(
        "/api/jobs",
        data=data,
        headers={**headers, **extra_headers},
        content_type="application/json",
    )


def assert_error(response, status: int, code: str | None = None) -> dict[str, Any]:
    """Check the status and the one error envelope; return its details."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert re.fullmatch(r"[a-z]+(_[a-z]+)*", body["error"]["code"])
    assert body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    assert "Traceback" not in response.get_data(as_text=True)
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]["details"]


def assert_iso_utc(value: str) -> datetime:
    assert re.search(r"T\d\d:\d\d:\d\d", value), value
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0, value
    return parsed


def job_count(url: str) -> int:
    with session_scope(url) as session:
        return session.scalar(select(func.count()).select_from(Job))


def settings_of(app):
    return app.extensions["orchestrator"].settings


# --- authentication ---

ROUTES = [
    ("post", "/api/jobs"),
    ("get", "/api/jobs"),
    ("get", "/api/jobs/00000000-0000-0000-0000-000000000000"),
    ("post", "/api/jobs/00000000-0000-0000-0000-000000000000/cancel"),
    ("post", "/api/jobs/00000000-0000-0000-0000-000000000000/resubmit"),
]
BAD_CREDENTIALS = [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Bearer {API_TOKEN}x"},
    {"Authorization": f"Basic {API_TOKEN}"},
    {"Authorization": "Bearer "},
    {"Authorization": API_TOKEN},
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("headers", BAD_CREDENTIALS)
def test_every_job_route_needs_a_valid_token(client, app, started, method, path, headers):
    response = getattr(client, method)(
        path,
        data=json.dumps({"orders": [order(1)]}),
        headers=headers,
        content_type="application/json",
    )
    assert_error(response, 401, "unauthorized")
    assert started.job_ids == []
    assert job_count(settings_of(app).database_url) == 0


def test_second_token_is_accepted(client):
    response = client.get("/api/jobs", headers={"Authorization": "Bearer second-token"})
    assert response.status_code == 200


# --- bodies that are not JSON ---


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_submit_refuses_a_body_that_is_not_json(client, auth, started, content_type):
    body = json.dumps({"orders": [order(1)]})
    headers = dict(auth)
    if content_type:
        headers["Content-Type"] = content_type
    response = client.post("/api/jobs", data=body, headers=headers)
    assert_error(response, 415)
    assert started.job_ids == []


@pytest.mark.parametrize(
    "raw",
    [
        '{"orders": [',
        "",
        '{"orders": [{"orderId": "A", "pedidoInput": {"x": NaN}}]}',
        '{"orders": [{"orderId": "A", "pedidoInput": {"x": Infinity}}]}',
        '{"orders": [{"orderId": "\\ud800", "pedidoInput": {}}]}',
        '{"orders": [{"orderId": "A", "pedidoInput": {"k": "\\udfff"}}]}',
    ],
    ids=["truncated", "empty", "nan", "infinity", "lone-surrogate-id", "lone-surrogate-input"],
)
def test_submit_refuses_malformed_json(client, auth, app, started, raw):
    assert_error(submit(client, auth, raw=raw), 400, "malformed_json")
    assert started.job_ids == []
    assert job_count(settings_of(app).database_url) == 0


def test_submit_refuses_deeply_nested_json_with_400(make_settings, sqlite_url, fake_redis, started):
    depth = 100_000
    raw = "[" * depth + "]" * depth
    settings = make_settings(
        database_url=sqlite_url,
        redis_url="redis://fake-redis.invalid:6379/0",
        api_tokens=(API_TOKEN,),
        max_body_bytes=4 * depth,
    )
    client = create_app(settings).test_client()
    response = submit(client, {"Authorization": f"Bearer {API_TOKEN}"}, raw=raw)
    assert_error(response, 400, "malformed_json")
    assert started.job_ids == []


def test_submit_refuses_a_body_over_max_body_bytes(client, auth, app, started):
    limit = settings_of(app).max_body_bytes
    orders = [order(1, padding="x" * limit)]
    response = submit(client, auth, orders)
    assert_error(response, 413, "body_too_large")
    assert started.job_ids == []
    assert job_count(settings_of(app).database_url) == 0


# --- validation ---

LONG_ID = "A" * 101


@pytest.mark.parametrize(
    ("body", "bad_field"),
    [
        ({}, ("orders",)),
        ({"orders": []}, ("orders",)),
        ({"orders": "ORD-1"}, ("orders",)),
        ({"orders": [{"orderId": "", "pedidoInput": {}}]}, ("orders", "0", "orderId")),
        ({"orders": [{"orderId": LONG_ID, "pedidoInput": {}}]}, ("orders", "0", "orderId")),
        ({"orders": [{"orderId": 1001, "pedidoInput": {}}]}, ("orders", "0", "orderId")),
        ({"orders": [{"orderId": None, "pedidoInput": {}}]}, ("orders", "0", "orderId")),
        ({"orders": [{"orderId": "ORD\n1", "pedidoInput": {}}]}, ("orders", "0", "orderId")),
        ({"orders": [{"orderId": "ORD\x001", "pedidoInput": {}}]}, ("orders", "0", "orderId")),
        ({"orders": [{"pedidoInput": {}}]}, ("orders", "0", "orderId")),
        ({"orders": [order(1), order(2), order(1)]}, ("orders", "2", "orderId")),
        ({"orders": [{"orderId": "A", "pedidoInput": []}]}, ("orders", "0", "pedidoInput")),
        ({"orders": [{"orderId": "A", "pedidoInput": "x"}]}, ("orders", "0", "pedidoInput")),
        ({"orders": [{"orderId": "A"}]}, ("orders", "0", "pedidoInput")),
        ({"orders": [order(1)], "priority": "high"}, ("priority",)),
        ({"orders": [{**order(1), "extra": 1}]}, ("orders", "0", "extra")),
        ([order(1)], ("_schema",)),
    ],
    ids=[
        "missing-orders",
        "empty-orders",
        "orders-not-a-list",
        "empty-order-id",
        "order-id-101-chars",
        "order-id-number",
        "order-id-null",
        "order-id-newline",
        "order-id-nul",
        "order-id-missing",
        "duplicate-order-id",
        "pedido-input-list",
        "pedido-input-string",
        "pedido-input-missing",
        "unknown-top-level-field",
        "unknown-order-field",
        "body-not-an-object",
    ],
)
def test_submit_names_the_bad_field(client, auth, app, started, body, bad_field):
    details = assert_error(submit(client, auth, raw=json.dumps(body)), 422, "validation_failed")
    node: Any = details
    for name in bad_field:
        assert name in node, details
        node = node[name]
    assert node
    assert started.job_ids == []
    assert job_count(settings_of(app).database_url) == 0


def test_submit_names_every_bad_field_at_once(client, auth):
    body = {"orders": [{"orderId": "", "pedidoInput": {}}, {"orderId": "B", "pedidoInput": 1}]}
    details = assert_error(submit(client, auth, raw=json.dumps(body)), 422)
    assert set(details["orders"]) == {"0", "1"}
    assert "orderId" in details["orders"]["0"]
    assert "pedidoInput" in details["orders"]["1"]


def test_submit_refuses_more_than_max_batch_size_orders(client, auth, app, started):
    limit = settings_of(app).max_batch_size
    details = assert_error(submit(client, auth, [order(n) for n in range(limit + 1)]), 422)
    assert "orders" in details
    assert started.job_ids == []
    assert submit(client, auth, [order(n) for n in range(limit)]).status_code == 202


def test_submit_accepts_an_order_id_of_100_characters(client, auth):
    response = submit(client, auth, [{"orderId": "A" * 100, "pedidoInput": {}}])
    assert response.status_code == 202
    assert response.get_json()["items"][0]["orderId"] == "A" * 100


# --- submit ---


def test_submit_answers_202_with_the_job_and_starts_it_after_commit(
    client, auth, app, started, monkeypatch
):
    url = settings_of(app).database_url
    seen_at_start: dict[str, Any] = {}

    def checking_starter(celery_app, job_id, settings) -> None:
        # A separate engine: what a worker would see the moment the chain is enqueued.
        engine = create_engine(url)
        try:
            with Session(engine) as other:
                seen_at_start["job"] = other.get(Job, job_id) is not None
                seen_at_start["items"] = other.scalar(
                    select(func.count()).select_from(Item).where(Item.job_id == job_id)
                )
        finally:
            engine.dispose()
        started(celery_app, job_id, settings)

    monkeypatch.setattr(submission, "start_job", checking_starter)
    pedido = {
        "destinatario": {"nombre": "Ñandú", "ciudad": "Bogotá"},
        "peso": 1.5,
        "tags": [1, None],
    }
    orders = [{"orderId": "ORD-1001", "pedidoInput": pedido}, order(1002)]
    response = submit(client, auth, orders)

    assert response.status_code == 202
    job = response.get_json()
    assert set(job) == JOB_KEYS
    assert response.headers["Location"] == f"/api/jobs/{job['id']}"
    assert job["status"] == "pending"
    assert job["error"] is None
    assert_iso_utc(job["createdAt"])
    assert job["dispatchedAt"] is None and job["deadline"] is None and job["finishedAt"] is None
    assert job["resubmitOf"] is None
    assert job["counts"] == {
        "total": 2,
        "pending": 2,
        "processing": 0,
        "success": 0,
        "error": 0,
        "unknown": 0,
    }
    assert [item["orderId"] for item in job["items"]] == ["ORD-1001", "ORD-1002"]
    for item in job["items"]:
        assert set(item) == ITEM_KEYS
        assert item["status"] == "pending"
        assert item["trackingNumber"] is None and item["error"] is None
    assert len({item["id"] for item in job["items"]} | {job["id"]}) == 3

    assert started.job_ids == [job["id"]]
    assert seen_at_start == {"job": True, "items": 2}
    with session_scope(url) as session:
        stored = session.scalars(select(Item).where(Item.job_id == job["id"])).all()
        assert {i.order_id: i.pedido_input for i in stored}["ORD-1001"] == pedido
    assert client.get(f"/api/jobs/{job['id']}", headers=auth).get_json() == job


# --- numbers no double holds (CONTRACT §3: 1e400 is a 422) ---


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ('{"x": 1e400}', "orders.0.pedidoInput.x"),
        ('{"x": -1e400}', "orders.0.pedidoInput.x"),
        ('{"a": {"b": [0, 2E+999]}}', "orders.0.pedidoInput.a.b.1"),
        ('{"x": 1' + "0" * 400 + "}", "orders.0.pedidoInput.x"),
    ],
)
def test_a_number_that_does_not_fit_a_double_is_422_and_stores_nothing(
    database_url, make_settings, fake_redis, started, raw, path
):
    """On SQLite it was stored as ``Infinity`` (not JSON); on PostgreSQL the insert failed."""
    app = unit_app(make_settings, database_url)
    client, auth = app.test_client(), {"Authorization": f"Bearer {API_TOKEN}"}
    body = '{"orders": [{"orderId": "F", "pedidoInput": ' + raw + "}]}"
    details = assert_error(submit(client, auth, raw=body), 422)
    assert list(details) == [path]
    assert started.job_ids == [] and _job_count(database_url) == 0


def test_the_largest_double_is_accepted(client, auth):
    answer = submit(
        client, auth, raw='{"orders": [{"orderId": "F", "pedidoInput": {"x": 1.7e308}}]}'
    )
    assert answer.status_code == 202


def test_submit_schema_refuses_a_number_no_double_holds():
    """The same rule for orders handed over already parsed (the library, the dashboard)."""
    errors = SubmitSchema().validate(
        {"orders": [{"orderId": "F", "pedidoInput": {"x": float("inf"), "y": 10**400}}]}
    )
    assert errors == {
        "orders": {0: {"pedidoInput": ["a number does not fit a double (64-bit float) at x, y"]}}
    }


# --- idempotency ---


def test_repeat_with_the_same_key_returns_the_same_job_and_starts_nothing(client, auth, started):
    key = {"Idempotency-Key": "batch-2026-11-25"}
    first = submit(client, auth, [order(1), order(2)], **key)
    again = submit(client, auth, [order(1), order(2)], **key)
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert started.job_ids == [first.get_json()["id"]]
    assert len(client.get("/api/jobs", headers=auth).get_json()["jobs"]) == 1


def test_repeat_with_a_json_equal_body_in_another_key_order_is_the_same_request(
    client, auth, started
):
    key = {"Idempotency-Key": "k-1"}
    first = submit(
        client,
        auth,
        raw='{"orders": [{"orderId": "A", "pedidoInput": {"a": 1, "b": [1, 2]}}]}',
        **key,
    )
    again = submit(
        client,
        auth,
        raw='{ "orders":[ {"pedidoInput":{"b":[1,2],"a":1}, "orderId":"A"} ] }',
        **key,
    )
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    assert len(started.job_ids) == 1


def test_same_key_with_a_different_body_is_refused(client, auth, started):
    key = {"Idempotency-Key": "k-2"}
    first = submit(client, auth, [order(1)], **key)
    details = assert_error(submit(client, auth, [order(2)], **key), 422, "idempotency_key_reused")
    assert "Idempotency-Key" in details
    assert started.job_ids == [first.get_json()["id"]]
    assert len(client.get("/api/jobs", headers=auth).get_json()["jobs"]) == 1


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_idempotency_key_must_be_1_to_255_characters(client, auth, started, key):
    details = assert_error(submit(client, auth, **{"Idempotency-Key": key}), 422)
    assert "Idempotency-Key" in details
    assert started.job_ids == []


def test_idempotency_key_of_255_characters_is_accepted(client, auth):
    assert submit(client, auth, **{"Idempotency-Key": "k" * 255}).status_code == 202


def test_the_same_key_under_another_token_makes_a_new_job(client, auth, started):
    key = {"Idempotency-Key": "shared-key"}
    first = submit(client, auth, **key)
    other = submit(client, {"Authorization": "Bearer second-token"}, **key)
    assert first.status_code == 202
    assert other.status_code == 202
    assert other.get_json()["id"] != first.get_json()["id"]
    assert started.job_ids == [first.get_json()["id"], other.get_json()["id"]]


@pytest.mark.parametrize("route", ["submit", "resubmit"])
def test_a_repeat_whose_job_retention_deleted_is_409_and_creates_nothing(
    database_url, make_settings, fake_redis, started, route
):
    """The key outlives its job (CONTRACT §3): no second job, no second dispatch."""
    app = unit_app(make_settings, database_url)
    client, auth = app.test_client(), {"Authorization": f"Bearer {API_TOKEN}"}
    key = {"Idempotency-Key": "order-batch-42"}
    first = submit(client, auth, [order(1)], **{} if route == "resubmit" else key)
    original = job_id = first.get_json()["id"]
    assert client.post(f"/api/jobs/{job_id}/cancel", headers=auth).status_code == 200

    def again():
        if route == "submit":
            return submit(client, auth, [order(1)], **key)
        return client.post(f"/api/jobs/{original}/resubmit", headers={**auth, **key})

    if route == "resubmit":
        made = again()
        assert made.status_code == 202, made.get_json()
        job_id = made.get_json()["id"]
        assert client.post(f"/api/jobs/{job_id}/cancel", headers=auth).status_code == 200
    with session_scope(database_url) as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(finished_at=datetime.now(UTC) - DAY * 2)
        )
    assert housekeeping.prune_finished(database_url, 1)["jobs"] >= 1
    assert client.get(f"/api/jobs/{job_id}", headers=auth).status_code == 404
    before = (list(started.job_ids), _job_count(database_url))

    assert_error(again(), 409, "idempotency_job_deleted")
    assert (started.job_ids, _job_count(database_url)) == before


def _job_count(url: str) -> int:
    with session_scope(url) as session:
        return session.scalar(select(func.count()).select_from(Job))


# --- read ---


def test_read_unknown_job_is_404(client, auth):
    assert_error(client.get("/api/jobs/no-such-job", headers=auth), 404, "not_found")


# --- list ---


@pytest.fixture
def five_jobs(client, auth) -> list[str]:
    """Submit five jobs; return their ids oldest first."""
    return [submit(client, auth, [order(n)]).get_json()["id"] for n in range(5)]


def test_list_is_newest_first_with_counts_and_without_items(client, auth, five_jobs):
    body = client.get("/api/jobs", headers=auth).get_json()
    assert set(body) == {"jobs", "nextCursor"}
    assert [job["id"] for job in body["jobs"]] == five_jobs[::-1]
    assert body["nextCursor"] is None
    for job in body["jobs"]:
        assert set(job) == JOB_KEYS - {"items"}
        assert set(job["counts"]) == COUNT_KEYS
        assert job["counts"]["total"] == job["counts"]["pending"] == 1
        assert_iso_utc(job["createdAt"])


def test_list_pages_with_limit_and_cursor(client, auth, five_jobs):
    seen: list[str] = []
    cursors: list[str | None] = []
    query = "/api/jobs?limit=2"
    for _page in range(3):
        body = client.get(query, headers=auth).get_json()
        seen += [job["id"] for job in body["jobs"]]
        cursors.append(body["nextCursor"])
        if body["nextCursor"] is None:
            break
        query = f"/api/jobs?limit=2&cursor={body['nextCursor']}"
    assert seen == five_jobs[::-1]
    assert len(cursors) == 3
    assert None not in cursors[:2] and cursors[0] != cursors[1]
    assert cursors[2] is None
    # A page that holds exactly the last jobs has no next page either.
    exact = client.get("/api/jobs?limit=5", headers=auth).get_json()
    assert len(exact["jobs"]) == 5 and exact["nextCursor"] is None


def test_list_filters_by_status(client, auth, five_jobs):
    cancelled = five_jobs[2]
    assert client.post(f"/api/jobs/{cancelled}/cancel", headers=auth).status_code == 200

    def ids(status: str) -> list[str]:
        body = client.get(f"/api/jobs?status={status}", headers=auth).get_json()
        assert all(job["status"] == status for job in body["jobs"])
        return [job["id"] for job in body["jobs"]]

    assert ids("cancelled") == [cancelled]
    assert ids("pending") == [j for j in five_jobs[::-1] if j != cancelled]
    assert ids("completed") == []


def test_list_status_filter_pages_too(client, auth, five_jobs):
    first = client.get("/api/jobs?status=pending&limit=4", headers=auth).get_json()
    rest = client.get(
        f"/api/jobs?status=pending&limit=4&cursor={first['nextCursor']}", headers=auth
    ).get_json()
    assert [j["id"] for j in first["jobs"] + rest["jobs"]] == five_jobs[::-1]
    assert rest["nextCursor"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=done", "status"),
        ("status=", "status"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=x", "limit"),
        ("limit=-1", "limit"),
        ("limit=2.5", "limit"),
        ("cursor=abc", "cursor"),
        ("cursor=", "cursor"),
    ],
)
def test_list_refuses_bad_parameters(client, auth, five_jobs, query, field):
    details = assert_error(client.get(f"/api/jobs?{query}", headers=auth), 422)
    assert field in details


def test_list_accepts_the_limit_bounds(client, auth, five_jobs):
    assert len(client.get("/api/jobs?limit=1", headers=auth).get_json()["jobs"]) == 1
    assert len(client.get("/api/jobs?limit=200", headers=auth).get_json()["jobs"]) == 5


def test_list_refuses_a_cursor_it_did_not_issue(client, auth, app, five_jobs):
    first = client.get("/api/jobs?limit=1", headers=auth).get_json()["nextCursor"]
    second = client.get(f"/api/jobs?limit=1&cursor={first}", headers=auth).get_json()["nextCursor"]
    # The first cursor's position signed as if it were the second's.
    spliced = first.split(".")[0] + "." + second.split(".")[1]
    forged = URLSafeSerializer("not-our-secret", salt="jobs-cursor").dumps(
        ["2000-01-01T00:00:00+00:00", "x"]
    )
    wrong_salt = URLSafeSerializer(
        settings_of(app).robot_callback_secret, salt="something-else"
    ).dumps(["2000-01-01T00:00:00+00:00", "x"])
    for cursor in (spliced, forged, wrong_salt, first + "x"):
        details = assert_error(client.get(f"/api/jobs?cursor={cursor}", headers=auth), 422)
        assert "cursor" in details


# --- cancel ---


def test_cancel_a_pending_job_marks_its_items_error(client, auth, app):
    job_id = submit(client, auth, [order(1), order(2)]).get_json()["id"]
    response = client.post(f"/api/jobs/{job_id}/cancel", headers=auth)
    assert response.status_code == 200
    job = response.get_json()
    assert set(job) == JOB_KEYS
    assert job["id"] == job_id
    assert job["status"] == "cancelled"
    assert job["error"]
    assert_iso_utc(job["finishedAt"])
    assert [item["status"] for item in job["items"]] == ["error", "error"]
    assert job["counts"]["error"] == 2 and job["counts"]["pending"] == 0
    with session_scope(settings_of(app).database_url) as session:
        assert session.get(Job, job_id).status == "cancelled"
        statuses = session.scalars(select(Item.status).where(Item.job_id == job_id)).all()
        assert statuses == ["error", "error"]


def test_cancel_after_dispatch_was_claimed_marks_unreported_items_unknown(client, auth, app):
    settings = settings_of(app)
    job = submit(client, auth, [order(1), order(2)]).get_json()
    with session_scope(settings.database_url) as session:
        assert lifecycle.claim_dispatch(session, job["id"], settings) is not None
    with session_scope(settings.database_url) as session:
        reported = session.get(Item, job["items"][0]["id"])
        reported.status, reported.tracking_number = "success", "CO123"

    response = client.post(f"/api/jobs/{job['id']}/cancel", headers=auth)
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "cancelled"
    assert_iso_utc(body["dispatchedAt"])
    assert [(i["status"], i["trackingNumber"]) for i in body["items"]] == [
        ("success", "CO123"),
        ("unknown", None),
    ]


def test_cancel_forgets_the_jobs_redis_keys(client, auth, fake_redis):
    job_id = submit(client, auth).get_json()["id"]
    fake_redis.set(rendezvous.poller_key(job_id), "token")
    assert client.post(f"/api/jobs/{job_id}/cancel", headers=auth).status_code == 200
    assert not fake_redis.exists(rendezvous.poller_key(job_id))


def _finish(app, job_id: str, how: str) -> None:
    settings = settings_of(app)
    with session_scope(settings.database_url) as session:
        if how == "cancelled":
            lifecycle.cancel(session, job_id, actor=audit.SYSTEM)
            return
        lifecycle.claim_dispatch(session, job_id, settings)
        if how == "failed":
            lifecycle.finalize(session, job_id, lifecycle.Failure("the robot refused the job"))
        else:
            session.execute(Job.__table__.update().where(Job.id == job_id).values(report=how))
            assert lifecycle.finalize(session, job_id) == how


@pytest.mark.parametrize("how", ["cancelled", "failed", "completed"])
def test_cancel_a_finished_job_is_409_and_changes_nothing(client, auth, app, how):
    job_id = submit(client, auth, [order(1)]).get_json()["id"]
    _finish(app, job_id, how)
    before = client.get(f"/api/jobs/{job_id}", headers=auth).get_json()
    assert before["status"] == how
    assert_error(client.post(f"/api/jobs/{job_id}/cancel", headers=auth), 409)
    assert client.get(f"/api/jobs/{job_id}", headers=auth).get_json() == before


def test_cancel_unknown_job_is_404(client, auth):
    assert_error(client.post("/api/jobs/no-such-job/cancel", headers=auth), 404, "not_found")


# --- health ---


def test_healthz_answers_ok_without_auth(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


SECRET_SETTINGS = {
    "api_tokens": ("api-token-s3cr3t",),
    "robot_api_token": "robot-token-s3cr3t",
    "robot_callback_secret": "master-callback-s3cr3t",
}


@pytest.fixture
def unreachable_redis_url():
    url = "redis://:redis-password-s3cr3t@127.0.0.1:1/0"
    yield url
    for key in [k for k in rendezvous._clients if k[1] == url]:
        rendezvous._clients.pop(key).close()


def _assert_no_secret(response, settings) -> None:
    text = response.get_data(as_text=True)
    assert settings.secrets()
    for secret in settings.secrets():
        assert secret not in text


def test_healthz_is_503_when_redis_is_unreachable(make_settings, sqlite_url, unreachable_redis_url):
    settings = make_settings(
        database_url=sqlite_url, redis_url=unreachable_redis_url, **SECRET_SETTINGS
    )
    response = create_app(settings).test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "error"
    assert set(body["checks"]) == {"database", "redis"}
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] != "ok" and "redis" in body["checks"]["redis"].lower()
    _assert_no_secret(response, settings)


def test_healthz_is_503_when_the_database_is_unreachable(make_settings, fake_redis):
    settings = make_settings(
        database_url="postgresql+psycopg://postgres:db-password-s3cr3t@127.0.0.1:1/x",
        redis_url="redis://fake-redis.invalid:6379/0",
        **SECRET_SETTINGS,
    )
    response = create_app(settings).test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "error"
    assert body["checks"]["redis"] == "ok"
    assert body["checks"]["database"] != "ok" and "database" in body["checks"]["database"]
    _assert_no_secret(response, settings)


def test_submit_checks_the_batch_size_before_validating_every_order(
    client, auth, app, started, monkeypatch
):
    limit = settings_of(app).max_batch_size
    loads: list[int] = []
    real = SubmitSchema.load
    monkeypatch.setattr(
        SubmitSchema, "load", lambda self, data, **kw: loads.append(1) or real(self, data, **kw)
    )
    orders = [order(n) for n in range(limit + 1)]
    orders[3]["orderId"] = ""  # a bad order too: the size is what the answer names
    details = assert_error(submit(client, auth, orders), 422)
    assert details == {"orders": [f"must contain 1 to {limit} orders"]}
    assert loads == []  # no order was validated


@pytest.mark.parametrize(
    "character",
    ["\x85", "\x9f", "\u2028", "\u2029", "\u202a", "\u202d", "\u202e", "\u2066", "\u2069"],
)
def test_order_ids_with_c1_controls_separators_or_bidi_overrides_are_422(
    client, auth, started, character
):
    details = assert_error(submit(client, auth, [order(f"1{character}0")]), 422)
    assert "bidirectional overrides" in json.dumps(details)
    assert started.job_ids == []
    # Elsewhere in unicode, anything goes: accents, emoji, a zero-width space.
    assert submit(client, auth, [order("ñandú-😀-\u200b")]).status_code == 202
