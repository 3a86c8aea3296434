"""The robot's callback endpoint (CONTRACT §5): one test per row of its table, in its order."""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import OperationalError
from standardwebhooks import Webhook

from orchestrator import lifecycle
from orchestrator.db import session_scope
from orchestrator.models import Event, Item, Job
from orchestrator.rendezvous import report_channel, report_key
from orchestrator.signing import job_callback_secret
from webapp import callbacks, create_app

from ..conftest import API_TOKEN, REDIS_URL, unit_app

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def app(database_url, make_settings, fake_redis, started):
    """Every row of the table runs on SQLite and on PostgreSQL: the item-event statements
    (INSERT … ON CONFLICT, UPDATE … RETURNING) are compiled per dialect."""
    return unit_app(make_settings, database_url)


@dataclass
class Robot:
    """Signs and posts events for one job, as the robot holding its callbackSecret would."""

    client: Any
    app: Any
    job_id: str
    item_ids: list[str]

    @property
    def settings(self):
        return self.app.extensions["orchestrator"].settings

    def headers(
        self,
        body: str | bytes,
        webhook_id: str | None = None,
        when: datetime | None = None,
        secret: str | None = None,
    ) -> dict[str, str]:
        webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
        when = when or datetime.now(UTC)
        secret = secret or job_callback_secret(self.settings.robot_callback_secret, self.job_id)
        return {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": Webhook(secret).sign(webhook_id, when, body),
        }

    def post(
        self,
        event: dict[str, Any] | str | bytes,
        headers: dict[str, str] | None = None,
        job_id: str | None = None,
        **sign: Any,
    ):
        """Post ``event`` (bytes exactly as given), signed over the bytes sent."""
        if not isinstance(event, bytes):
            text = event if isinstance(event, str) else json.dumps(event)
            event = text.encode("utf-8", "surrogatepass")
        return self.client.post(
            f"/api/robot/jobs/{job_id or self.job_id}/events",
            data=event,
            headers=self.headers(event, **sign) if headers is None else headers,
            content_type="application/json",
        )

    def item(self, index: int) -> dict[str, Any]:
        return self.client.get(f"/api/jobs/{self.job_id}", headers=AUTH).get_json()["items"][index]

    def snapshot(self) -> tuple[Any, ...]:
        """Everything an event could change: the job row, its items, its events, Redis.

        Not ``last_event_at``: every stored event, a repeated result too, proves the robot
        alive (CONTRACT §7, silence); tests of it read it themselves.
        """
        with session_scope(self.settings.database_url) as session:
            job = session.get(Job, self.job_id)
            job_row = {
                a.key: getattr(job, a.key)
                for a in inspect(Job).column_attrs
                if a.key != "last_event_at"
            }
            items = [
                {a.key: getattr(item, a.key) for a in inspect(Item).column_attrs}
                for item in session.scalars(
                    select(Item).where(Item.job_id == self.job_id).order_by(Item.position)
                )
            ]
        report = self.app.extensions["orchestrator"].rendezvous.redis.get(report_key(self.job_id))
        return job_row, items, self.events(), report

    def events(self) -> list[tuple[str, str, bool]]:
        with session_scope(self.settings.database_url) as session:
            rows = session.execute(
                select(Event.webhook_id, Event.type, Event.late)
                .where(Event.job_id == self.job_id)
                .order_by(Event.id)
            ).all()
        return [tuple(row) for row in rows]

    def finalize(self) -> str | None:
        with session_scope(self.settings.database_url) as session:
            return lifecycle.finalize(session, self.job_id)


def new_dispatched_job(client, app, orders: int = 3) -> Robot:
    """Submit a job through the API and claim its dispatch, so its items are processing."""
    body = {"orders": [{"orderId": f"ORD-{n}", "pedidoInput": {"n": n}} for n in range(orders)]}
    job = client.post("/api/jobs", json=body, headers=AUTH).get_json()
    settings = app.extensions["orchestrator"].settings
    with session_scope(settings.database_url) as session:
        assert lifecycle.claim_dispatch(session, job["id"], settings) is not None
    return Robot(client, app, job["id"], [item["id"] for item in job["items"]])


@pytest.fixture
def robot(client, app) -> Robot:
    return new_dispatched_job(client, app)


def success(item_id: str, tracking: str = "CO123") -> dict[str, Any]:
    return {
        "type": "robot.item.completed",
        "data": {"itemId": item_id, "status": "success", "trackingNumber": tracking},
    }


def failure(item_id: str, error: str = "portal rejected the address") -> dict[str, Any]:
    return {
        "type": "robot.item.completed",
        "data": {"itemId": item_id, "status": "error", "error": error},
    }


def batch_completed(*results: dict[str, Any]) -> dict[str, Any]:
    return {"type": "robot.batch.completed", "data": {"items": [r["data"] for r in results]}}


def assert_error(response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]["details"]


# --- row 1: missing/invalid signature, other job's secret, stale timestamp → 401, nothing ---

SIX_MINUTES = timedelta(minutes=6)


def _drop(name: str):
    return lambda robot, body: {k: v for k, v in robot.headers(body).items() if k != name}


def _replace(name: str, value: str):
    return lambda robot, body: {**robot.headers(body), name: value}


FORGERIES = {
    "no-headers": lambda robot, body: {},
    "no-webhook-id": _drop("webhook-id"),
    "no-timestamp": _drop("webhook-timestamp"),
    "no-signature": _drop("webhook-signature"),
    "signature-of-another-body": lambda robot, body: robot.headers(body + " "),
    "malformed-signature-v1,a,b": _replace("webhook-signature", "v1,a,b"),
    "signature-not-base64": _replace("webhook-signature", "v1,!!!not*base64"),
    "unknown-signature-version": lambda robot, body: {
        **robot.headers(body),
        "webhook-signature": robot.headers(body)["webhook-signature"].replace("v1,", "v2,"),
    },
    "timestamp-not-a-number": _replace("webhook-timestamp", "yesterday"),
    "other-jobs-secret": lambda robot, body: robot.headers(
        body, secret=job_callback_secret(robot.settings.robot_callback_secret, robot.item_ids[0])
    ),
    "other-master-secret": lambda robot, body: robot.headers(
        body, secret=job_callback_secret("another-master", robot.job_id)
    ),
    "timestamp-6-minutes-old": lambda robot, body: robot.headers(
        body, when=datetime.now(UTC) - SIX_MINUTES
    ),
    "timestamp-6-minutes-ahead": lambda robot, body: robot.headers(
        body, when=datetime.now(UTC) + SIX_MINUTES
    ),
}


@pytest.mark.parametrize("forge", FORGERIES.values(), ids=FORGERIES.keys())
def test_row1_bad_signature_is_401_and_changes_nothing(client, app, robot, forge):
    body = json.dumps(batch_completed(success(robot.item_ids[0])))
    before = robot.snapshot()
    assert_error(robot.post(body, headers=forge(robot, body)), 401, "unauthorized")
    assert robot.snapshot() == before


def test_row1_secret_of_another_job_does_not_sign_for_this_one(client, app, robot):
    other = new_dispatched_job(client, app)
    body = json.dumps(success(robot.item_ids[0]))
    before = robot.snapshot()
    response = robot.post(
        body, secret=job_callback_secret(other.settings.robot_callback_secret, other.job_id)
    )
    assert_error(response, 401)
    assert robot.snapshot() == before


def test_row1_timestamp_four_minutes_old_still_verifies(robot):
    response = robot.post(success(robot.item_ids[0]), when=datetime.now(UTC) - timedelta(minutes=4))
    assert response.status_code == 200


def test_row1_signature_comes_before_the_job_lookup(robot):
    assert_error(robot.post(success("x"), job_id="no-such-job", headers={}), 401)


# --- row 2: a valid signature for a job that does not exist → 404 ---


def test_row2_valid_signature_for_a_missing_job_is_404(robot):
    missing = str(uuid.uuid4())
    secret = job_callback_secret(robot.settings.robot_callback_secret, missing)
    assert_error(robot.post(success("x"), job_id=missing, secret=secret), 404, "not_found")


# --- row 2b (the contract's third row): a job whose dispatch was never claimed → 409 ---


def new_undispatched_job(client, app, cancel: bool = False) -> Robot:
    """Submit a job through the API and never claim its dispatch (it has no robot yet)."""
    body = {"orders": [{"orderId": f"ORD-{n}", "pedidoInput": {"n": n}} for n in range(2)]}
    job = client.post("/api/jobs", json=body, headers=AUTH).get_json()
    if cancel:
        assert client.post(f"/api/jobs/{job['id']}/cancel", headers=AUTH).status_code == 200
    return Robot(client, app, job["id"], [item["id"] for item in job["items"]])


@pytest.mark.parametrize("cancelled", [False, True], ids=["pending", "cancelled-before-dispatch"])
@pytest.mark.parametrize(
    "make",
    [
        lambda ids: success(ids[0], "FORGED"),
        lambda ids: batch_completed(success(ids[0]), failure(ids[1])),
        lambda ids: {"type": "robot.batch.failed", "data": {"error": "no"}},
        lambda ids: {"type": "robot.item.started", "data": {"itemId": ids[0]}},
        lambda ids: {"type": "robot.heartbeat", "data": {}},
    ],
    ids=["item-completed", "batch-completed", "batch-failed", "item-started", "heartbeat"],
)
def test_row2b_an_event_for_a_job_never_claimed_is_409_and_applies_nothing(
    client, app, make, cancelled
):
    robot = new_undispatched_job(client, app, cancel=cancelled)
    before = robot.snapshot()
    assert_error(robot.post(make(robot.item_ids)), 409, "not_dispatched")
    assert robot.snapshot() == before
    assert robot.events() == []


def test_row2b_never_claimed_comes_after_the_signature_and_before_the_body(client, app):
    robot = new_undispatched_job(client, app)
    before = robot.snapshot()
    body = json.dumps(success(robot.item_ids[0]))
    assert_error(robot.post(body, headers=FORGERIES["signature-of-another-body"](robot, body)), 401)
    oversized = success(robot.item_ids[0])
    oversized["data"]["padding"] = "x" * robot.settings.max_body_bytes
    assert_error(robot.post(oversized), 409, "not_dispatched")
    assert_error(robot.post('{"type": "robot.batch.completed", "data": {'), 409)
    assert_error(robot.post({"type": "robot.nonsense", "data": {}}), 409)
    assert robot.snapshot() == before


# --- row 3: body over MAX_BODY_BYTES → 413, nothing ---


def test_row3_oversized_signed_body_is_413_and_changes_nothing(robot):
    event = success(robot.item_ids[0])
    event["data"]["padding"] = "x" * robot.settings.max_body_bytes
    before = robot.snapshot()
    assert_error(robot.post(event), 413, "body_too_large")
    assert robot.snapshot() == before


# --- row 4: malformed JSON → 400, nothing ---


@pytest.mark.parametrize(
    "raw",
    [
        '{"type": "robot.batch.completed", "data": {',
        '{"type": "robot.batch.failed", "data": {"error": NaN}}',
        '{"type": "robot.batch.failed", "data": {"error": "\\ud800"}}',
        "",
    ],
    ids=["truncated", "nan", "lone-surrogate", "empty"],
)
def test_row4_malformed_json_is_400_and_changes_nothing(robot, raw):
    before = robot.snapshot()
    assert_error(robot.post(raw), 400, "malformed_json")
    assert robot.snapshot() == before


HEARTBEAT = '{"type": "robot.heartbeat", "data": {"note": "\u00e9"}}'


@pytest.mark.parametrize(
    "raw",
    [
        b"\x80",
        b'{"type": "robot.heartbeat", "data": {"note": "\xe9"}}',
        HEARTBEAT.encode("utf-16"),
        HEARTBEAT.encode("utf-16-le"),
        HEARTBEAT.encode("utf-32"),
    ],
    ids=["lone-continuation-byte", "latin-1", "utf-16", "utf-16-without-bom", "utf-32"],
)
def test_row4_signed_bytes_that_are_not_utf8_are_400_and_change_nothing(robot, raw):
    """The signature holds over the raw bytes (row 1 passes); bytes that are not UTF-8 are not
    JSON, even when they would decode as another encoding's JSON."""
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    before = robot.snapshot()
    assert_error(robot.post(raw), 400, "malformed_json")
    assert robot.snapshot() == before


def test_row4_a_leading_byte_order_mark_is_ignored(robot):
    response = robot.post(b"\xef\xbb\xbf" + json.dumps(success(robot.item_ids[0])).encode())
    assert response.status_code == 200, response.get_data(as_text=True)


# --- row 5: unknown type, unknown itemId, bad field → 422, nothing ---

BAD_EVENTS = {
    "unknown-type": (lambda ids: {"type": "robot.item.paused", "data": {"itemId": ids[0]}}, "type"),
    "missing-type": (lambda ids: {"data": {"itemId": ids[0]}}, "type"),
    "unknown-item-id": (lambda ids: success("not-an-item-of-this-job"), "itemId"),
    "success-without-tracking-number": (
        lambda ids: {
            "type": "robot.item.completed",
            "data": {"itemId": ids[0], "status": "success"},
        },
        "trackingNumber",
    ),
    "success-with-empty-tracking-number": (
        lambda ids: success(ids[0], tracking=""),
        "trackingNumber",
    ),
    "bad-status": (
        lambda ids: {
            "type": "robot.item.completed",
            "data": {"itemId": ids[0], "status": "done", "trackingNumber": "CO1"},
        },
        "status",
    ),
    "data-not-an-object": (lambda ids: {"type": "robot.batch.failed", "data": "boom"}, "data"),
    "event-not-an-object": (lambda ids: [success(ids[0])], "_schema"),
    "batch-with-an-unknown-item": (
        lambda ids: batch_completed(success(ids[0]), success("not-an-item")),
        "itemId",
    ),
}


@pytest.mark.parametrize(("make", "field"), BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
def test_row5_invalid_event_is_422_and_changes_nothing(robot, make, field):
    before = robot.snapshot()
    details = assert_error(robot.post(make(robot.item_ids)), 422)
    assert field in json.dumps(details), details
    assert robot.snapshot() == before


def test_row5_an_item_of_another_job_is_unknown_here(client, app, robot):
    other = new_dispatched_job(client, app)
    before = robot.snapshot()
    assert_error(robot.post(success(other.item_ids[0])), 422)
    assert robot.snapshot() == before
    assert other.item(0)["status"] == "processing"


# --- row 6: same webhook-id as an event already answered 200 → 200, nothing applied again ---


def test_row6_same_webhook_id_is_applied_once(robot):
    first = robot.post(success(robot.item_ids[0]), webhook_id="msg-1")
    assert first.status_code == 200
    after_first = robot.snapshot()
    assert robot.events() == [("msg-1", "robot.item.completed", False)]

    assert robot.post(success(robot.item_ids[0]), webhook_id="msg-1").status_code == 200
    # Even a different event under the same id is not applied: the id was answered.
    assert robot.post(success(robot.item_ids[1], "CO999"), webhook_id="msg-1").status_code == 200
    assert robot.snapshot() == after_first
    assert robot.item(1)["status"] == "processing"


# --- row 7: item.completed for a final item with a different result → 409, nothing ---


@pytest.mark.parametrize(
    "second",
    [lambda i: success(i, "CO-OTHER"), lambda i: failure(i)],
    ids=["other-tracking-number", "error-after-success"],
)
def test_row7_a_different_result_for_a_final_item_is_409(robot, second):
    assert robot.post(success(robot.item_ids[0], "CO123")).status_code == 200
    before = robot.snapshot()
    assert_error(robot.post(second(robot.item_ids[0])), 409, "result_conflict")
    assert robot.snapshot() == before
    assert (robot.item(0)["status"], robot.item(0)["trackingNumber"]) == ("success", "CO123")


def test_row7_success_after_error_is_409(robot):
    assert robot.post(failure(robot.item_ids[0])).status_code == 200
    before = robot.snapshot()
    assert_error(robot.post(success(robot.item_ids[0])), 409)
    assert robot.snapshot() == before


# --- row 8: the same result again under a new webhook-id → 200, nothing changes ---


@pytest.mark.parametrize("result", [success, failure], ids=["success", "error"])
def test_row8_same_result_under_a_new_webhook_id_changes_nothing(robot, result):
    assert robot.post(result(robot.item_ids[0]), webhook_id="msg-a").status_code == 200
    job_before, items_before, _, _ = robot.snapshot()
    assert robot.post(result(robot.item_ids[0]), webhook_id="msg-b").status_code == 200
    job_after, items_after, _, _ = robot.snapshot()
    assert (job_after, items_after) == (job_before, items_before)


# --- row 9: any event for a finished job → 200, recorded late, applied to unreported items ---


def _end_job(robot: Robot, how: str) -> None:
    if how == "cancelled":
        assert (
            robot.client.post(f"/api/jobs/{robot.job_id}/cancel", headers=AUTH).status_code == 200
        )
        return
    failed = {"type": "robot.batch.failed", "data": {"error": "portal down"}}
    event = batch_completed() if how == "completed" else failed
    assert robot.post(event).status_code == 200
    assert robot.finalize() == how


@pytest.mark.parametrize("how", ["completed", "failed", "cancelled"])
def test_row9_late_item_result_is_recorded_and_applied_to_an_unknown_item(robot, how):
    _end_job(robot, how)
    assert robot.item(1)["status"] == "unknown"
    job_before = robot.snapshot()[0]
    events_before = robot.events()

    assert robot.post(success(robot.item_ids[1], "CO-LATE"), webhook_id="late-1").status_code == 200

    job_after, items, events, _ = robot.snapshot()
    assert job_after == job_before  # status, error, finishedAt, report: all unchanged
    assert (items[1]["status"], items[1]["tracking_number"]) == ("success", "CO-LATE")
    assert [i["status"] for i in items] == ["unknown", "success", "unknown"]
    assert events == [*events_before, ("late-1", "robot.item.completed", True)]


def test_row9_late_batch_report_applies_its_items_but_not_the_completion(robot, fake_redis):
    _end_job(robot, "cancelled")
    job_before = robot.snapshot()[0]
    response = robot.post(batch_completed(success(robot.item_ids[0]), failure(robot.item_ids[2])))
    assert response.status_code == 200
    job_after, items, events, report = robot.snapshot()
    assert job_after == job_before
    assert [i["status"] for i in items] == ["success", "unknown", "error"]
    assert events[-1][1:] == ("robot.batch.completed", True)
    assert report is None


# --- row 10: any other valid event → 200, applied once ---


def test_row10_item_completed_success_sets_the_tracking_number(robot):
    response = robot.post(success(robot.item_ids[0], "CO123"), webhook_id="msg-ok")
    assert response.status_code == 200
    item = robot.item(0)
    assert (item["status"], item["trackingNumber"], item["error"]) == ("success", "CO123", None)
    job = robot.client.get(f"/api/jobs/{robot.job_id}", headers=AUTH).get_json()
    assert job["status"] == "processing"
    assert job["counts"] == {
        "total": 3,
        "pending": 0,
        "processing": 2,
        "success": 1,
        "error": 0,
        "unknown": 0,
    }
    assert robot.events() == [("msg-ok", "robot.item.completed", False)]


def test_row10_item_completed_error_keeps_the_robots_reason(robot):
    assert robot.post(failure(robot.item_ids[2], "portal rejected the address")).status_code == 200
    item = robot.item(2)
    assert (item["status"], item["error"], item["trackingNumber"]) == (
        "error",
        "portal rejected the address",
        None,
    )


def test_row10_item_started_is_recorded(robot):
    before = robot.snapshot()[:2]
    event = {"type": "robot.item.started", "data": {"itemId": robot.item_ids[0]}}
    assert robot.post(event, webhook_id="started-0").status_code == 200
    assert robot.snapshot()[:2] == before  # already processing since the dispatch claim
    assert robot.events() == [("started-0", "robot.item.started", False)]


def _next_message(pubsub, timeout: float = 2.0) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
        if message is not None:
            return message
    return None


def test_row10_batch_completed_writes_the_report_key_publishes_then_finalizes(robot, fake_redis):
    assert robot.post(success(robot.item_ids[0])).status_code == 200
    pubsub = fake_redis.pubsub()
    try:
        pubsub.subscribe(report_channel(fake_redis))
        assert robot.post(batch_completed()).status_code == 200
        message = _next_message(pubsub)
    finally:
        pubsub.close()
    assert fake_redis.get(f"orchestrator:job:{robot.job_id}:report") == b"completed"
    assert message is not None and message["channel"] == report_channel(fake_redis).encode()
    assert message["data"] == robot.job_id.encode()

    job = robot.snapshot()[0]
    assert (job["report"], job["status"]) == ("completed", "processing")

    assert robot.finalize() == "completed"
    body = robot.client.get(f"/api/jobs/{robot.job_id}", headers=AUTH).get_json()
    assert body["status"] == "completed" and body["error"] is None
    assert [i["status"] for i in body["items"]] == ["success", "unknown", "unknown"]
    assert body["items"][0]["trackingNumber"] == "CO123"


def test_row10_batch_completed_ignores_a_conflicting_entry_and_applies_the_rest(robot):
    assert robot.post(success(robot.item_ids[0], "CO-FIRST")).status_code == 200
    event = batch_completed(
        success(robot.item_ids[0], "CO-CONFLICT"),
        success(robot.item_ids[1], "CO-2"),
        failure(robot.item_ids[2], "address unknown"),
    )
    assert robot.post(event).status_code == 200
    assert robot.snapshot()[0]["report"] == "completed"
    assert robot.finalize() == "completed"
    items = robot.client.get(f"/api/jobs/{robot.job_id}", headers=AUTH).get_json()["items"]
    assert [(i["status"], i["trackingNumber"], i["error"]) for i in items] == [
        ("success", "CO-FIRST", None),
        ("success", "CO-2", None),
        ("error", None, "address unknown"),
    ]


def test_row10_batch_failed_fails_the_job_with_the_robots_reason(robot, fake_redis):
    assert robot.post(failure(robot.item_ids[0])).status_code == 200
    event = {"type": "robot.batch.failed", "data": {"error": "portal unavailable"}}
    assert robot.post(event).status_code == 200
    assert fake_redis.get(report_key(robot.job_id)) == b"failed"
    job = robot.snapshot()[0]
    assert (job["report"], job["status"]) == ("failed", "processing")

    assert robot.finalize() == "failed"
    body = robot.client.get(f"/api/jobs/{robot.job_id}", headers=AUTH).get_json()
    assert body["status"] == "failed"
    assert "portal unavailable" in body["error"]
    assert [i["status"] for i in body["items"]] == ["error", "unknown", "unknown"]


# --- a database error → 5xx after a valid signature, nothing applied ---


def test_database_unreachable_is_5xx_after_a_valid_signature(make_settings, fake_redis, robot):
    settings = make_settings(
        database_url="postgresql+psycopg://postgres:db-s3cr3t@127.0.0.1:1/x",
        redis_url=REDIS_URL,
        robot_callback_secret=robot.settings.robot_callback_secret,
    )
    down = Robot(create_app(settings).test_client(), robot.app, robot.job_id, robot.item_ids)
    response = down.post(batch_completed(success(robot.item_ids[0])))
    assert_error(response, 503, "unavailable")
    for secret in settings.secrets():
        assert secret not in response.get_data(as_text=True)
    assert fake_redis.get(report_key(robot.job_id)) is None


def test_database_error_while_applying_is_5xx_and_nothing_is_applied(robot, monkeypatch):
    real_apply = callbacks.apply_event

    def apply_then_fail(session, *args):
        real_apply(session, *args)
        raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(callbacks, "apply_event", apply_then_fail)
    event = batch_completed(success(robot.item_ids[0]))
    before = robot.snapshot()
    response = robot.post(event, webhook_id="retry-me")
    assert_error(response, 503, "unavailable")
    assert robot.snapshot() == before

    # Nothing was applied, so the robot's retry of the same delivery is applied in full.
    monkeypatch.setattr(callbacks, "apply_event", real_apply)
    assert robot.post(event, webhook_id="retry-me").status_code == 200
    assert robot.item(0)["status"] == "success"
    assert robot.snapshot()[0]["report"] == "completed"


def test_concurrent_different_results_for_one_item_apply_one_and_refuse_the_rest(app, robot):
    """Eight deliveries at once, each a different result for the same item: the item row
    lock lets exactly one apply; every other one sees it and answers 409, writing nothing."""
    results = [success(robot.item_ids[0], tracking=f"CO-{n}") for n in range(8)]
    start = threading.Barrier(len(results))

    def deliver(event: dict[str, Any]) -> int:
        client = app.test_client()
        body = json.dumps(event)
        headers = robot.headers(body)
        start.wait(timeout=10)
        return client.post(
            f"/api/robot/jobs/{robot.job_id}/events",
            data=body,
            headers=headers,
            content_type="application/json",
        ).status_code

    with ThreadPoolExecutor(len(results)) as pool:
        answers = list(pool.map(deliver, results))

    assert sorted(answers) == [200] + [409] * 7
    applied = results[answers.index(200)]["data"]["trackingNumber"]
    assert robot.item(0)["trackingNumber"] == applied
    assert len(robot.events()) == 1


@pytest.mark.parametrize("data", [{}, {"browsers": 2, "items": [1, "x"]}, {"nested": {"a": [1]}}])
def test_row10_heartbeat_with_any_object_is_stored_and_changes_nothing_else(robot, data):
    job_before, items_before, events_before, report = robot.snapshot()

    answer = robot.post({"type": "robot.heartbeat", "data": data}, webhook_id="hb-1")
    again = robot.post({"type": "robot.heartbeat", "data": data}, webhook_id="hb-1")

    assert (answer.status_code, answer.get_json()) == (200, {"status": "applied"})
    assert (again.status_code, again.get_json()) == (200, {"status": "duplicate"})
    job_after, items_after, events_after, report_after = robot.snapshot()
    assert (job_after, items_after, report_after) == (job_before, items_before, report)
    assert events_after == [*events_before, ("hb-1", "robot.heartbeat", False)]
    with session_scope(robot.settings.database_url) as session:
        stored = session.scalar(select(Event.payload).where(Event.webhook_id == "hb-1"))
        last_event_at = session.get(Job, robot.job_id).last_event_at
    assert stored == data
    assert last_event_at is not None


@pytest.mark.parametrize("data", [None, [], "alive", 1])
def test_row5_heartbeat_data_must_be_an_object(robot, data):
    answer = robot.post({"type": "robot.heartbeat", "data": data})
    assert answer.status_code == 422
    assert robot.events() == []


@pytest.mark.parametrize("character", ["\u202e", "\u2066", "\u2028", "\x9b"])
def test_tracking_numbers_and_errors_that_could_spoof_the_screen_are_422(robot, character):
    before = robot.snapshot()
    answer = robot.post(success(robot.item_ids[0], tracking=f"CO{character}321"))
    assert answer.status_code == 422
    assert "trackingNumber" in answer.get_json()["error"]["details"]
    failed = {
        "type": "robot.item.completed",
        "data": {"itemId": robot.item_ids[1], "status": "error", "error": f"no{character}"},
    }
    assert robot.post(failed).status_code == 422
    assert robot.snapshot() == before


@pytest.mark.parametrize(
    "raw",
    [
        '{"type": "robot.heartbeat", "data": {"load": 1e400}}',
        '{"type": "robot.batch.failed", "data": {"error": "no", "extra": -1e999}}',
        '{"type": "robot.heartbeat", "data": {"n": 1' + "0" * 400 + "}}",
    ],
)
def test_row5_a_number_no_double_holds_is_422_and_stores_nothing(robot, raw):
    """It was stored as ``Infinity`` on SQLite; PostgreSQL refused it (a 500)."""
    before = robot.snapshot()
    assert_error(robot.post(raw), 422, "validation_failed")
    assert robot.snapshot() == before
