"""Several robots (CONTRACT §11): each robot's claim, capacity, order, pause, failures, silence,
hours and removal, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from sqlalchemy import select, text

from orchestrator import (
    audit,
    dispatch_control,
    housekeeping,
    lifecycle,
    notifications,
    queries,
    robot_client,
)
from orchestrator.db import connect, session_scope
from orchestrator.models import Item, Job, Notification
from orchestrator.robots import Hours, RobotSettings

from . import test_dispatch_control as control_tests
from .test_dispatch_control import claim, job_row


def new_job(url: str, robot: str, age_seconds: float = 0.0, priority: int = 0, items: int = 1):
    """A waiting job of ``robot``, made as the single-robot tests make theirs."""
    return control_tests.new_job(url, priority, age_seconds, items, robot=robot)


def robot_state(url: str, settings, robot: str | None):
    with session_scope(url) as session:
        return dispatch_control.read_state(session, settings, robot)


SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()
CLOSED_NOW = "Mon 00:00-00:01"  # open one minute a week: closed in any test run but 1 in 10,080


@pytest.fixture
def two(make_settings, database_url):
    """Settings with robots ``a`` (2 active jobs at most) and ``b`` (1), on the test's database."""

    def build(a: dict | None = None, b: dict | None = None, **overrides):
        robots = (
            RobotSettings(
                **{"name": "a", "url": "http://a.invalid", "max_active_jobs": 2, **(a or {})}
            ),
            RobotSettings(
                **{"name": "b", "url": "http://b.invalid", "max_active_jobs": 1, **(b or {})}
            ),
        )
        return make_settings(database_url=database_url, several_robots=robots, **overrides)

    return build


def test_a_job_belongs_to_its_robot_and_the_job_view_shows_it(database_url, two) -> None:
    settings = two()
    job_id = new_job(database_url, "b")
    with connect(database_url) as conn:
        view = queries.job_view(conn, job_id)
    assert view["robot"] == "b"
    ticket = claim(database_url, job_id, settings)
    assert ticket is not None and ticket.robot == "b"


def test_capacity_order_and_positions_are_per_robot(database_url, two) -> None:
    settings = two()
    a_jobs = [new_job(database_url, "a", age_seconds=10 - n) for n in range(3)]
    b_jobs = [new_job(database_url, "b", age_seconds=10 - n) for n in range(2)]
    rows = [job_row(database_url, j) for j in a_jobs + b_jobs]
    with connect(database_url) as conn:
        positions = [queries.queue_position(conn, row) for row in rows]
    assert positions == [1, 2, 3, 1, 2]

    tickets = [claim(database_url, j, settings) for j in a_jobs + b_jobs]

    assert [t is not None for t in tickets] == [True, True, False, True, False]
    assert robot_state(database_url, settings, "a").active_jobs == 2
    assert robot_state(database_url, settings, "b").active_jobs == 1
    rows = [job_row(database_url, a_jobs[2]), job_row(database_url, b_jobs[1])]
    with connect(database_url) as conn:
        assert [queries.queue_position(conn, row) for row in rows] == [1, 1]
    with session_scope(database_url) as session:
        assert [q.job_id for q in dispatch_control.queue(session, "a")] == [a_jobs[2]]
        everyone = dispatch_control.queue(session)
    assert {(q.job_id, q.robot, q.position) for q in everyone} == {
        (a_jobs[2], "a", 1),
        (b_jobs[1], "b", 1),
    }


def test_the_order_within_a_robot_is_priority_then_age(database_url, two) -> None:
    settings = two(a={"max_active_jobs": 1})
    old = new_job(database_url, "a", age_seconds=20)
    urgent = new_job(database_url, "a", age_seconds=1, priority=5)
    other_robot_older = new_job(database_url, "b", age_seconds=60, priority=100)
    assert claim(database_url, old, settings) is None  # urgent comes first in a's order
    assert claim(database_url, urgent, settings) is not None
    assert claim(database_url, other_robot_older, settings) is not None  # not in a's order


@pytest.mark.parametrize("blocked", ["full", "paused", "closed", "failing"])
def test_a_blocked_robot_never_delays_the_other_robots_jobs(database_url, two, blocked) -> None:
    settings = two(
        a={"hours": Hours.parse(CLOSED_NOW)} if blocked == "closed" else {},
        b={"max_active_jobs": None},
    )
    if blocked == "full":
        for n in range(2):
            assert claim(database_url, new_job(database_url, "a", age_seconds=n), settings)
    elif blocked == "paused":
        with session_scope(database_url) as session:
            lifecycle.pause_dispatch(
                session, settings, "portal down", robot="a", actor=audit.SYSTEM
            )
    elif blocked == "failing":
        for n in range(3):
            job_id = new_job(database_url, "a", age_seconds=n)
            assert claim(database_url, job_id, settings)
            with session_scope(database_url) as session:
                lifecycle.fail_dispatch(session, settings, job_id, "connection refused", False)
        assert robot_state(database_url, settings, "a").paused_by == "failures"
    waiting_a = new_job(database_url, "a", age_seconds=100)
    b_jobs = [new_job(database_url, "b") for _ in range(3)]

    assert claim(database_url, waiting_a, settings) is None
    assert all(claim(database_url, job_id, settings) is not None for job_id in b_jobs)
    assert job_row(database_url, waiting_a).status == "pending"
    assert robot_state(database_url, settings, "b").paused is False


def test_failures_in_a_row_are_counted_per_robot(database_url, two) -> None:
    settings = two(a={"pause_after_failures": 2}, b={"pause_after_failures": 2})
    for robot in ("a", "b", "a"):  # a, b, a: a's second in a row; b has one
        job_id = new_job(database_url, robot)
        assert claim(database_url, job_id, settings) is not None
        with session_scope(database_url) as session:
            lifecycle.fail_dispatch(session, settings, job_id, "HTTP 500", False, 500)
    a, b = robot_state(database_url, settings, "a"), robot_state(database_url, settings, "b")
    assert (a.paused, a.paused_by, a.failures_in_a_row) == (True, "failures", 2)
    assert (b.paused, b.failures_in_a_row) == (False, 1)
    accepted = new_job(database_url, "b")
    assert claim(database_url, accepted, settings) is not None
    with session_scope(database_url) as session:
        lifecycle.record_dispatch_accepted(session, accepted)
    assert robot_state(database_url, settings, "b").failures_in_a_row == 0
    assert robot_state(database_url, settings, "a").failures_in_a_row == 2


def test_pause_and_resume_of_one_robot_and_of_all_notify_once_per_robot(database_url, two):
    settings = two(notify_url="http://127.0.0.1:9/hooks", notify_secret=SECRET)
    notifications.init_outbox(settings, [].append)
    with session_scope(database_url) as session:
        lifecycle.pause_dispatch(session, settings, "a's portal", robot="a", actor=audit.SYSTEM)
    with session_scope(database_url) as session:
        combined = lifecycle.pause_dispatch(
            session, settings, "everything", actor=audit.SYSTEM
        )  # b newly paused
    with session_scope(database_url) as session:
        a_only = lifecycle.resume_dispatch(session, settings, "a", actor=audit.SYSTEM)
    with session_scope(database_url) as session:
        lifecycle.resume_dispatch(
            session, settings, actor=audit.SYSTEM
        )  # b resumes; a was not paused
    with session_scope(database_url) as session:
        sent = [
            (row.type, row.payload["name"], row.payload["paused"])
            for row in session.scalars(select(Notification).order_by(Notification.seq))
        ]
    assert sent == [
        (notifications.DISPATCH_PAUSED, "a", True),
        (notifications.DISPATCH_PAUSED, "b", True),
        (notifications.DISPATCH_RESUMED, "a", False),
        (notifications.DISPATCH_RESUMED, "b", False),
    ]
    assert combined.paused and combined.paused_reason == "everything"
    assert a_only.as_json()["name"] == "a" and not a_only.paused


def test_a_timed_pause_ends_per_robot(database_url, two) -> None:
    settings = two()
    soon = datetime.now(UTC) + timedelta(seconds=60)
    with session_scope(database_url) as session:
        lifecycle.pause_dispatch(session, settings, "short", soon, robot="a", actor=audit.SYSTEM)
        lifecycle.pause_dispatch(
            session, settings, "long", soon + timedelta(hours=1), robot="b", actor=audit.SYSTEM
        )
    with session_scope(database_url) as session:
        session.execute(
            dispatch_control._control.update()
            .where(dispatch_control._control.c.robot == "a")
            .values(paused_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    with session_scope(database_url) as session:
        assert lifecycle.resume_if_due(session, settings)
    assert not robot_state(database_url, settings, "a").paused
    assert robot_state(database_url, settings, "b").paused


def test_the_combined_state_follows_the_contracts_rules() -> None:
    def state(paused=False, reason=None, until=None, by=None, limit=None, active=0, queued=0, f=0):
        return dispatch_control.DispatchState(paused, reason, until, by, limit, active, queued, f)

    t = datetime(2026, 12, 24, tzinfo=UTC)
    both = dispatch_control.combine(
        [state(True, "x", t, "api", 2, 1, 3, 0), state(True, "x", t, "api", 3, 2, 4, 5)]
    )
    assert both.as_json() == {
        "paused": True,
        "pausedReason": "x",
        "pausedUntil": t.isoformat(),
        "pausedBy": "api",
        "maxActiveJobs": 5,
        "activeJobs": 3,
        "queuedJobs": 7,
        "failuresInARow": 5,
    }
    differ = dispatch_control.combine(
        [state(True, "x", t, "api", 2), state(True, "y", None, "failures", None)]
    )
    assert (differ.paused_reason, differ.paused_until, differ.paused_by) == (None, None, None)
    assert differ.max_active_jobs is None  # one robot without a limit
    one_paused = dispatch_control.combine([state(True, "x", t, "api", 2), state(False, limit=1)])
    assert one_paused.paused is False
    # Only the paused robots share their reason: the one that runs has none.
    assert (one_paused.paused_reason, one_paused.paused_by) == ("x", "api")


def test_the_combined_state_reads_every_robot(database_url, two) -> None:
    settings = two()
    assert claim(database_url, new_job(database_url, "b"), settings) is not None
    new_job(database_url, "a")
    new_job(database_url, "b")
    with session_scope(database_url) as session:
        lifecycle.pause_dispatch(session, settings, "all", robot=None, actor=audit.SYSTEM)
    combined = robot_state(database_url, settings, None)
    assert (combined.paused, combined.max_active_jobs, combined.active_jobs) == (True, 3, 1)
    assert (combined.queued_jobs, combined.paused_reason) == (2, "all")


def test_the_robot_state_shows_hours_open_and_next_opening(database_url, two) -> None:
    settings = two(
        a={"hours": Hours.parse(CLOSED_NOW, "America/Bogota"), "timezone": "America/Bogota"}
    )
    a = robot_state(database_url, settings, "a").as_json()
    b = robot_state(database_url, settings, "b").as_json()
    assert (a["name"], a["hours"], a["timezone"], a["open"]) == (
        "a",
        CLOSED_NOW,
        "America/Bogota",
        False,
    )
    opens = datetime.fromisoformat(a["nextOpenAt"])
    assert opens > datetime.now(UTC) and opens.utcoffset() == timedelta(0)
    assert (opens.astimezone(Hours.parse(CLOSED_NOW, "America/Bogota")._zone).hour) == 0
    assert (b["hours"], b["timezone"], b["open"], b["nextOpenAt"]) == (None, "UTC", True, None)


def test_outside_its_hours_a_job_parks_pending_and_the_opening_hands_it_on(
    database_url, two
) -> None:
    settings = two(a={"hours": Hours.parse(CLOSED_NOW), "max_active_jobs": None})
    job_id = new_job(database_url, "a")
    with session_scope(database_url) as session:
        assert lifecycle.claim_dispatch(session, job_id, settings) is None
    assert lifecycle.robots_closed(session) == {"a"}
    parked = job_row(database_url, job_id)
    assert (parked.status, parked.parked_at is not None) == ("pending", True)
    with session_scope(database_url) as session:
        assert lifecycle.next_waiting(session, settings, "a") == []  # still closed
    opened = two(a={"hours": Hours.parse("Mon-Sun 00:00-24:00"), "max_active_jobs": None})
    with session_scope(database_url) as session:
        assert lifecycle.next_waiting(session, opened, "a") == [job_id]
    assert claim(database_url, job_id, opened) is not None


def test_active_jobs_go_on_when_the_hours_close(database_url, two) -> None:
    settings = two()
    job_id = new_job(database_url, "a")
    assert claim(database_url, job_id, settings) is not None
    closed = two(a={"hours": Hours.parse(CLOSED_NOW)})
    with session_scope(database_url) as session:
        assert housekeeping.jobs_to_settle(session) == []
        assert lifecycle.finalize(session, job_id) is None  # no report, no deadline: goes on
    assert job_row(database_url, job_id).status == "processing"
    assert robot_state(database_url, closed, "a").active_jobs == 1


def test_dispatch_uses_the_robots_deadline_settings(database_url, two) -> None:
    settings = two(a={"seconds_per_item": 2.0, "deadline_margin_seconds": 10.0})
    before = datetime.now(UTC)
    ticket = claim(database_url, new_job(database_url, "a", items=3), settings)
    assert ticket is not None
    seconds = (ticket.deadline - before).total_seconds()
    assert 16 <= seconds < 20  # 3 × 2 + 10, not 3 × 30 + 300


class RecordingHttp:
    """Records the one POST; answers 202."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict, object]] = []

    def post(self, url, data, headers, timeout, allow_redirects):
        self.calls.append((url, headers, timeout))
        response = requests.Response()
        response.status_code = 202
        return response


def test_the_dispatch_goes_to_the_robots_url_with_its_token_and_timeout(make_settings) -> None:
    robots = (
        RobotSettings(name="a", url="http://a.invalid", api_token="token-a"),
        RobotSettings(name="b", url="http://b.invalid:81", dispatch_timeout_seconds=4.0),
    )
    settings = make_settings(several_robots=robots)
    deadline = datetime.now(UTC) + timedelta(hours=1)
    for robot, expected in (("a", "http://a.invalid"), ("b", "http://b.invalid:81")):
        http = RecordingHttp()
        ticket = lifecycle.DispatchTicket("job-1", deadline, [], robot=robot)
        robot_client.dispatch(ticket, settings, session=http)  # type: ignore[arg-type]
        [(url, headers, timeout)] = http.calls
        assert url == f"{expected}/api/v1/jobs"
        if robot == "a":
            assert headers["Authorization"] == "Bearer token-a" and timeout == (30.0, 30.0)
        else:
            assert "Authorization" not in headers and timeout == (4.0, 4.0)


def test_silence_is_per_robot(make_settings) -> None:
    robots = (
        RobotSettings(name="a", url="http://a.invalid", silence_timeout_seconds=60),
        RobotSettings(name="b", url="http://b.invalid"),
    )
    settings = make_settings(several_robots=robots, robot_silence_timeout_seconds=600)
    a = lifecycle.silence_failure(settings, settings.robot("a"))
    assert a is not None and "60 seconds (ROBOT_A_SILENCE_TIMEOUT_SECONDS)" in a.reason
    assert lifecycle.silence_failure(settings, settings.robot("b")) is None
    removed = lifecycle.silence_failure(settings, None)  # robots no longer configured
    assert removed is not None and "600 seconds" in removed.reason


def test_silent_jobs_are_found_per_robot(database_url, two) -> None:
    settings = two()
    a_job, b_job = new_job(database_url, "a"), new_job(database_url, "b")
    gone = new_job(database_url, "gone")
    for job_id in (a_job, b_job):
        assert claim(database_url, job_id, settings) is not None
    with session_scope(database_url) as session:  # dispatched under an older configuration
        session.execute(
            Job.__table__.update()
            .where(Job.id == gone)
            .values(
                dispatched_at=datetime.now(UTC), status="processing", dispatch_result="accepted"
            )
        )
    later = datetime.now(UTC) + timedelta(seconds=5)
    with session_scope(database_url) as session:
        assert housekeeping.silent_jobs(session, later, 0, robot="a") == [a_job]
        assert housekeeping.silent_jobs(session, later, 0, not_in=("a", "b")) == [gone]


def test_a_waiting_job_of_a_robot_no_longer_configured_fails_at_its_claim(
    database_url, two
) -> None:
    settings = two()
    job_id = new_job(database_url, "servientrega", items=2)
    assert claim(database_url, job_id, settings) is None
    job = job_row(database_url, job_id)
    assert job.status == "failed" and "servientrega" in job.error
    with session_scope(database_url) as session:
        statuses = session.scalars(select(Item.status).where(Item.job_id == job_id)).all()
    assert statuses == ["error", "error"]


def test_housekeeping_fails_the_waiting_jobs_of_a_removed_robot_only(
    database_url, two, make_settings
) -> None:
    settings = two()
    waiting = new_job(database_url, "gone")
    dispatched = new_job(database_url, "gone")
    mine = new_job(database_url, "a")
    gone = RobotSettings(name="gone", url="http://g.invalid")
    before = make_settings(
        database_url=database_url, several_robots=(*settings.several_robots, gone)
    )
    assert claim(database_url, dispatched, before) is not None  # dispatched while configured

    with session_scope(database_url) as session:
        failed = lifecycle.fail_unconfigured(session, settings)

    assert failed == [waiting]
    assert job_row(database_url, waiting).status == "failed"
    assert "gone" in job_row(database_url, waiting).error
    assert job_row(database_url, dispatched).status == "processing"  # still settles later
    assert job_row(database_url, mine).status == "pending"
    with session_scope(database_url) as session:  # its deadline still settles it
        session.execute(
            Job.__table__.update().where(Job.id == dispatched).values(deadline=datetime.now(UTC))
        )
        assert lifecycle.finalize(session, dispatched) == "failed"


def test_two_robots_claims_never_wait_for_each_other_on_postgresql(postgres_url, make_settings):
    robots = (
        RobotSettings(name="a", url="http://a.invalid", max_active_jobs=5),
        RobotSettings(name="b", url="http://b.invalid", max_active_jobs=5),
    )
    settings = make_settings(database_url=postgres_url, several_robots=robots)
    a_job, b_job = new_job(postgres_url, "a"), new_job(postgres_url, "b")
    with session_scope(postgres_url) as session:  # both rows exist
        dispatch_control.lock(session.connection(), "a")
        dispatch_control.lock(session.connection(), "b")
    holder = connect(postgres_url)
    holder.begin()
    holder.execute(text("SELECT * FROM dispatch_control WHERE robot = 'a' FOR UPDATE"))
    a_result: list[object] = []
    a_claim = threading.Thread(target=lambda: a_result.append(claim(postgres_url, a_job, settings)))
    try:
        a_claim.start()
        # The control: a's claim waits for a's lock (seen waiting in pg_stat_activity).
        deadline = time.monotonic() + 30
        with connect(postgres_url) as watcher:
            while time.monotonic() < deadline:
                waiting = watcher.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()"
                    )
                )
                watcher.rollback()
                if waiting:
                    break
                time.sleep(0.05)
        assert waiting == 1 and a_result == []
        # b's claim goes through while a's row is locked.
        assert claim(postgres_url, b_job, settings) is not None
        assert a_result == []
    finally:
        holder.rollback()
        holder.close()
        a_claim.join(30)
    assert a_result and a_result[0] is not None


def test_the_claims_queries_use_the_robots_indexes_on_postgresql(postgres_url) -> None:
    with connect(postgres_url) as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        plans = {}
        for name, where in (
            ("waiting", "dispatched_at IS NULL AND status IN ('pending', 'processing')"),
            ("active", "dispatched_at IS NOT NULL AND status IN ('pending', 'processing')"),
        ):
            rows = conn.exec_driver_sql(
                f"EXPLAIN SELECT count(*) FROM jobs WHERE robot = 'a' AND {where}"  # noqa: S608
            ).all()
            plans[name] = " ".join(row[0] for row in rows)
    assert "ix_jobs_robot_queue" in plans["waiting"]
    assert "ix_jobs_robot_active" in plans["active"]
