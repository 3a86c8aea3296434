"""``webapp.library.resubmit_job`` inside a host app's context, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from webapp.library import JobNotFinal, JobNotFound, ResubmitRefused, resubmit_job, submit_job

from ..conftest import unit_app
from .test_jobs import order
from .test_jobs_resubmit import MIXED, finished_job, ids, stored_orders


@pytest.fixture
def app(database_url, make_settings, fake_redis, started):
    return unit_app(make_settings, database_url)


def test_resubmit_job_takes_the_error_items_and_shows_the_new_job(client, auth, app, started):
    old = finished_job(client, auth, app, MIXED)
    with app.app_context():
        new = resubmit_job(old["id"])
    assert new["resubmitOf"] == old["id"]
    assert new["status"] == "pending"
    assert [item["orderId"] for item in new["items"]] == ["ORD-1", "ORD-3"]
    assert started.job_ids[-1] == new["id"]
    assert stored_orders(app, new["id"]) == [
        pair for pair in stored_orders(app, old["id"]) if pair[0] in ("ORD-1", "ORD-3")
    ]


def test_resubmit_job_with_confirmed_unknown_items_and_a_key(client, auth, app, started):
    old = finished_job(client, auth, app, MIXED)
    unknown = ids(old, "unknown")
    with app.app_context():
        first = resubmit_job(old["id"], unknown, confirm_unknown=True, idempotency_key="r-1")
        again = resubmit_job(old["id"], unknown, confirm_unknown=True, idempotency_key="r-1")
    assert [item["orderId"] for item in first["items"]] == ["ORD-2"]
    assert again["id"] == first["id"]
    assert started.job_ids.count(first["id"]) == 1


def test_resubmit_job_refuses_as_the_api_does(client, auth, app, started):
    old = finished_job(client, auth, app, MIXED)
    with app.app_context():
        with pytest.raises(ResubmitRefused) as refused:
            resubmit_job(old["id"], [ids(old, "unknown")[0], ids(old, "success")[0]])
        assert set(refused.value.details["itemIds"]) == {
            ids(old, "unknown")[0],
            ids(old, "success")[0],
        }
        with pytest.raises(ResubmitRefused) as refused:
            resubmit_job(old["id"], [7])  # type: ignore[list-item]
        assert "itemIds" in refused.value.details
        with pytest.raises(JobNotFound):
            resubmit_job("no-such-job")
        pending = submit_job([order(1)])
        with pytest.raises(JobNotFinal):
            resubmit_job(pending["id"])
