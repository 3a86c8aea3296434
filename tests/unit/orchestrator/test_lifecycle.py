"""Guarded transitions on the migrated schema, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from orchestrator import audit, lifecycle
from orchestrator.db import session_factory, session_scope
from orchestrator.models import Item, Job
from orchestrator.robot_events import BATCH_COMPLETED, BATCH_FAILED, apply_event


def orders(count: int) -> list[dict]:
    return [{"orderId": f"ORD-{n}", "pedidoInput": {"n": n}} for n in range(count)]


def new_job(url: str, count: int = 2) -> str:
    with session_scope(url) as session:
        return lifecycle.create_job(session, orders(count)).id


def job_row(url: str, job_id: str) -> Job:
    with session_scope(url) as session:
        return lifecycle.get_job(session, job_id)


def item_statuses(url: str, job_id: str) -> list[str]:
    with session_scope(url) as session:
        return list(
            session.scalars(
                select(Item.status).where(Item.job_id == job_id).order_by(Item.position)
            )
        )


def claim(url: str, job_id: str, settings) -> lifecycle.DispatchTicket | None:
    with session_scope(url) as session:
        return lifecycle.claim_dispatch(session, job_id, settings)


def report(url: str, job_id: str, event_type: str, data: dict | None = None) -> None:
    with session_scope(url) as session:
        apply_event(session, job_id, f"msg-{event_type}", event_type, data or {})


def test_deadline_grows_with_the_batch(make_settings) -> None:
    settings = make_settings(robot_seconds_per_item=30.0, robot_deadline_margin_seconds=300.0)
    start = datetime(2026, 1, 1, tzinfo=UTC)

    assert lifecycle.compute_deadline(start, 200, settings) == start + timedelta(seconds=6300)
    half = make_settings(robot_seconds_per_item=0.5, robot_deadline_margin_seconds=1.5)
    assert lifecycle.compute_deadline(start, 3, half) == start + timedelta(seconds=3)


def test_new_job_is_pending_with_pending_items(database_url) -> None:
    job_id = new_job(database_url, 3)

    job = job_row(database_url, job_id)
    assert (job.status, job.item_count, job.dispatched_at, job.deadline) == (
        "pending",
        3,
        None,
        None,
    )
    assert item_statuses(database_url, job_id) == ["pending"] * 3


def test_dispatch_is_claimed_once(database_url, make_settings) -> None:
    settings = make_settings()
    job_id = new_job(database_url)
    with session_scope(database_url) as session:
        assert lifecycle.mark_processing(session, job_id) is True

    ticket = claim(database_url, job_id, settings)
    second = claim(database_url, job_id, settings)

    assert ticket is not None
    assert [i["orderId"] for i in ticket.items] == ["ORD-0", "ORD-1"]
    assert second is None
    job = job_row(database_url, job_id)
    assert job.status == "processing"
    assert job.deadline == ticket.deadline
    assert item_statuses(database_url, job_id) == ["processing", "processing"]
    with session_scope(database_url) as session:
        assert lifecycle.mark_processing(session, job_id) is False  # a redelivered chain stops


def test_concurrent_claims_let_exactly_one_through(database_url, make_settings) -> None:
    settings = make_settings()
    job_id = new_job(database_url)
    barrier = threading.Barrier(4)
    results: list[object] = []

    def racer() -> None:
        barrier.wait()
        results.append(claim(database_url, job_id, settings))

    threads = [threading.Thread(target=racer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(results) == 4
    assert sum(ticket is not None for ticket in results) == 1


def test_report_wins_over_a_dispatch_failure(database_url, make_settings) -> None:
    job_id = new_job(database_url)
    claim(database_url, job_id, make_settings())
    report(database_url, job_id, BATCH_COMPLETED)

    with session_scope(database_url) as session:
        status = lifecycle.finalize(session, job_id, lifecycle.Failure("refused", False))

    assert status == "completed"
    assert job_row(database_url, job_id).error is None
    assert item_statuses(database_url, job_id) == ["unknown", "unknown"]


def test_batch_failed_report_fails_with_the_robots_reason(database_url, make_settings) -> None:
    job_id = new_job(database_url)
    claim(database_url, job_id, make_settings())
    report(database_url, job_id, BATCH_FAILED, {"error": "portal unavailable"})

    with session_scope(database_url) as session:
        assert lifecycle.finalize(session, job_id) == "failed"

    assert "portal unavailable" in job_row(database_url, job_id).error


def test_refused_dispatch_fails_with_items_error(database_url, make_settings) -> None:
    job_id = new_job(database_url)
    claim(database_url, job_id, make_settings())

    with session_scope(database_url) as session:
        lifecycle.finalize(session, job_id, lifecycle.Failure("HTTP 400", robot_may_have_it=False))

    assert job_row(database_url, job_id).status == "failed"
    assert item_statuses(database_url, job_id) == ["error", "error"]


def test_unexpected_error_after_dispatch_began_leaves_items_unknown(
    database_url, make_settings
) -> None:
    before = new_job(database_url)
    after = new_job(database_url)
    claim(database_url, after, make_settings())

    with session_scope(database_url) as session:
        lifecycle.finalize(session, before, lifecycle.Failure("boom"))
        lifecycle.finalize(session, after, lifecycle.Failure("boom"))

    assert item_statuses(database_url, before) == ["error", "error"]
    assert item_statuses(database_url, after) == ["unknown", "unknown"]


def test_waiting_job_is_left_alone_until_its_deadline(database_url, make_settings) -> None:
    job_id = new_job(database_url)
    claim(database_url, job_id, make_settings())

    with session_scope(database_url) as session:
        assert lifecycle.finalize(session, job_id) is None
    assert job_row(database_url, job_id).status == "processing"

    with session_scope(database_url) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(deadline=datetime.now(UTC) - timedelta(seconds=1))
        )
    with session_scope(database_url) as session:
        assert lifecycle.finalize(session, job_id) == "failed"
    assert "deadline" in job_row(database_url, job_id).error
    assert item_statuses(database_url, job_id) == ["unknown", "unknown"]


def test_first_final_state_wins(database_url, make_settings) -> None:
    job_id = new_job(database_url)
    claim(database_url, job_id, make_settings())
    with session_scope(database_url) as session:
        lifecycle.finalize(session, job_id, lifecycle.Failure("first"))

    report(database_url, job_id, BATCH_COMPLETED)
    with session_scope(database_url) as session:
        assert lifecycle.finalize(session, job_id) is None
        with pytest.raises(lifecycle.TransitionRefused):
            lifecycle.cancel(session, job_id, actor=audit.SYSTEM)

    job = job_row(database_url, job_id)
    assert (job.status, job.error, job.report) == ("failed", "first", None)


def test_cancel_before_dispatch_blocks_the_claim(database_url, make_settings) -> None:
    job_id = new_job(database_url)
    with session_scope(database_url) as session:
        assert lifecycle.cancel(session, job_id, actor=audit.SYSTEM).status == "cancelled"

    assert claim(database_url, job_id, make_settings()) is None
    assert item_statuses(database_url, job_id) == ["error", "error"]


def test_cancel_after_dispatch_marks_items_unknown(database_url, make_settings) -> None:
    job_id = new_job(database_url)
    claim(database_url, job_id, make_settings())

    with session_scope(database_url) as session:
        lifecycle.cancel(session, job_id, actor=audit.SYSTEM)

    assert item_statuses(database_url, job_id) == ["unknown", "unknown"]


def test_unknown_job_is_reported(database_url, make_settings) -> None:
    session = session_factory(database_url)()
    try:
        with pytest.raises(lifecycle.JobNotFound):
            lifecycle.get_job(session, "no-such-job")
        with pytest.raises(lifecycle.JobNotFound):
            lifecycle.claim_dispatch(session, "no-such-job", make_settings())
    finally:
        session.close()


@pytest.mark.parametrize(
    ("event_type", "data", "status", "error"),
    [
        (
            BATCH_COMPLETED,
            {"items": [{"itemId": None, "status": "success", "trackingNumber": "CO9"}]},
            "completed",
            None,
        ),
        (
            BATCH_FAILED,
            {"error": "portal down"},
            "failed",
            "the robot reported the batch failed: portal down",
        ),
        (BATCH_FAILED, {}, "failed", "the robot reported the batch failed: no reason"),
    ],
    ids=["completed", "failed", "failed-without-reason"],
)
def test_finalize_closes_a_reported_job_from_its_report(
    database_url, make_settings, event_type, data, status, error
) -> None:
    """The wake-up's finalize: a recorded report closes the job, a second finalize is a no-op."""
    job_id = new_job(database_url, 3)
    ticket = claim(database_url, job_id, make_settings())
    assert ticket is not None
    if data.get("items"):
        data = {"items": [{**data["items"][0], "itemId": ticket.items[0]["itemId"]}]}
    report(database_url, job_id, event_type, data)
    with session_scope(database_url) as session:
        result = lifecycle.finalize(session, job_id)
    with session_scope(database_url) as session:
        assert lifecycle.finalize(session, job_id) is None  # closed already: nothing changes
    job = job_row(database_url, job_id)
    assert job.finished_at is not None
    first = "success" if event_type == BATCH_COMPLETED else "unknown"
    assert (result, job.status, job.error, item_statuses(database_url, job_id)) == (
        status,
        status,
        error,
        [first, "unknown", "unknown"],
    )
