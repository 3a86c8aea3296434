"""Housekeeping finds, from the database alone, what a crash or a lost Redis left behind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session

from orchestrator import housekeeping, lifecycle, notifications
from orchestrator.db import session_scope
from orchestrator.models import IdempotencyKey, Job
from orchestrator.robot_events import BATCH_COMPLETED, apply_event

ORDERS = [{"orderId": "A", "pedidoInput": {}}]


def make_job(url: str) -> str:
    with session_scope(url) as session:
        return lifecycle.create_job(session, ORDERS).id


def age(url: str, job_id: str, **columns: datetime) -> None:
    with session_scope(url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(**columns))


def test_reported_and_overdue_jobs_are_due_and_waiting_ones_are_not(
    database_url, make_settings
) -> None:
    settings = make_settings()
    reported, overdue, waiting, pending = (make_job(database_url) for _ in range(4))
    for job_id in (reported, overdue, waiting):
        with session_scope(database_url) as session:
            lifecycle.claim_dispatch(session, job_id, settings)
    with session_scope(database_url) as session:
        apply_event(session, reported, "msg-1", BATCH_COMPLETED, {})
    age(database_url, overdue, deadline=datetime.now(UTC) - timedelta(seconds=5))

    with session_scope(database_url) as session:
        due = housekeeping.jobs_to_settle(session)

    assert sorted(due) == sorted([reported, overdue])
    assert pending not in due and waiting not in due


def test_stalled_jobs_are_claimed_once_per_period(database_url, make_settings) -> None:
    fresh = make_job(database_url)
    stalled = make_job(database_url)
    dispatched = make_job(database_url)
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    age(database_url, stalled, created_at=long_ago)
    age(database_url, dispatched, created_at=long_ago)
    with session_scope(database_url) as session:
        lifecycle.claim_dispatch(session, dispatched, make_settings())

    with session_scope(database_url) as session:
        first = housekeeping.claim_stalled(session, after_seconds=120)
    with session_scope(database_url) as session:
        second = housekeeping.claim_stalled(session, after_seconds=120)

    assert first == [stalled]
    assert second == []  # kicked just now: not again until another period passed
    assert fresh not in first


def test_old_idempotency_keys_are_purged(database_url) -> None:
    job_id = make_job(database_url)
    with session_scope(database_url) as session:
        session.add_all(
            [
                IdempotencyKey(
                    token_digest="t",
                    key="old",
                    request_digest="d",
                    job_id=job_id,
                    created_at=datetime.now(UTC) - timedelta(hours=49),
                ),
                IdempotencyKey(
                    token_digest="t",
                    key="new",
                    request_digest="d",
                    job_id=job_id,
                    created_at=datetime.now(UTC) - timedelta(hours=23),
                ),
            ]
        )
    with session_scope(database_url) as session:
        assert housekeeping.purge_idempotency_keys(session) == 1


# --- retention (CONTRACT §9) ---


def finished_job(url: str, settings, days_ago: float, events: int = 2) -> str:
    """A completed job with items, robot events and an idempotency key, final ``days_ago``."""
    job_id = make_job(url)
    with session_scope(url) as session:
        lifecycle.claim_dispatch(session, job_id, settings)
    with session_scope(url) as session:
        for n in range(events - 1):
            apply_event(session, job_id, f"msg-hb-{n}", BATCH_COMPLETED, {})
        apply_event(session, job_id, "msg-done", BATCH_COMPLETED, {})
        session.add(IdempotencyKey(token_digest="t", key=job_id, request_digest="d", job_id=job_id))
    with session_scope(url) as session:
        assert lifecycle.finalize(session, job_id) == "completed"
    age(url, job_id, finished_at=datetime.now(UTC) - timedelta(days=days_ago))
    return job_id


def rows_of(url: str, job_id: str) -> dict[str, int]:
    with session_scope(url) as session:
        counts = {"jobs": session.scalar(select(func.count()).where(Job.id == job_id))}
        for name, model in housekeeping.JOB_ROWS:
            counts[name] = session.scalar(
                select(func.count()).select_from(model).where(model.job_id == job_id)
            )
    return counts


def test_retention_deletes_only_jobs_final_for_longer_than_the_limit(
    database_url, make_settings
) -> None:
    settings = make_settings()
    # The outbox on: each finished job has its job.finished notification, deleted with it.
    notifications.init_outbox(
        make_settings(
            database_url=database_url,
            notify_url="http://127.0.0.1:9/hooks",
            notify_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
        lambda job_id: None,
    )
    old = finished_job(database_url, settings, days_ago=3, events=3)
    recent = finished_job(database_url, settings, days_ago=1)
    ancient_open = make_job(database_url)  # open jobs are never deleted, however old
    age(database_url, ancient_open, created_at=datetime.now(UTC) - timedelta(days=30))
    ancient_dispatched = make_job(database_url)
    with session_scope(database_url) as session:
        lifecycle.claim_dispatch(session, ancient_dispatched, settings)
    age(database_url, ancient_dispatched, created_at=datetime.now(UTC) - timedelta(days=30))
    assert rows_of(database_url, old) == {
        "jobs": 1,
        "items": 1,
        "events": 3,
        "notifications": 1,
    }

    before = {job: rows_of(database_url, job) for job in (recent, ancient_open, ancient_dispatched)}
    old_rows = rows_of(database_url, old)
    removed = housekeeping.prune_finished(database_url, 2)

    assert removed == {**old_rows, "batches": 1}
    assert rows_of(database_url, old) == {name: 0 for name in old_rows}
    assert {job: rows_of(database_url, job) for job in before} == before


def test_dry_run_counts_and_deletes_nothing(database_url, make_settings) -> None:
    settings = make_settings()
    due = [finished_job(database_url, settings, days_ago=10) for _ in range(3)]
    finished_job(database_url, settings, days_ago=0.1)
    expected = {
        name: sum(rows_of(database_url, j)[name] for j in due)
        for name in rows_of(database_url, due[0])
    }

    counted = housekeeping.prune_finished(database_url, 7, dry_run=True)

    assert counted == {**expected, "batches": 0}
    assert all(rows_of(database_url, j)["jobs"] == 1 for j in due)
    assert housekeeping.prune_finished(database_url, 7) == {**expected, "batches": 1}


def test_retention_works_in_bounded_batches_each_its_own_transaction(
    database_url, make_settings, monkeypatch
) -> None:
    settings = make_settings()
    due = [finished_job(database_url, settings, days_ago=5, events=1) for _ in range(5)]
    per_transaction: list[int] = []
    real = housekeeping._delete_batch

    def recording(session, cutoff, batch_size):
        seen, removed = real(session, cutoff, batch_size)
        per_transaction.append(removed.get("jobs", 0))
        return seen, removed

    commits: list[int] = []
    listener = lambda session: commits.append(1)  # noqa: E731
    event.listen(Session, "after_commit", listener)
    monkeypatch.setattr(housekeeping, "_delete_batch", recording)
    try:
        first = housekeeping.prune_finished(database_url, 1, batch_size=2, max_batches=2)
        rest = housekeeping.prune_finished(database_url, 1, batch_size=2)
    finally:
        event.remove(Session, "after_commit", listener)

    assert (first["jobs"], first["batches"]) == (4, 2)  # at most max_batches per call
    assert (rest["jobs"], rest["batches"]) == (1, 1)
    assert per_transaction == [2, 2, 1]
    assert len(commits) == 3  # one transaction per batch
    assert all(rows_of(database_url, j)["jobs"] == 0 for j in due)


def test_retention_keeps_the_idempotency_key_of_a_deleted_job(database_url, make_settings) -> None:
    """The key outlives its job (CONTRACT §3): its job_id becomes NULL, its own expiry stays."""
    job_id = finished_job(database_url, make_settings(), days_ago=3)

    assert housekeeping.prune_finished(database_url, 1)["jobs"] == 1

    with session_scope(database_url) as session:
        key = session.scalar(select(IdempotencyKey).where(IdempotencyKey.key == job_id))
        assert key is not None and key.job_id is None
        assert session.get(Job, job_id) is None
        assert housekeeping.purge_idempotency_keys(session) == 0  # younger than its lifetime
        key.created_at = datetime.now(UTC) - housekeeping.IDEMPOTENCY_KEY_LIFETIME
    with session_scope(database_url) as session:
        assert housekeeping.purge_idempotency_keys(session) == 1


def test_a_deleted_job_answers_404(client, auth, app, make_settings) -> None:
    url = app.extensions["orchestrator"].settings.database_url
    job_id = finished_job(url, make_settings(), days_ago=2)
    assert client.get(f"/api/jobs/{job_id}", headers=auth).status_code == 200
    housekeeping.prune_finished(url, 1)
    answer = client.get(f"/api/jobs/{job_id}", headers=auth)
    assert answer.status_code == 404
    assert answer.get_json()["error"]["code"] == "not_found"


def test_a_parked_job_is_not_stalled_the_hand_off_starts_it(database_url, make_settings) -> None:
    settings = make_settings(robot_max_active_jobs=1)
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    active, parked = make_job(database_url), make_job(database_url)
    age(database_url, active, created_at=long_ago - timedelta(minutes=1))
    age(database_url, parked, created_at=long_ago)
    for job_id in (active, parked):
        with session_scope(database_url) as session:
            lifecycle.claim_dispatch(session, job_id, settings)

    with session_scope(database_url) as session:
        assert housekeeping.claim_stalled(session, after_seconds=120) == []
