"""``webapp.library`` submit_job and resubmit_job inside a host app's context, on SQLite and
PostgreSQL."""

from __future__ import annotations

import pytest

from webapp.library import (
    InvalidOrders,
    JobNotFinal,
    JobNotFound,
    ResubmitRefused,
    resubmit_job,
    submit_job,
)

from ..conftest import API_TOKEN, unit_app
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


@pytest.fixture
def two_robots(database_url, make_settings, fake_redis, started):
    from orchestrator.robots import RobotSettings

    several = tuple(RobotSettings(name=n, url="http://127.0.0.1:9") for n in ("north", "south"))

    def settings(**base):
        return make_settings(**base, several_robots=several)

    return unit_app(settings, database_url)


def test_submit_job_takes_the_robot_and_refuses_a_missing_or_unknown_one(two_robots, started):
    with two_robots.app_context():
        job = submit_job([order(1)], robot="south")
        assert job["robot"] == "south" and job["queuePosition"] == 1
        assert started.job_ids == [job["id"]]
        for robot in (None, "nowhere"):
            with pytest.raises(InvalidOrders) as refused:
                submit_job([order(2)], robot=robot)
            assert list(refused.value.details) == ["robot"]
    assert started.job_ids == [job["id"]]  # nothing else was created


def test_submit_job_with_one_robot_needs_no_robot(app):
    with app.app_context():
        assert submit_job([order(1)])["robot"] == "default"
        with pytest.raises(InvalidOrders):
            submit_job([order(2)], robot="nowhere")


def test_resubmit_job_to_another_robot(two_robots, started):
    with two_robots.app_context():
        old = submit_job([order(1), order(2)], robot="south")
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    cancelled = two_robots.test_client().post(f"/api/jobs/{old['id']}/cancel", headers=headers)
    assert cancelled.status_code == 200  # never dispatched: its items are error
    with two_robots.app_context():
        with pytest.raises(ResubmitRefused) as refused:
            resubmit_job(old["id"], robot="nowhere")
        assert list(refused.value.details) == ["robot"]
        new = resubmit_job(old["id"], robot="north")
        same = resubmit_job(old["id"], idempotency_key="again")
    assert (new["robot"], new["resubmitOf"]) == ("north", old["id"])
    assert same["robot"] == "south"  # by default the old job's robot
