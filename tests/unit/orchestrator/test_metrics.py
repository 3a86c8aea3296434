"""The worker's counters: failures by reason and report → final latency, counted after commit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from orchestrator import lifecycle, metrics
from orchestrator.db import session_factory, session_scope
from orchestrator.models import Job
from orchestrator.robot_events import BATCH_COMPLETED, BATCH_FAILED, apply_event


def sample(name: str, **labels: str) -> float:
    value = metrics._registry(metrics._worker).get_sample_value(name, labels)
    return value or 0.0


def failures(reason: str) -> float:
    return sample("orchestrator_jobs_failed_total", reason=reason)


def dispatched(url: str, settings) -> str:
    with session_scope(url) as session:
        job_id = lifecycle.create_job(session, [{"orderId": "A", "pedidoInput": {}}]).id
    with session_scope(url) as session:
        lifecycle.claim_dispatch(session, job_id, settings)
    return job_id


def test_every_reason_class_is_present_from_zero() -> None:
    registry = metrics._registry(metrics._worker)
    for reason in metrics.FAILURE_KINDS:
        assert registry.get_sample_value("orchestrator_jobs_failed_total", {"reason": reason}) >= 0
    for result in metrics.DISPATCH_RESULTS:
        assert registry.get_sample_value("orchestrator_dispatches_total", {"result": result}) >= 0


def test_a_failure_is_counted_by_its_kind_once_committed(database_url, make_settings) -> None:
    settings = make_settings()
    job_id = dispatched(database_url, settings)
    before = failures("refused")
    with session_scope(database_url) as session:
        lifecycle.finalize(session, job_id, lifecycle.Failure("no", False, "refused"))
        assert failures("refused") == before  # not before the commit
    assert failures("refused") == before + 1


def test_a_rolled_back_close_is_not_counted(database_url, make_settings) -> None:
    settings = make_settings()
    job_id = dispatched(database_url, settings)
    before = failures("unexpected")
    with session_factory(database_url)() as session:
        lifecycle.finalize(session, job_id, lifecycle.Failure("bug", None))
        session.rollback()
    assert failures("unexpected") == before
    with session_scope(database_url) as session:
        assert session.get(Job, job_id).status == "processing"


def test_deadline_and_robot_reports_are_their_own_classes(database_url, make_settings) -> None:
    settings = make_settings()
    overdue, reported_failed, reported_done = (dispatched(database_url, settings) for _ in range(3))
    with session_scope(database_url) as session:
        session.execute(
            update(Job)
            .where(Job.id == overdue)
            .values(deadline=datetime.now(UTC) - timedelta(seconds=1))
        )
        apply_event(session, reported_failed, "m1", BATCH_FAILED, {"error": "portal down"})
        apply_event(session, reported_done, "m2", BATCH_COMPLETED, {})
    deadline, robot = failures("deadline"), failures("robot_reported")
    woken = sample("orchestrator_report_to_final_seconds_count")

    for job_id in (overdue, reported_failed, reported_done):
        with session_scope(database_url) as session:
            lifecycle.finalize(session, job_id)

    assert failures("deadline") == deadline + 1
    assert failures("robot_reported") == robot + 1
    # Two reports closed their jobs: two wake latencies, each a few milliseconds here.
    assert sample("orchestrator_report_to_final_seconds_count") == woken + 2
    assert sample("orchestrator_report_to_final_seconds_bucket", le="120.0") >= 2
