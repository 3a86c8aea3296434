"""Capacity, order, pause, failures in a row and silence (CONTRACT §7), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update

from orchestrator import audit, dispatch_control, housekeeping, lifecycle, queries
from orchestrator.db import connect, session_scope
from orchestrator.models import Event, Item, Job
from orchestrator.robot_events import HEARTBEAT, ITEM_STARTED, Outcome, apply_event


def orders(count: int = 1) -> list[dict]:
    return [{"orderId": f"ORD-{n}", "pedidoInput": {"n": n}} for n in range(count)]


def new_job(
    url: str, priority: int = 0, age_seconds: float = 0.0, items: int = 1, robot: str = "default"
) -> str:
    with session_scope(url) as session:
        job = lifecycle.create_job(session, orders(items), priority=priority, robot=robot)
        job.created_at = datetime.now(UTC) - timedelta(seconds=age_seconds)
        return job.id


def claim(url: str, job_id: str, settings) -> lifecycle.DispatchTicket | None:
    with session_scope(url) as session:
        return lifecycle.claim_dispatch(session, job_id, settings)


def job_row(url: str, job_id: str) -> Job:
    with session_scope(url) as session:
        return lifecycle.get_job(session, job_id)


def state(url: str, settings) -> dispatch_control.DispatchState:
    with session_scope(url) as session:
        return dispatch_control.read_state(session, settings)


def fail(url: str, job_id: str, settings, reason: str = "refused") -> None:
    with session_scope(url) as session:
        lifecycle.finalize(session, job_id, lifecycle.Failure(reason))


def next_waiting(url: str, settings) -> list[str]:
    with session_scope(url) as session:
        return lifecycle.next_waiting(session, settings)


def test_claim_refuses_beyond_the_limit_and_the_job_stays_pending(
    database_url, make_settings
) -> None:
    settings = make_settings(robot_max_active_jobs=2)
    jobs = [new_job(database_url, age_seconds=10 - n) for n in range(3)]

    tickets = [claim(database_url, job_id, settings) for job_id in jobs]

    assert [t is not None for t in tickets] == [True, True, False]
    third = job_row(database_url, jobs[2])
    assert (third.status, third.dispatched_at, third.deadline) == ("pending", None, None)
    assert third.parked_at is not None
    shown = state(database_url, settings)
    assert (shown.active_jobs, shown.queued_jobs, shown.max_active_jobs) == (2, 1, 2)


def test_a_final_job_frees_its_slot_and_an_unknown_outcome_keeps_it(
    database_url, make_settings
) -> None:
    settings = make_settings(robot_max_active_jobs=1)
    first, second = new_job(database_url, age_seconds=5), new_job(database_url)
    # Claimed, outcome never recorded (a crash mid-request): active until its deadline.
    assert claim(database_url, first, settings) is not None
    assert claim(database_url, second, settings) is None
    with session_scope(database_url) as session:
        session.execute(
            update(Job)
            .where(Job.id == first)
            .values(deadline=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert claim(database_url, second, settings) is None  # still open: still active
    with session_scope(database_url) as session:
        assert lifecycle.finalize(session, first) == "failed"  # the deadline settles it

    assert claim(database_url, second, settings) is not None


def test_no_limit_dispatches_everything(database_url, make_settings) -> None:
    settings = make_settings()
    jobs = [new_job(database_url) for _ in range(5)]

    assert all(claim(database_url, job_id, settings) for job_id in jobs)
    assert state(database_url, settings).max_active_jobs is None


def test_mark_leaves_a_waiting_job_pending(database_url) -> None:
    job_id = new_job(database_url)
    with session_scope(database_url) as session:
        assert lifecycle.mark_processing(session, job_id) is True
    job = job_row(database_url, job_id)
    assert job.status == "pending" and job.marked_at is not None


def test_claim_follows_priority_then_age_whatever_order_the_chains_come_in(
    database_url, make_settings
) -> None:
    settings = make_settings(robot_max_active_jobs=1)
    old_low = new_job(database_url, priority=0, age_seconds=30)
    new_high = new_job(database_url, priority=5, age_seconds=1)
    older_same = new_job(database_url, priority=0, age_seconds=60)

    assert claim(database_url, old_low, settings) is None  # new_high comes first
    assert claim(database_url, older_same, settings) is None
    assert claim(database_url, new_high, settings) is not None
    fail(database_url, new_high, settings)
    assert claim(database_url, old_low, settings) is None  # older_same is older
    assert claim(database_url, older_same, settings) is not None


def test_claim_refuses_while_paused_and_goes_after_resume(database_url, make_settings) -> None:
    settings = make_settings()
    job_id = new_job(database_url)
    with session_scope(database_url) as session:
        dispatch_control.pause(session, settings, "portal maintenance")

    assert claim(database_url, job_id, settings) is None
    assert job_row(database_url, job_id).status == "pending"
    with session_scope(database_url) as session:
        resumed = dispatch_control.resume(session, settings)
    assert resumed.paused is False and resumed.paused_reason is None
    assert claim(database_url, job_id, settings) is not None


def test_concurrent_claims_never_exceed_the_limit(database_url, make_settings) -> None:
    """TRAPS "Capacity under concurrency": many connections claim at once, K get through."""
    settings = make_settings(robot_max_active_jobs=3)
    for _round in range(3):
        jobs = [new_job(database_url) for _ in range(10)]
        barrier = threading.Barrier(len(jobs))
        results: list[object] = []

        def racer(
            job_id: str, barrier: threading.Barrier = barrier, results: list = results
        ) -> None:
            barrier.wait()
            results.append(claim(database_url, job_id, settings))

        threads = [threading.Thread(target=racer, args=(job_id,)) for job_id in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

        assert len(results) == 10
        assert sum(ticket is not None for ticket in results) == 3
        assert state(database_url, settings).active_jobs == 3
        for ticket in results:
            if ticket is not None:
                fail(database_url, ticket.job_id, settings)
        # What is left waits; clear it for the next round.
        for job_id in jobs:
            with session_scope(database_url) as session:
                if lifecycle.get_job(session, job_id).status == "pending":
                    lifecycle.cancel(session, job_id, actor=audit.SYSTEM)


def test_hand_off_takes_the_first_parked_jobs_up_to_the_free_slots(
    database_url, make_settings
) -> None:
    settings = make_settings(robot_max_active_jobs=2)
    active = [new_job(database_url, age_seconds=100 - n) for n in range(2)]
    waiting = [new_job(database_url, age_seconds=50 - n) for n in range(3)]
    for job_id in active + waiting:
        claim(database_url, job_id, settings)
    assert next_waiting(database_url, settings) == []  # full: nothing to start

    fail(database_url, active[0], settings)

    assert next_waiting(database_url, settings) == [waiting[0]]
    assert next_waiting(database_url, settings) == []  # handed off once, no longer parked
    assert claim(database_url, waiting[1], settings) is None  # the slot is waiting[0]'s
    assert claim(database_url, waiting[0], settings) is not None


def test_hand_off_skips_a_job_whose_chain_is_on_its_way(database_url, make_settings) -> None:
    settings = make_settings(robot_max_active_jobs=1)
    active = new_job(database_url, age_seconds=10)
    claim(database_url, active, settings)
    in_flight = new_job(database_url, age_seconds=5)  # never claimed: its chain is coming
    fail(database_url, active, settings)

    assert next_waiting(database_url, settings) == []
    assert job_row(database_url, in_flight).parked_at is None


def test_hand_off_does_nothing_while_paused_and_everything_parked_on_resume_without_limit(
    database_url, make_settings
) -> None:
    settings = make_settings()
    with session_scope(database_url) as session:
        dispatch_control.pause(session, settings, "maintenance")
    jobs = [new_job(database_url, age_seconds=10 - n) for n in range(3)]
    for job_id in jobs:
        assert claim(database_url, job_id, settings) is None
    assert next_waiting(database_url, settings) == []

    with session_scope(database_url) as session:
        dispatch_control.resume(session, settings)

    assert next_waiting(database_url, settings) == jobs


def test_pausing_again_replaces_reason_and_until(database_url, make_settings) -> None:
    settings = make_settings()
    until = datetime.now(UTC) + timedelta(hours=1)
    with session_scope(database_url) as session:
        dispatch_control.pause(session, settings, "first", until)
    with session_scope(database_url) as session:
        again = dispatch_control.pause(session, settings, "second")

    assert (again.paused, again.paused_reason, again.paused_until, again.paused_by) == (
        True,
        "second",
        None,
        "api",
    )


def test_a_timed_pause_ends_when_due(database_url, make_settings) -> None:
    settings = make_settings()
    with session_scope(database_url) as session:
        dispatch_control.pause(
            session, settings, "soon over", datetime.now(UTC) + timedelta(hours=1)
        )
    with session_scope(database_url) as session:
        assert dispatch_control.resume_if_due(session) is False
    with session_scope(database_url) as session:
        session.execute(
            update(dispatch_control.DispatchControl).values(
                paused_until=datetime.now(UTC) - timedelta(seconds=1)
            )
        )
    with session_scope(database_url) as session:
        assert dispatch_control.resume_if_due(session) is True
    assert state(database_url, settings).paused is False


def dispatch_fails(url: str, settings, status_code: int | None, reason: str) -> str:
    job_id = new_job(url)
    assert claim(url, job_id, settings) is not None
    with session_scope(url) as session:
        lifecycle.fail_dispatch(session, settings, job_id, reason, False, status_code)
    return job_id


def test_dispatching_pauses_after_failures_in_a_row_naming_the_last(
    database_url, make_settings
) -> None:
    settings = make_settings(robot_pause_after_failures=3)
    dispatch_fails(database_url, settings, 500, "the robot refused the job with HTTP 500")
    dispatch_fails(database_url, settings, None, "could not connect to the robot at x:1")
    assert state(database_url, settings).failures_in_a_row == 2
    assert state(database_url, settings).paused is False

    last = dispatch_fails(database_url, settings, 503, "the robot's gateway answered HTTP 503")

    shown = state(database_url, settings)
    assert (shown.paused, shown.paused_by, shown.failures_in_a_row) == (True, "failures", 3)
    assert "HTTP 503" in (shown.paused_reason or "")
    job = job_row(database_url, last)
    assert job.status == "failed" and job.dispatch_result == "refused"
    behind = new_job(database_url)
    assert claim(database_url, behind, settings) is None  # waits for a person to resume
    with session_scope(database_url) as session:
        assert dispatch_control.resume(session, settings).failures_in_a_row == 0


def test_a_4xx_is_not_counted_and_an_accepted_dispatch_resets_the_count(
    database_url, make_settings
) -> None:
    settings = make_settings(robot_pause_after_failures=2)
    dispatch_fails(database_url, settings, 500, "HTTP 500")
    for _ in range(3):
        dispatch_fails(database_url, settings, 400, "the robot refused the job with HTTP 400")
    assert (
        state(database_url, settings).failures_in_a_row,
        state(database_url, settings).paused,
    ) == (
        1,
        False,
    )

    accepted = new_job(database_url)
    claim(database_url, accepted, settings)
    with session_scope(database_url) as session:
        lifecycle.record_dispatch_accepted(session, accepted)

    assert state(database_url, settings).failures_in_a_row == 0
    dispatch_fails(database_url, settings, 500, "HTTP 500")
    assert state(database_url, settings).paused is False  # 1 in a row again, not 2


def test_zero_never_pauses(database_url, make_settings) -> None:
    settings = make_settings(robot_pause_after_failures=0)
    for _ in range(4):
        dispatch_fails(database_url, settings, 500, "HTTP 500")
    assert state(database_url, settings).paused is False


def backdate_dispatch(url: str, job_id: str, seconds: float) -> None:
    with session_scope(url) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(dispatched_at=datetime.now(UTC) - timedelta(seconds=seconds))
        )


def test_a_silent_job_fails_with_items_unknown(database_url, make_settings) -> None:
    settings = make_settings(robot_silence_timeout_seconds=30.0)
    silent, recent = new_job(database_url, items=2), new_job(database_url)
    in_flight, lost_answer = new_job(database_url), new_job(database_url)
    for job_id in (silent, recent, in_flight, lost_answer):
        claim(database_url, job_id, settings)
    for job_id in (silent, recent):
        with session_scope(database_url) as session:
            lifecycle.record_dispatch_accepted(session, job_id)
    backdate_dispatch(database_url, silent, 31)
    # No answer recorded: the request may still be on its way (ROBOT_DISPATCH_TIMEOUT
    # 30 s), unless it started longer ago than the timeout plus S.
    backdate_dispatch(database_url, in_flight, 31)
    backdate_dispatch(database_url, lost_answer, 61)
    failure = lifecycle.silence_failure(settings)
    assert failure is not None and failure.silent_since is not None

    with session_scope(database_url) as session:
        quiet = housekeeping.silent_jobs(session, failure.silent_since, 30.0)
    assert sorted(quiet) == sorted([silent, lost_answer])
    with session_scope(database_url) as session:
        assert lifecycle.finalize(session, silent, failure) == "failed"

    job = job_row(database_url, silent)
    assert "the robot sent nothing for 30 seconds" in (job.error or "")
    with session_scope(database_url) as session:
        statuses = session.scalars(select(Item.status).where(Item.job_id == silent)).all()
    assert statuses == ["unknown", "unknown"]
    assert lifecycle.silence_failure(make_settings()) is None  # unset: off


def test_heartbeats_keep_a_job_alive_without_moving_its_deadline(
    database_url, make_settings
) -> None:
    settings = make_settings(robot_silence_timeout_seconds=30.0)
    job_id = new_job(database_url)
    claim(database_url, job_id, settings)
    with session_scope(database_url) as session:
        lifecycle.record_dispatch_accepted(session, job_id)
    backdate_dispatch(database_url, job_id, 31)
    deadline = job_row(database_url, job_id).deadline
    before = lifecycle.silence_failure(settings)
    assert before is not None and before.silent_since is not None
    with session_scope(database_url) as session:
        assert housekeeping.silent_jobs(session, before.silent_since, 30.0) == [job_id]

    with session_scope(database_url) as session:
        result = apply_event(session, job_id, "hb-1", HEARTBEAT, {"browser": 1})
    assert result.outcome == Outcome.APPLIED

    failure = lifecycle.silence_failure(settings)
    assert failure is not None and failure.silent_since is not None
    with session_scope(database_url) as session:
        assert housekeeping.silent_jobs(session, failure.silent_since, 30.0) == []
    with session_scope(database_url) as session:  # even when asked directly: the guard holds
        assert lifecycle.finalize(session, job_id, failure) is None
    job = job_row(database_url, job_id)
    assert (job.status, job.deadline) == ("processing", deadline)
    assert job.last_event_at is not None


def test_any_event_type_counts_as_a_sign_of_life(database_url, make_settings) -> None:
    settings = make_settings(robot_silence_timeout_seconds=30.0)
    job_id = new_job(database_url)
    ticket = claim(database_url, job_id, settings)
    assert ticket is not None
    with session_scope(database_url) as session:
        lifecycle.record_dispatch_accepted(session, job_id)
    backdate_dispatch(database_url, job_id, 31)
    failure = lifecycle.silence_failure(settings)
    assert failure is not None and failure.silent_since is not None
    with session_scope(database_url) as session:
        assert housekeeping.silent_jobs(session, failure.silent_since, 30.0) == [job_id]

    with session_scope(database_url) as session:
        apply_event(session, job_id, "st-1", ITEM_STARTED, {"itemId": ticket.items[0]["itemId"]})

    with session_scope(database_url) as session:
        assert housekeeping.silent_jobs(session, failure.silent_since, 30.0) == []


def test_a_heartbeat_is_stored_and_deduplicated_and_changes_nothing_else(
    database_url, make_settings
) -> None:
    settings = make_settings()
    job_id = new_job(database_url)
    claim(database_url, job_id, settings)
    before = job_row(database_url, job_id)

    with session_scope(database_url) as session:
        first = apply_event(session, job_id, "hb-1", HEARTBEAT, {"load": 0.5})
    with session_scope(database_url) as session:
        again = apply_event(session, job_id, "hb-1", HEARTBEAT, {"load": 0.5})

    assert (first.outcome, again.outcome) == (Outcome.APPLIED, Outcome.DUPLICATE)
    with session_scope(database_url) as session:
        stored = session.execute(select(Event.type, Event.payload, Event.late)).all()
        items = session.scalars(select(Item.status).where(Item.job_id == job_id)).all()
    assert stored == [(HEARTBEAT, {"load": 0.5}, False)]
    after = job_row(database_url, job_id)
    assert (after.status, after.deadline, after.report) == (before.status, before.deadline, None)
    assert items == ["processing"]
    fail(database_url, job_id, settings)
    with session_scope(database_url) as session:
        late = apply_event(session, job_id, "hb-2", HEARTBEAT, {})
    assert late.outcome == Outcome.LATE


def test_queue_positions_follow_the_order_and_end_at_dispatch(database_url, make_settings) -> None:
    settings = make_settings(robot_max_active_jobs=1)
    low = new_job(database_url, priority=-5, age_seconds=100)
    old = new_job(database_url, age_seconds=50)
    young = new_job(database_url, age_seconds=10)
    high = new_job(database_url, priority=100, age_seconds=1)

    def positions() -> list[int | None]:
        with session_scope(database_url) as session:
            conn = session.connection()
            return [
                queries.queue_position(conn, lifecycle.get_job(session, j))
                for j in (low, old, young, high)
            ]

    assert positions() == [4, 2, 3, 1]
    with session_scope(database_url) as session:
        shown = dispatch_control.queue(session)
    assert [(q.job_id, q.position, q.priority) for q in shown] == [
        (high, 1, 100),
        (old, 2, 0),
        (young, 3, 0),
        (low, 4, -5),
    ]
    claim(database_url, high, settings)
    assert positions() == [3, 1, 2, None]
    with session_scope(database_url) as session:
        # a cancelled waiting job leaves the order
        lifecycle.cancel(session, old, actor=audit.SYSTEM)
    assert positions() == [2, None, 1, None]
    with session_scope(database_url) as session:
        cancelled = session.scalars(select(Item.status).where(Item.job_id == old)).all()
    assert cancelled == ["error"]


def test_the_position_count_uses_the_queue_index_on_postgresql(postgres_url) -> None:
    with connect(postgres_url) as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        plan = conn.exec_driver_sql(
            "EXPLAIN SELECT count(*) FROM jobs WHERE robot = 'default' AND dispatched_at IS NULL "
            "AND status IN ('pending', 'processing') AND priority > 0"
        ).all()
    assert "ix_jobs_robot_queue" in " ".join(row[0] for row in plan)


def test_the_control_row_exists_after_migration(database_url) -> None:
    with session_scope(database_url) as session:
        count = session.scalar(select(func.count()).select_from(dispatch_control.DispatchControl))
    assert count == 1
