"""``POST /api/jobs/<id>/resubmit`` (CONTRACT §3) on migrated SQLite and PostgreSQL databases."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from sqlalchemy import delete, select

from orchestrator import audit, lifecycle, submission
from orchestrator.db import session_scope
from orchestrator.models import Item, Job
from orchestrator.robot_events import apply_event

from ..conftest import unit_app
from .test_jobs import JOB_KEYS, assert_error, order, settings_of, submit


@pytest.fixture
def app(database_url, make_settings, fake_redis, started):
    """The unit app, once on SQLite and once on PostgreSQL."""
    return unit_app(make_settings, database_url)


def resubmit(client, headers, job_id: str, body: Any = None, raw: str | None = None, **extra):
    """POST the resubmit with a JSON body (or a raw text; neither: no body at all)."""
    if raw is None and body is None:
        return client.post(f"/api/jobs/{job_id}/resubmit", headers={**headers, **extra})
    return client.post(
        f"/api/jobs/{job_id}/resubmit",
        data=raw if raw is not None else json.dumps(body),
        headers={**headers, **extra},
        content_type="application/json",
    )


def finished_job(client, auth, app, statuses: tuple[str, ...], report: str = "completed") -> dict:
    """Submit one order per status, play the worker and the robot, return the final job.

    ``success`` and ``error`` items are reported by the robot; ``unknown`` ones are not, and
    become unknown when the batch is reported.
    """
    orders = [order(n, ciudad=f"Ciudad {n}", peso=n + 0.5) for n in range(len(statuses))]
    job_id = submit(client, auth, orders).get_json()["id"]
    settings = settings_of(app)
    url = settings.database_url
    with session_scope(url) as session:
        lifecycle.mark_processing(session, job_id)
    with session_scope(url) as session:
        ticket = lifecycle.claim_dispatch(session, job_id, settings)
        assert ticket is not None
    for n, (item, status) in enumerate(zip(ticket.items, statuses, strict=True)):
        data: dict[str, Any] = {"itemId": item["itemId"], "status": status}
        if status == "success":
            data["trackingNumber"] = f"CO{n:04d}"
        elif status == "error":
            data["error"] = "portal rejected the address"
        else:
            continue
        with session_scope(url) as session:
            apply_event(session, job_id, f"m{n}", "robot.item.completed", data)
    with session_scope(url) as session:
        if report == "completed":
            apply_event(session, job_id, "end", "robot.batch.completed", {"items": []})
        else:
            apply_event(session, job_id, "end", "robot.batch.failed", {"error": "portal down"})
    with session_scope(url) as session:
        assert lifecycle.finalize(session, job_id) == report
    job = client.get(f"/api/jobs/{job_id}", headers=auth).get_json()
    assert [item["status"] for item in job["items"]] == list(statuses)
    return job


def ids(job: dict, status: str) -> list[str]:
    return [item["id"] for item in job["items"] if item["status"] == status]


def stored_orders(app, job_id: str) -> list[tuple[str, dict]]:
    with session_scope(settings_of(app).database_url) as session:
        rows = session.execute(
            select(Item.order_id, Item.pedido_input)
            .where(Item.job_id == job_id)
            .order_by(Item.position)
        )
        return [(order_id, pedido) for order_id, pedido in rows]


def job_ids(app) -> set[str]:
    with session_scope(settings_of(app).database_url) as session:
        return set(session.scalars(select(Job.id)))


MIXED = ("success", "error", "unknown", "error", "success")


# --- what a resubmit creates ---


@pytest.mark.parametrize(
    ("body", "raw"),
    [(None, None), (None, ""), ({}, None)],
    ids=["no-body", "empty-json-body", "empty-object"],
)
def test_without_item_ids_every_error_item_is_resubmitted(client, auth, app, started, body, raw):
    old = finished_job(client, auth, app, MIXED)
    answer = resubmit(client, auth, old["id"], body, raw)

    assert answer.status_code == 202, answer.get_data(as_text=True)
    new = answer.get_json()
    assert set(new) == JOB_KEYS
    assert answer.headers["Location"] == f"/api/jobs/{new['id']}"
    assert new["resubmitOf"] == old["id"]
    assert new["id"] != old["id"]
    assert new["status"] == "pending"
    assert [item["orderId"] for item in new["items"]] == ["ORD-1", "ORD-3"]
    assert all(item["status"] == "pending" for item in new["items"])
    assert not {item["id"] for item in new["items"]} & {item["id"] for item in old["items"]}
    assert new["counts"]["total"] == new["counts"]["pending"] == 2
    # Through submit's path: committed, then started; the old job is untouched.
    assert started.job_ids[-1] == new["id"]
    assert client.get(answer.headers["Location"], headers=auth).get_json() == new
    assert client.get(f"/api/jobs/{old['id']}", headers=auth).get_json() == old


def test_the_new_jobs_orders_are_the_chosen_items_order_id_and_pedido_input(
    client, auth, app, started
):
    old = finished_job(client, auth, app, MIXED)
    chosen = [ids(old, "unknown")[0], ids(old, "error")[1]]
    answer = resubmit(client, auth, old["id"], {"itemIds": chosen, "confirmUnknown": True})
    assert answer.status_code == 202
    new_id = answer.get_json()["id"]
    originals = dict(stored_orders(app, old["id"]))
    assert stored_orders(app, new_id) == [
        ("ORD-2", originals["ORD-2"]),
        ("ORD-3", originals["ORD-3"]),
    ]
    assert originals["ORD-2"] == {"ciudad": "Ciudad 2", "peso": 2.5}
    # And that is what the robot receives at the dispatch.
    settings = settings_of(app)
    with session_scope(settings.database_url) as session:
        ticket = lifecycle.claim_dispatch(session, new_id, settings)
    assert ticket is not None
    assert [(i["orderId"], i["pedidoInput"]) for i in ticket.items] == [
        ("ORD-2", originals["ORD-2"]),
        ("ORD-3", originals["ORD-3"]),
    ]


def test_listed_error_items_only(client, auth, app):
    old = finished_job(client, auth, app, MIXED)
    answer = resubmit(client, auth, old["id"], {"itemIds": [ids(old, "error")[1]]})
    assert answer.status_code == 202
    assert [item["orderId"] for item in answer.get_json()["items"]] == ["ORD-3"]


def test_confirm_unknown_takes_listed_unknown_items(client, auth, app):
    old = finished_job(client, auth, app, ("unknown", "error", "unknown"))
    body = {"itemIds": ids(old, "unknown"), "confirmUnknown": True}
    answer = resubmit(client, auth, old["id"], body)
    assert answer.status_code == 202
    assert [item["orderId"] for item in answer.get_json()["items"]] == ["ORD-0", "ORD-2"]


def test_confirm_unknown_without_item_ids_still_takes_only_the_error_items(client, auth, app):
    old = finished_job(client, auth, app, ("unknown", "error"))
    answer = resubmit(client, auth, old["id"], {"confirmUnknown": True})
    assert answer.status_code == 202
    assert [item["orderId"] for item in answer.get_json()["items"]] == ["ORD-1"]


@pytest.mark.parametrize("how", ["failed", "cancelled"])
def test_failed_and_cancelled_jobs_are_final_too(client, auth, app, how):
    if how == "failed":
        old = finished_job(client, auth, app, ("error", "unknown"), report="failed")
    else:
        old = submit(client, auth, [order(1), order(2)]).get_json()
        old = client.post(f"/api/jobs/{old['id']}/cancel", headers=auth).get_json()
        assert [item["status"] for item in old["items"]] == ["error", "error"]
    answer = resubmit(client, auth, old["id"])
    assert answer.status_code == 202
    assert answer.get_json()["resubmitOf"] == old["id"]


def test_a_resubmitted_job_can_be_resubmitted_again(client, auth, app):
    first = finished_job(client, auth, app, ("error",))
    second = resubmit(client, auth, first["id"]).get_json()
    assert client.post(f"/api/jobs/{second['id']}/cancel", headers=auth).status_code == 200
    third = resubmit(client, auth, second["id"])
    assert third.status_code == 202
    assert third.get_json()["resubmitOf"] == second["id"]


@pytest.mark.parametrize("priority", [-100, 0, 100])
def test_priority_in_the_body_is_accepted_from_minus_100_to_100(client, auth, app, priority):
    old = finished_job(client, auth, app, ("error",))
    assert resubmit(client, auth, old["id"], {"priority": priority}).status_code == 202


# --- resubmitOf on every view of a job ---


def test_resubmit_of_is_on_read_list_and_submit(client, auth, app):
    old = finished_job(client, auth, app, ("error",))
    assert old["resubmitOf"] is None
    assert submit(client, auth, [order(9)]).get_json()["resubmitOf"] is None
    new = resubmit(client, auth, old["id"]).get_json()
    assert client.get(f"/api/jobs/{new['id']}", headers=auth).get_json()["resubmitOf"] == old["id"]
    listed = {j["id"]: j for j in client.get("/api/jobs", headers=auth).get_json()["jobs"]}
    assert listed[new["id"]]["resubmitOf"] == old["id"]
    assert listed[old["id"]]["resubmitOf"] is None
    assert set(listed[new["id"]]) == JOB_KEYS - {"items"}


def test_deleting_the_old_job_leaves_the_new_one_with_resubmit_of_null(client, auth, app):
    old = finished_job(client, auth, app, ("error",))
    new = resubmit(client, auth, old["id"]).get_json()
    with session_scope(settings_of(app).database_url) as session:
        session.execute(delete(Job).where(Job.id == old["id"]))  # as retention deletes it
    assert_error(client.get(f"/api/jobs/{old['id']}", headers=auth), 404)
    shown = client.get(f"/api/jobs/{new['id']}", headers=auth).get_json()
    assert shown["resubmitOf"] is None
    assert [item["orderId"] for item in shown["items"]] == ["ORD-0"]


# --- refusals: 404, 409, 422; nothing is created or started ---


def assert_nothing_created(app, started, before: set[str], started_before: int) -> None:
    assert job_ids(app) == before
    assert len(started.job_ids) == started_before


def test_an_unknown_job_is_404(client, auth, app, started):
    for job_id in ("no-such-job", "00000000-0000-0000-0000-000000000000", "a%00b"):
        assert_error(resubmit(client, auth, job_id), 404, "not_found")
        assert_error(resubmit(client, auth, job_id, {"itemIds": ["x"]}), 404, "not_found")
    assert started.job_ids == []


@pytest.mark.parametrize("state", ["pending", "processing"])
def test_a_job_that_is_not_final_is_409(client, auth, app, started, state):
    job = submit(client, auth, [order(1)]).get_json()
    if state == "processing":
        settings = settings_of(app)
        with session_scope(settings.database_url) as session:
            assert lifecycle.claim_dispatch(session, job["id"], settings) is not None
    before, count = job_ids(app), len(started.job_ids)
    for body in (None, {"itemIds": [job["items"][0]["id"]], "confirmUnknown": True}):
        message = assert_error(resubmit(client, auth, job["id"], body), 409, "job_not_finished")
        assert message == {}
    answer = resubmit(client, auth, job["id"])
    assert state in answer.get_json()["error"]["message"]
    assert_nothing_created(app, started, before, count)


def test_an_item_in_success_is_422_naming_it(client, auth, app, started):
    old = finished_job(client, auth, app, MIXED)
    before, count = job_ids(app), len(started.job_ids)
    success = ids(old, "success")[0]
    for confirm in (False, True):
        body = {"itemIds": [ids(old, "error")[0], success], "confirmUnknown": confirm}
        details = assert_error(resubmit(client, auth, old["id"], body), 422, "not_resubmittable")
        assert set(details["itemIds"]) == {success}
        assert "ORD-0" in details["itemIds"][success][0]
        assert "success" in details["itemIds"][success][0]
    assert_nothing_created(app, started, before, count)


def test_an_item_in_unknown_is_422_unless_confirmed(client, auth, app, started):
    old = finished_job(client, auth, app, MIXED)
    before, count = job_ids(app), len(started.job_ids)
    unknown = ids(old, "unknown")[0]
    for body in ({"itemIds": [unknown]}, {"itemIds": [unknown], "confirmUnknown": False}):
        details = assert_error(resubmit(client, auth, old["id"], body), 422, "not_resubmittable")
        assert list(details["itemIds"]) == [unknown]
        assert "confirmUnknown" in details["itemIds"][unknown][0]
        assert "portal" in details["itemIds"][unknown][0]
    assert_nothing_created(app, started, before, count)
    confirmed = resubmit(client, auth, old["id"], {"itemIds": [unknown], "confirmUnknown": True})
    assert confirmed.status_code == 202


def test_an_id_that_is_not_one_of_the_jobs_items_is_422_naming_it(client, auth, app, started):
    old = finished_job(client, auth, app, MIXED)
    other = finished_job(client, auth, app, ("error",))
    before, count = job_ids(app), len(started.job_ids)
    foreign = other["items"][0]["id"]  # an item, but of another job
    for stranger in (foreign, "no-such-item", old["id"], "ORD-1"):
        body = {"itemIds": [ids(old, "error")[0], stranger]}
        details = assert_error(resubmit(client, auth, old["id"], body), 422, "not_resubmittable")
        assert details == {"itemIds": {stranger: ["not an item of this job"]}}
    assert_nothing_created(app, started, before, count)


def test_every_refused_item_is_named_at_once(client, auth, app, started):
    old = finished_job(client, auth, app, MIXED)
    refused = [ids(old, "success")[1], ids(old, "unknown")[0], "no-such-item"]
    body = {"itemIds": [ids(old, "error")[0], *refused]}
    details = assert_error(resubmit(client, auth, old["id"], body), 422)
    assert set(details["itemIds"]) == set(refused)


def test_an_item_listed_twice_is_422(client, auth, app, started):
    old = finished_job(client, auth, app, MIXED)
    twice = ids(old, "error")[0]
    details = assert_error(resubmit(client, auth, old["id"], {"itemIds": [twice, twice]}), 422)
    assert details == {"itemIds": {twice: ["listed more than once"]}}


@pytest.mark.parametrize(
    ("statuses", "body"),
    [
        (("success", "unknown"), None),
        (("success", "unknown"), {}),
        (("success", "unknown"), {"confirmUnknown": True}),
        (("success", "error"), {"itemIds": []}),
    ],
    ids=["no-error-items", "no-error-items-empty-object", "no-error-items-confirmed", "empty-list"],
)
def test_nothing_to_resubmit_is_422(client, auth, app, started, statuses, body):
    old = finished_job(client, auth, app, statuses)
    before, count = job_ids(app), len(started.job_ids)
    details = assert_error(resubmit(client, auth, old["id"], body), 422, "nothing_to_resubmit")
    assert "itemIds" in details
    assert_nothing_created(app, started, before, count)


def test_more_items_than_max_batch_size_is_422(client, auth, app, started, make_settings):
    old = finished_job(client, auth, app, ("error", "error", "error"))
    smaller = unit_app(
        lambda **kw: make_settings(**{**kw, "max_batch_size": 2}), settings_of(app).database_url
    )
    details = assert_error(resubmit(smaller.test_client(), auth, old["id"]), 422)
    assert "itemIds" in details


# --- the body ---


def test_a_body_that_is_not_json_is_415(client, auth, app, started):
    old = finished_job(client, auth, app, ("error",))
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        answer = client.post(
            f"/api/jobs/{old['id']}/resubmit",
            data="{}",
            headers={**auth, "Content-Type": content_type},
        )
        assert_error(answer, 415)
    assert len(started.job_ids) == 1


MALFORMED = ['{"itemIds": [', "{", '{"priority": NaN}', '"\\ud800"']
BAD_BODIES = [
    ("[]", "_schema"),
    ('"error"', "_schema"),
    ("null", "_schema"),
    ("1", "_schema"),
    ('{"itemIds": "x"}', "itemIds"),
    ('{"itemIds": null}', "itemIds"),
    ('{"itemIds": [1]}', "itemIds"),
    ('{"itemIds": [""]}', "itemIds"),
    ('{"itemIds": [{"id": "x"}]}', "itemIds"),
    ('{"confirmUnknown": "true"}', "confirmUnknown"),
    ('{"confirmUnknown": 1}', "confirmUnknown"),
    ('{"confirmUnknown": null}', "confirmUnknown"),
    ('{"priority": "1"}', "priority"),
    ('{"priority": 1.5}', "priority"),
    ('{"priority": true}', "priority"),
    ('{"priority": null}', "priority"),
    ('{"priority": 101}', "priority"),
    ('{"priority": -101}', "priority"),
    ('{"items": []}', "items"),
]


def test_malformed_json_is_400(client, auth, app, started):
    old = finished_job(client, auth, app, ("error",))
    for raw in MALFORMED:
        assert_error(resubmit(client, auth, old["id"], raw=raw), 400, "malformed_json")
    assert len(started.job_ids) == 1


def test_a_bad_body_is_422_naming_the_field(client, auth, app, started):
    # One job for every body (a test per body would create a PostgreSQL database each).
    old = finished_job(client, auth, app, ("error",))
    for raw, field in BAD_BODIES:
        answer = resubmit(client, auth, old["id"], raw=raw)
        details = assert_error(answer, 422, "validation_failed")
        assert field in details, (raw, details)
    assert len(started.job_ids) == 1


# --- Idempotency-Key, exactly as for submit ---


def test_a_repeat_with_the_same_key_returns_the_same_job_and_starts_nothing(
    client, auth, app, started
):
    old = finished_job(client, auth, app, MIXED)
    key = {"Idempotency-Key": "resubmit-1"}
    first = resubmit(client, auth, old["id"], {"itemIds": ids(old, "error")}, **key)
    again = resubmit(
        client, auth, old["id"], raw=json.dumps({"itemIds": ids(old, "error")}, indent=3), **key
    )
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.get_json() == first.get_json()
    assert again.headers["Location"] == first.headers["Location"]
    assert started.job_ids.count(first.get_json()["id"]) == 1
    assert len(job_ids(app)) == 2


def test_no_body_and_an_empty_object_are_the_same_request(client, auth, app, started):
    old = finished_job(client, auth, app, ("error",))
    first = resubmit(client, auth, old["id"], **{"Idempotency-Key": "k"})
    again = resubmit(client, auth, old["id"], {}, **{"Idempotency-Key": "k"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.get_json()["id"] == first.get_json()["id"]


def test_a_repeat_is_answered_even_after_the_old_job_is_gone(client, auth, app, started):
    old = finished_job(client, auth, app, ("error",))
    first = resubmit(client, auth, old["id"], **{"Idempotency-Key": "k"})
    with session_scope(settings_of(app).database_url) as session:
        session.execute(delete(Job).where(Job.id == old["id"]))
    again = resubmit(client, auth, old["id"], **{"Idempotency-Key": "k"})
    assert again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]


def test_the_same_key_with_a_different_body_is_422(client, auth, app, started):
    old = finished_job(client, auth, app, MIXED)
    key = {"Idempotency-Key": "resubmit-2"}
    first = resubmit(client, auth, old["id"], **key)
    assert first.status_code == 202
    for body in (
        {"itemIds": ids(old, "error")[:1]},
        {"confirmUnknown": False},
        {"priority": 1},
    ):
        details = assert_error(
            resubmit(client, auth, old["id"], body, **key), 422, "idempotency_key_reused"
        )
        assert "Idempotency-Key" in details
    assert len(job_ids(app)) == 2


def test_the_same_key_for_another_jobs_resubmit_is_422(client, auth, app, started):
    one = finished_job(client, auth, app, ("error",))
    two = finished_job(client, auth, app, ("error",))
    assert resubmit(client, auth, one["id"], **{"Idempotency-Key": "k"}).status_code == 202
    answer = resubmit(client, auth, two["id"], **{"Idempotency-Key": "k"})
    assert_error(answer, 422, "idempotency_key_reused")


def test_a_key_used_for_a_submit_then_a_resubmit_is_422_and_the_other_way_round(
    client, auth, app, started
):
    old = finished_job(client, auth, app, ("error",))
    # The key table is shared with submit: the submit came first with this key.
    assert submit(client, auth, [order(7)], **{"Idempotency-Key": "shared"}).status_code == 202
    answer = resubmit(client, auth, old["id"], **{"Idempotency-Key": "shared"})
    assert_error(answer, 422, "idempotency_key_reused")
    # A resubmit first, then a submit with its key.
    assert resubmit(client, auth, old["id"], **{"Idempotency-Key": "second"}).status_code == 202
    answer = submit(client, auth, [order(0)], **{"Idempotency-Key": "second"})
    assert_error(answer, 422, "idempotency_key_reused")


def test_keys_are_scoped_per_token(client, auth, app, started):
    old = finished_job(client, auth, app, ("error",))
    first = resubmit(client, auth, old["id"], **{"Idempotency-Key": "k"})
    other = resubmit(
        client, {"Authorization": "Bearer second-token"}, old["id"], **{"Idempotency-Key": "k"}
    )
    assert (first.status_code, other.status_code) == (202, 202)
    assert first.get_json()["id"] != other.get_json()["id"]


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_the_key_must_be_1_to_255_characters(client, auth, app, started, key):
    old = finished_job(client, auth, app, ("error",))
    details = assert_error(resubmit(client, auth, old["id"], **{"Idempotency-Key": key}), 422)
    assert "Idempotency-Key" in details
    assert len(job_ids(app)) == 1


def test_a_repeat_of_a_refused_request_is_refused_again(client, auth, app, started):
    old = finished_job(client, auth, app, MIXED)
    body = {"itemIds": ids(old, "unknown")}
    for _ in range(2):
        assert_error(
            resubmit(client, auth, old["id"], body, **{"Idempotency-Key": "k"}),
            422,
            "not_resubmittable",
        )
    # The refused request stored no key: the same key works for a valid request.
    body["confirmUnknown"] = True
    assert resubmit(client, auth, old["id"], body, **{"Idempotency-Key": "k"}).status_code == 202


def test_concurrent_repeats_with_one_key_create_one_job(client, auth, app, started):
    old = finished_job(client, auth, app, MIXED)
    state = app.extensions["orchestrator"]
    barrier = threading.Barrier(8)
    outcomes: list[Any] = []

    def one() -> None:
        barrier.wait()
        try:
            result = submission.resubmit_job(
                state.settings,
                state.celery,
                old["id"],
                token="t",
                idempotency_key="race",
                actor=audit.SYSTEM,
            )
            outcomes.append((result.created, result.job.id))
        except submission.IdempotencyInProgress:  # allowed by the contract, as for submit
            outcomes.append(("in progress", None))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    created = [job_id for made, job_id in outcomes if made is True]
    assert len(created) == 1, outcomes
    assert {job_id for made, job_id in outcomes if made is False} <= set(created)
    assert len(outcomes) == 8
    assert len(job_ids(app)) == 2
    assert started.job_ids.count(created[0]) == 1


def test_an_old_job_deleted_while_it_is_resubmitted_is_404_not_500(
    client, auth, app, started, monkeypatch
):
    old = finished_job(client, auth, app, ("error",))
    url = settings_of(app).database_url
    create_job = lifecycle.create_job

    def retention_strikes_first(session, orders, **kwargs):
        with session_scope(url) as other:  # another process deletes the old job
            other.execute(delete(Job).where(Job.id == old["id"]))
        return create_job(session, orders, **kwargs)

    monkeypatch.setattr(lifecycle, "create_job", retention_strikes_first)
    assert_error(resubmit(client, auth, old["id"]), 404, "not_found")
    assert job_ids(app) == set()
    assert len(started.job_ids) == 1  # the old job's own start only


def test_more_item_ids_than_max_batch_size_is_422_and_echoes_none(client, auth, app, started):
    old = finished_job(client, auth, app, MIXED)
    limit = settings_of(app).max_batch_size
    before, count = job_ids(app), len(started.job_ids)
    body = {"itemIds": [f"forged-{n:05d}" for n in range(limit + 1)]}
    details = assert_error(resubmit(client, auth, old["id"], body), 422, "validation_failed")
    assert details == {"itemIds": [f"must name 1 to {limit} items (MAX_BATCH_SIZE)"]}
    assert_nothing_created(app, started, before, count)


def test_a_refusal_names_at_most_20_items_and_counts_them_all(client, auth, app, started):
    old = finished_job(client, auth, app, MIXED)
    limit = settings_of(app).max_batch_size
    strangers = [f"forged-{n:05d}" for n in range(limit)]
    details = assert_error(
        resubmit(client, auth, old["id"], {"itemIds": strangers}), 422, "not_resubmittable"
    )
    assert list(details["itemIds"]) == strangers[:20]
    assert details["refusedCount"] == limit
