"""Callback secret rotation (CONTRACT §9): old jobs keep verifying while the old value is listed."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from sqlalchemy import select, update
from standardwebhooks import Webhook

from orchestrator import lifecycle
from orchestrator.db import session_scope
from orchestrator.models import Event, Item, Job
from orchestrator.robot_client import build_payload
from orchestrator.signing import job_callback_secret, secret_fingerprint

from ..conftest import unit_app

OLD, NEW = "old-master-s3cr3t", "new-master-s3cr3t"


def _dispatch(settings, url: str) -> tuple[str, str, str]:
    """Create and claim a job; return its id, first item and the callbackSecret sent."""
    with session_scope(url) as session:
        job = lifecycle.create_job(session, [{"orderId": "A", "pedidoInput": {}}])
        job_id, item_id = job.id, job.items[0].id
    with session_scope(url) as session:
        ticket = lifecycle.claim_dispatch(session, job_id, settings)
    return job_id, item_id, str(build_payload(ticket, settings)["callbackSecret"])


def _started(app, job_id: str, item_id: str, secret: str):
    body = json.dumps({"type": "robot.item.started", "data": {"itemId": item_id}})
    webhook_id = f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, now, body),
    }
    return app.test_client().post(
        f"/api/robot/jobs/{job_id}/events",
        data=body,
        headers=headers,
        content_type="application/json",
    )


def _app(make_settings, url: str, current: str, previous: tuple[str, ...] = ()):
    return unit_app(
        lambda **kw: make_settings(
            robot_callback_secret=current, robot_callback_secret_previous=previous, **kw
        ),
        url,
    )


def test_a_job_dispatched_before_the_rotation_verifies_with_the_previous_value_listed(
    database_url, make_settings, fake_redis, started
) -> None:
    before = _app(make_settings, database_url, OLD)
    job_id, item_id, old_secret = _dispatch(
        before.extensions["orchestrator"].settings, database_url
    )
    assert old_secret == job_callback_secret(OLD, job_id)

    rotated = _app(make_settings, database_url, NEW, ("unrelated-former", OLD))
    answer = _started(rotated, job_id, item_id, old_secret)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["status"] == "applied"

    # New dispatches get secrets derived from the current value only.
    new_job, new_item, new_secret = _dispatch(
        rotated.extensions["orchestrator"].settings, database_url
    )
    assert new_secret == job_callback_secret(NEW, new_job)
    assert _started(rotated, new_job, new_item, new_secret).status_code == 200

    # Without the previous value the old job's callbacks are refused; the new job's are not.
    forgotten = _app(make_settings, database_url, NEW)
    answer = _started(forgotten, job_id, item_id, old_secret)
    assert answer.status_code == 401
    assert answer.get_json()["error"]["code"] == "unauthorized"
    assert _started(forgotten, new_job, new_item, new_secret).status_code == 200


def test_previous_values_never_reach_an_answer(database_url, make_settings, fake_redis, started):
    app = _app(make_settings, database_url, NEW, (OLD,))
    job_id, item_id, _ = _dispatch(app.extensions["orchestrator"].settings, database_url)
    answer = _started(app, job_id, item_id, job_callback_secret("wrong", job_id))
    assert answer.status_code == 401
    assert OLD not in answer.get_data(as_text=True)


def _events(url: str, job_id: str) -> list[str]:
    with session_scope(url) as session:
        return list(session.scalars(select(Event.type).where(Event.job_id == job_id)))


def _item(url: str, item_id: str) -> tuple[str, str | None]:
    with session_scope(url) as session:
        item = session.get(Item, item_id)
        return item.status, item.tracking_number


def _completed(app, job_id: str, item_id: str, secret: str, tracking: str):
    event = {
        "type": "robot.item.completed",
        "data": {"itemId": item_id, "status": "success", "trackingNumber": tracking},
    }
    body = json.dumps(event)
    webhook_id = f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    return app.test_client().post(
        f"/api/robot/jobs/{job_id}/events",
        data=body,
        headers={
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign(webhook_id, now, body),
        },
        content_type="application/json",
    )


def test_a_retired_value_never_signs_for_a_job_dispatched_after_it_was_retired(
    database_url, make_settings, fake_redis, started
) -> None:
    rotated = _app(make_settings, database_url, NEW, (OLD,))
    job_id, item_id, secret = _dispatch(rotated.extensions["orchestrator"].settings, database_url)
    assert secret == job_callback_secret(NEW, job_id)

    forged = _completed(rotated, job_id, item_id, job_callback_secret(OLD, job_id), "FORGED")
    assert forged.status_code == 401, forged.get_json()
    assert _item(database_url, item_id) == ("processing", None)
    assert _events(database_url, job_id) == []

    assert _completed(rotated, job_id, item_id, secret, "CO1").status_code == 200
    assert _item(database_url, item_id) == ("success", "CO1")


def test_a_job_not_yet_dispatched_accepts_no_retired_value(
    database_url, make_settings, fake_redis, started
) -> None:
    """The review's case: a new job, never dispatched, and a callback signed with a retired
    value; only the current value verifies for it (and then it is 409, never dispatched)."""
    rotated = _app(make_settings, database_url, NEW, (OLD,))
    with session_scope(database_url) as session:
        job = lifecycle.create_job(session, [{"orderId": "A", "pedidoInput": {}}])
        job_id, item_id = job.id, job.items[0].id

    forged = _completed(rotated, job_id, item_id, job_callback_secret(OLD, job_id), "FORGED")
    assert forged.status_code == 401, forged.get_json()
    current = _completed(rotated, job_id, item_id, job_callback_secret(NEW, job_id), "X")
    assert current.status_code == 409, current.get_json()
    assert _item(database_url, item_id) == ("pending", None)
    assert _events(database_url, job_id) == []


def test_a_job_verifies_only_with_the_value_it_was_dispatched_under_in_any_order(
    database_url, make_settings, fake_redis, started
) -> None:
    before = _app(make_settings, database_url, OLD)
    job_id, item_id, old_secret = _dispatch(
        before.extensions["orchestrator"].settings, database_url
    )
    with session_scope(database_url) as session:
        recorded = session.get(Job, job_id).callback_key
    # A fingerprint, never the secret nor anything that depends on the list's order.
    assert recorded == secret_fingerprint(OLD) and len(recorded) == 16 and OLD not in recorded

    for previous in (("another-former", OLD), (OLD, "another-former")):
        rotated = _app(make_settings, database_url, NEW, previous)
        # The current value does not sign for a job dispatched under the old one.
        answer = _completed(rotated, job_id, item_id, job_callback_secret(NEW, job_id), "F")
        assert answer.status_code == 401, answer.get_json()
        assert _started(rotated, job_id, item_id, old_secret).status_code == 200
    assert _item(database_url, item_id) == ("processing", None)


def test_a_job_dispatched_before_fingerprints_accepts_the_current_and_previous_values(
    database_url, make_settings, fake_redis, started
) -> None:
    """Jobs claimed before jobs.callback_key existed have none: every listed value signs."""
    before = _app(make_settings, database_url, OLD)
    job_id, item_id, old_secret = _dispatch(
        before.extensions["orchestrator"].settings, database_url
    )
    with session_scope(database_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(callback_key=None))

    rotated = _app(make_settings, database_url, NEW, (OLD,))
    assert _started(rotated, job_id, item_id, old_secret).status_code == 200
    assert _started(rotated, job_id, item_id, job_callback_secret(NEW, job_id)).status_code == 200
    unrelated = _started(rotated, job_id, item_id, job_callback_secret("unlisted", job_id))
    assert unrelated.status_code == 401
