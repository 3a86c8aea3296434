"""``GET /metrics`` (CONTRACT §3): the database's gauges and the callback counter, parsed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks import Webhook

from orchestrator import audit, lifecycle
from orchestrator.db import session_scope
from orchestrator.models import Notification, utcnow
from orchestrator.robot_events import BATCH_COMPLETED, apply_event
from orchestrator.signing import job_callback_secret

from ..conftest import API_TOKEN, unit_app

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
ORDERS = [{"orderId": "A", "pedidoInput": {}}, {"orderId": "B", "pedidoInput": {}}]


@pytest.fixture
def app(database_url, make_settings, fake_redis, started):
    return unit_app(make_settings, database_url)


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the page, by name and labels, through prometheus_client's own parser."""
    answer = client.get("/metrics", headers=AUTH)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.content_type.startswith("text/plain; version=")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.get_data(as_text=True))
        for s in family.samples
    }


def jobs_gauge(samples) -> dict[str, float]:
    return {
        dict(labels)["status"]: value
        for (name, labels), value in samples.items()
        if name == "orchestrator_jobs"
    }


def callbacks(samples) -> dict[str, float]:
    return {
        dict(labels)["outcome"]: value
        for (name, labels), value in samples.items()
        if name == "orchestrator_callbacks_total"
    }


def new_job(settings, url: str, *, dispatch: bool = False) -> tuple[str, list[str]]:
    with session_scope(url) as session:
        job = lifecycle.create_job(session, ORDERS)
        job_id, item_ids = job.id, [item.id for item in job.items]
    if dispatch:
        with session_scope(url) as session:
            lifecycle.claim_dispatch(session, job_id, settings)
    return job_id, item_ids


def test_metrics_need_a_token(client) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic x"}):
        answer = client.get("/metrics", headers=headers)
        assert answer.status_code == 401
        assert answer.get_json()["error"]["code"] == "unauthorized"
    assert (
        client.get("/metrics", headers={"Authorization": "Bearer second-token"}).status_code == 200
    )


def test_every_status_is_present_on_an_empty_database(client) -> None:
    samples = scrape(client)
    assert jobs_gauge(samples) == {
        "pending": 0,
        "processing": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
    }
    assert samples[("orchestrator_active_jobs", ())] == 0
    assert samples[("orchestrator_queued_jobs", ())] == 0
    assert set(callbacks(samples)) == {"applied", "duplicate", "late", "conflict", "rejected"}
    assert notifications_gauge(samples) == {"pending": 0, "delivered": 0, "failed": 0}
    assert samples[("orchestrator_dispatch_paused", ())] == 0


def test_the_paused_gauge_follows_a_pause_and_a_resume(app, client) -> None:
    state = app.extensions["orchestrator"]
    state.pause_dispatch("portal maintenance", None, audit.SYSTEM)
    assert scrape(client)[("orchestrator_dispatch_paused", ())] == 1
    state.resume_dispatch(audit.SYSTEM)
    assert scrape(client)[("orchestrator_dispatch_paused", ())] == 0


def notifications_gauge(samples) -> dict[str, float]:
    return {
        dict(labels)["status"]: value
        for (name, labels), value in samples.items()
        if name == "orchestrator_notifications"
    }


def test_the_notifications_gauge_counts_the_outbox_by_status(client, database_url) -> None:
    with session_scope(database_url) as session:
        for status in ("pending", "pending", "delivered", "failed"):
            session.add(
                Notification(
                    id=f"msg_{uuid.uuid4().hex}",
                    type="dispatch.paused",
                    payload={},
                    timestamp=utcnow(),
                    status=status,
                    created_at=utcnow(),
                )
            )
    assert notifications_gauge(scrape(client)) == {"pending": 2, "delivered": 1, "failed": 1}


def test_job_gauges_follow_the_database(app, client, database_url) -> None:
    settings = app.extensions["orchestrator"].settings
    new_job(settings, database_url)  # pending, queued
    marked, _ = new_job(settings, database_url)
    with session_scope(database_url) as session:
        lifecycle.mark_processing(session, marked)  # still pending until its claim: queued
    new_job(settings, database_url, dispatch=True)  # processing, dispatched: active
    done, _ = new_job(settings, database_url, dispatch=True)
    with session_scope(database_url) as session:
        apply_event(session, done, "msg-done", BATCH_COMPLETED, {})
    with session_scope(database_url) as session:
        lifecycle.finalize(session, done)
    failed, _ = new_job(settings, database_url, dispatch=True)
    with session_scope(database_url) as session:
        lifecycle.finalize(session, failed, lifecycle.Failure("refused", False, "refused"))
    for _ in range(2):
        cancelled, _ = new_job(settings, database_url)
        with session_scope(database_url) as session:
            lifecycle.cancel(session, cancelled, actor=audit.SYSTEM)

    samples = scrape(client)

    assert jobs_gauge(samples) == {
        "pending": 2,
        "processing": 1,
        "completed": 1,
        "failed": 1,
        "cancelled": 2,
    }
    assert samples[("orchestrator_active_jobs", ())] == 1
    assert samples[("orchestrator_queued_jobs", ())] == 2


def _post(client, settings, job_id: str, event: dict, webhook_id: str | None = None, **kw):
    body = kw.get("raw") or json.dumps(event)
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    secret = kw.get("secret") or job_callback_secret(settings.robot_callback_secret, job_id)
    headers = kw.get("headers") or {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, now, body),
    }
    return client.post(
        f"/api/robot/jobs/{job_id}/events",
        data=body,
        headers=headers,
        content_type="application/json",
    )


def test_every_callback_answered_is_counted_once_by_outcome(app, client, database_url) -> None:
    settings = app.extensions["orchestrator"].settings
    job_id, (first, second) = new_job(settings, database_url, dispatch=True)
    late_job, (late_item, _) = new_job(settings, database_url, dispatch=True)
    with session_scope(database_url) as session:
        lifecycle.finalize(session, late_job, lifecycle.Failure("gone", True, "unexpected"))
    before = callbacks(scrape(client))
    ok = {
        "type": "robot.item.completed",
        "data": {"itemId": first, "status": "success", "trackingNumber": "CO1"},
    }
    answers = [
        _post(client, settings, job_id, ok, webhook_id="msg-1"),  # applied
        _post(client, settings, job_id, ok, webhook_id="msg-1"),  # duplicate
        _post(client, settings, job_id, {"type": "robot.item.started", "data": {"itemId": second}}),
        _post(
            client,
            settings,
            late_job,
            {"type": "robot.item.started", "data": {"itemId": late_item}},
        ),
        _post(  # conflict: a different final result for the same item
            client,
            settings,
            job_id,
            {
                "type": "robot.item.completed",
                "data": {"itemId": first, "status": "error", "error": "no"},
            },
        ),
        _post(client, settings, job_id, ok, headers={"webhook-id": "x"}),  # 401 unsigned
        _post(client, settings, job_id, ok, secret=job_callback_secret("other", job_id)),  # 401
        _post(client, settings, str(uuid.uuid4()), ok),  # 404
        _post(client, settings, job_id, {"type": "robot.nonsense", "data": {}}),  # 422
        _post(client, settings, job_id, ok, raw="{not json"),  # 400
        _post(client, settings, job_id, ok, raw=" " * (300 * 1024)),  # 413, before any check
    ]
    assert [a.status_code for a in answers] == [
        200,
        200,
        200,
        200,
        409,
        401,
        401,
        404,
        422,
        400,
        413,
    ]
    assert [a.get_json().get("status") for a in answers[:4]] == [
        "applied",
        "duplicate",
        "applied",
        "late",
    ]

    after = callbacks(scrape(client))

    delta = {outcome: after[outcome] - before.get(outcome, 0) for outcome in after}
    assert delta == {
        "applied": 2,
        "duplicate": 1,
        "late": 1,
        "conflict": 1,
        "rejected": 6,
    }


def test_a_database_down_at_scrape_time_is_a_503(app, client, monkeypatch) -> None:
    from sqlalchemy.exc import OperationalError

    from orchestrator import metrics

    def down(_conn):
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(metrics, "_job_counts", down)
    answer = client.get("/metrics", headers=AUTH)
    assert answer.status_code == 503
    assert answer.get_json()["error"]["code"] == "unavailable"


def test_counts_reach_the_multiprocess_directory_even_if_prometheus_came_first(tmp_path) -> None:
    # The celery command imports prometheus_client (Flower's plugin) before our code runs;
    # the directory must still be used, by this process and by a forked child.
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    code = """
import os, sys
import prometheus_client
from orchestrator import metrics
path = metrics.use_multiprocess_dir("test")
metrics.count_callback("applied")
pid = os.fork()
if pid == 0:
    metrics.count_callback("applied")
    os._exit(0)
os.waitpid(pid, 0)
body, _ = metrics.web_exposition("sqlite:///" + sys.argv[1])
print(len([n for n in os.listdir(path) if n.endswith(".db")]))
print(body.decode())
"""
    from orchestrator.migrate import upgrade

    upgrade(f"sqlite:///{tmp_path / 'm.db'}")
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "m.db")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    files, _, body = out.stdout.partition("\n")
    assert int(files) == 2, out.stdout  # one per process
    samples = {
        (s.name, tuple(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    assert samples[("orchestrator_callbacks_total", (("outcome", "applied"),))] == 2
    assert samples[("orchestrator_jobs", (("status", "pending"),))] == 0
