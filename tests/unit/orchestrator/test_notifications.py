"""The outbox on the migrated schema, on SQLite and PostgreSQL: recording, order, arithmetic."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from orchestrator import audit, dispatch_control, lifecycle, notifications, queries
from orchestrator.config import ConfigError, load_settings
from orchestrator.db import connect, session_scope
from orchestrator.models import Notification
from orchestrator.robot_events import BATCH_COMPLETED, ITEM_COMPLETED, apply_event

SECRET = "whsec_" + base64.b64encode(b"unit-test-notify-secret-32-bytes").decode()


def orders(count: int) -> list[dict]:
    return [{"orderId": f"ORD-{n}", "pedidoInput": {"n": n}} for n in range(count)]


@pytest.fixture
def enqueued() -> list:
    return []


@pytest.fixture
def notify(database_url, make_settings, enqueued):
    """Settings with NOTIFY_URL set, the outbox on for this database, deliveries recorded."""
    settings = make_settings(
        database_url=database_url,
        notify_url="http://127.0.0.1:9/hooks",
        notify_secret=SECRET,
        notify_backoff_seconds=10.0,
        notify_give_up_seconds=100.0,
    )
    notifications.init_outbox(settings, enqueued.append)
    return settings


def new_job(url: str, count: int = 2) -> str:
    with session_scope(url) as session:
        return lifecycle.create_job(session, orders(count)).id


def dispatched_job(url: str, settings, count: int = 2) -> str:
    job_id = new_job(url, count)
    with session_scope(url) as session:
        lifecycle.mark_processing(session, job_id)
        lifecycle.claim_dispatch(session, job_id, settings)
    return job_id


def rows(url: str, job_id: str | None = None) -> list[Notification]:
    with session_scope(url) as session:
        query = select(Notification).order_by(Notification.seq)
        if job_id is not None:
            query = query.where(Notification.job_id == job_id)
        return list(session.scalars(query))


def item_ids(url: str, job_id: str) -> list[str]:
    with connect(url) as conn:
        view = queries.job_view(conn, job_id)
    assert view is not None
    return [item["id"] for item in view["items"]]


# --- arithmetic ---


def test_retry_gaps_double_from_the_backoff_and_stop_at_one_hour() -> None:
    assert [notifications.retry_delay(n, 10.0) for n in range(1, 6)] == [10, 20, 40, 80, 160]
    assert notifications.retry_delay(9, 10.0) == 2560
    assert notifications.retry_delay(10, 10.0) == 3600  # 5120 capped
    assert notifications.retry_delay(10_000, 0.5) == 3600  # no overflow
    assert notifications.retry_delay(1, 0.25) == 0.25


def test_the_last_retry_is_at_the_give_up_time_then_none(make_settings) -> None:
    settings = make_settings(notify_backoff_seconds=10.0, notify_give_up_seconds=100.0)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    at = start + timedelta(seconds=70)
    # attempt 4 failed at +70 s: 80 s later would be past the give-up time (+100 s)
    assert notifications.next_attempt(at, 4, start, settings) == start + timedelta(seconds=100)
    assert notifications.next_attempt(start + timedelta(seconds=5), 1, start, settings) == (
        start + timedelta(seconds=15)
    )
    assert notifications.next_attempt(start + timedelta(seconds=100), 5, start, settings) is None


# --- configuration ---


def test_notify_url_without_its_secret_is_a_configuration_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="NOTIFY_SECRET") as caught:
        load_settings({"APP_ENV": "development", "NOTIFY_URL": "https://app.example/hooks"})
    assert "\n" not in str(caught.value)


def test_a_bad_notify_secret_is_refused_without_showing_it() -> None:
    env = {"APP_ENV": "development", "NOTIFY_URL": "https://app.example/hooks"}
    for bad in ("not-a-whsec-secret", "whsec_!!!not base64!!!"):
        with pytest.raises(ConfigError, match="NOTIFY_SECRET") as caught:
            load_settings({**env, "NOTIFY_SECRET": bad})
        assert bad not in str(caught.value)
    with pytest.raises(ConfigError, match="NOTIFY_URL"):
        load_settings({**env, "NOTIFY_URL": "ftp://app.example/", "NOTIFY_SECRET": SECRET})


def test_notify_settings_are_parsed_and_the_secret_is_kept_out_of_repr() -> None:
    settings = load_settings(
        {
            "APP_ENV": "development",
            "NOTIFY_URL": "https://user:pw-in-url@app.example/hooks/",
            "NOTIFY_SECRET": SECRET,
            "NOTIFY_BACKOFF_SECONDS": "0.5",
            "NOTIFY_GIVE_UP_SECONDS": "30",
        }
    )
    assert settings.notify_url == "https://user:pw-in-url@app.example/hooks/"  # as written
    assert (settings.notify_backoff_seconds, settings.notify_give_up_seconds) == (0.5, 30.0)
    assert SECRET in settings.secrets()
    assert SECRET.removeprefix("whsec_") in settings.secrets()
    assert "pw-in-url" in settings.secrets()
    shown = repr(settings)
    assert SECRET.removeprefix("whsec_") not in shown and "pw-in-url" not in shown
    defaults = load_settings({"APP_ENV": "development"})
    assert (defaults.notify_url, defaults.notify_backoff_seconds) == ("", 10.0)
    assert defaults.notify_give_up_seconds == 86400.0


# --- recording ---


def test_nothing_is_recorded_when_notify_url_is_unset(database_url, make_settings) -> None:
    settings = make_settings(database_url=database_url)
    notifications.init_outbox(settings, lambda job_id: None)
    job_id = dispatched_job(database_url, settings)
    with session_scope(database_url) as session:
        lifecycle.finalize(session, job_id, lifecycle.Failure("broke"))
    assert rows(database_url) == []


def test_finalize_records_job_finished_with_the_job_as_the_api_shows_it(
    database_url, notify, enqueued
) -> None:
    job_id = dispatched_job(database_url, notify)
    with session_scope(database_url) as session:
        assert lifecycle.finalize(session, job_id, lifecycle.Failure("portal down")) == "failed"
        assert enqueued == []  # not before the commit
    assert enqueued == [job_id]
    [row] = rows(database_url, job_id)
    with connect(database_url) as conn:
        assert row.payload == queries.job_view(conn, job_id)
    assert row.type == "job.finished" and row.status == "pending" and row.attempts == 0
    assert row.payload["status"] == "failed"
    assert [i["status"] for i in row.payload["items"]] == ["unknown", "unknown"]
    assert row.id.startswith("msg_") and row.next_attempt_at is not None


def test_a_rolled_back_finalize_leaves_no_notification_and_enqueues_nothing(
    database_url, notify, enqueued
) -> None:
    job_id = dispatched_job(database_url, notify)
    with pytest.raises(RuntimeError), session_scope(database_url) as session:
        lifecycle.finalize(session, job_id, lifecycle.Failure("broke"))
        raise RuntimeError("crash before the commit")
    assert rows(database_url) == [] and enqueued == []
    with session_scope(database_url) as session:  # the next commit enqueues nothing stale
        lifecycle.get_job(session, job_id)
    assert enqueued == []


def test_cancel_records_job_finished_once(database_url, notify) -> None:
    job_id = new_job(database_url)
    with session_scope(database_url) as session:
        lifecycle.cancel(session, job_id, actor=audit.SYSTEM)
    with pytest.raises(lifecycle.TransitionRefused), session_scope(database_url) as session:
        lifecycle.cancel(session, job_id, actor=audit.SYSTEM)
    [row] = rows(database_url, job_id)
    assert row.payload["status"] == "cancelled"
    assert [i["status"] for i in row.payload["items"]] == ["error", "error"]  # never dispatched


def test_a_late_result_records_job_updated_only_when_an_item_changes(database_url, notify) -> None:
    job_id = dispatched_job(database_url, notify)
    first, second = item_ids(database_url, job_id)
    with session_scope(database_url) as session:
        lifecycle.finalize(session, job_id, lifecycle.Failure("deadline"))
    result = {"itemId": first, "status": "success", "trackingNumber": "CO1"}
    with session_scope(database_url) as session:
        apply_event(session, job_id, "late-1", ITEM_COMPLETED, result)
    with session_scope(database_url) as session:  # the same result again: nothing changes
        apply_event(session, job_id, "late-2", ITEM_COMPLETED, result)
    with session_scope(database_url) as session:  # a late batch report with a new result
        apply_event(
            session,
            job_id,
            "late-3",
            BATCH_COMPLETED,
            {"items": [result, {"itemId": second, "status": "error", "error": "no"}]},
        )
    with session_scope(database_url) as session:  # a late report changing nothing
        apply_event(session, job_id, "late-4", BATCH_COMPLETED, {"items": [result]})
    kinds = [(r.type, [i["status"] for i in r.payload["items"]]) for r in rows(database_url)]
    assert kinds == [
        ("job.finished", ["unknown", "unknown"]),
        ("job.updated", ["success", "unknown"]),
        ("job.updated", ["success", "error"]),
    ]


def test_an_open_job_s_results_record_nothing(database_url, notify) -> None:
    job_id = dispatched_job(database_url, notify)
    first, _ = item_ids(database_url, job_id)
    with session_scope(database_url) as session:
        apply_event(session, job_id, "e1", ITEM_COMPLETED, {"itemId": first, "status": "error"})
    assert rows(database_url) == []


def test_record_serves_events_about_no_job(database_url, notify, enqueued) -> None:
    with session_scope(database_url) as session:
        notification_id = notifications.record(
            session, notifications.DISPATCH_PAUSED, {"paused": True}
        )
    assert enqueued == [None]
    [row] = rows(database_url)
    assert (row.id, row.job_id, row.payload) == (notification_id, None, {"paused": True})


# --- order and claims ---


def _finish_with_late_update(url: str, settings) -> tuple[str, str]:
    job_id = dispatched_job(url, settings)
    first, _ = item_ids(url, job_id)
    with session_scope(url) as session:
        lifecycle.finalize(session, job_id, lifecycle.Failure("deadline"))
    with session_scope(url) as session:
        apply_event(
            session,
            job_id,
            "late",
            ITEM_COMPLETED,
            {"itemId": first, "status": "success", "trackingNumber": "T"},
        )
    return job_id, first


def claim(url: str, job_id: str | None) -> notifications.Claim | None:
    with session_scope(url) as session:
        return notifications.claim_next(session, job_id)


def outcome(url: str, settings, the_claim, error: str | None):
    with session_scope(url) as session:
        return notifications.record_outcome(session, the_claim, error, settings)


def test_a_job_s_update_waits_while_its_finished_notification_is_pending(
    database_url, notify
) -> None:
    job_id, _ = _finish_with_late_update(database_url, notify)
    finished = claim(database_url, job_id)
    assert finished is not None and finished.type == "job.finished"
    # leased: neither it nor the update behind it can be claimed by a second worker
    assert claim(database_url, job_id) is None
    due = outcome(database_url, notify, finished, "answered HTTP 500")
    assert due is not None
    # still pending (retry in 10 s): the update is not sent before it
    assert claim(database_url, job_id) is None
    with session_scope(database_url) as session:  # make the retry due
        session.execute(
            update(Notification)
            .where(Notification.id == finished.id)
            .values(next_attempt_at=due - timedelta(seconds=30))
        )
    again = claim(database_url, job_id)
    assert again is not None and again.id == finished.id and again.attempts == 1
    assert outcome(database_url, notify, again, None) is None
    updated = claim(database_url, job_id)
    assert updated is not None and updated.type == "job.updated"
    [first_row, _] = rows(database_url, job_id)
    assert (first_row.status, first_row.attempts, first_row.last_error) == ("delivered", 2, None)


def test_a_failed_notification_no_longer_holds_back_the_next(database_url, notify) -> None:
    job_id, _ = _finish_with_late_update(database_url, notify)
    finished = claim(database_url, job_id)
    assert finished is not None
    # The give-up time has come (its window began 101 s ago; NOTIFY_GIVE_UP_SECONDS is 100).
    stale = notifications.Claim(
        **{**finished.__dict__, "retry_since": datetime.now(UTC) - timedelta(seconds=101)}
    )
    assert outcome(database_url, notify, stale, "could not connect to NOTIFY_URL") is None
    status = {r.type: (r.status, r.next_attempt_at) for r in rows(database_url, job_id)}
    assert status["job.finished"] == ("failed", None)
    nxt = claim(database_url, job_id)
    assert nxt is not None and nxt.type == "job.updated"


def test_streams_of_different_jobs_do_not_wait_for_each_other(database_url, notify) -> None:
    one, _ = _finish_with_late_update(database_url, notify)
    two, _ = _finish_with_late_update(database_url, notify)
    blocked = claim(database_url, one)
    assert blocked is not None
    outcome(database_url, notify, blocked, "answered HTTP 503")
    other = claim(database_url, two)
    assert other is not None and other.type == "job.finished"
    with session_scope(database_url) as session:
        assert set(notifications.due_streams(session)) == set()  # one waits, two is leased


def test_due_streams_lists_each_stream_with_a_due_row_once(database_url, notify) -> None:
    one, _ = _finish_with_late_update(database_url, notify)
    with session_scope(database_url) as session:
        notifications.record(session, notifications.DISPATCH_RESUMED, {"paused": False})
    with session_scope(database_url) as session:
        assert sorted(notifications.due_streams(session), key=str) == sorted([one, None], key=str)


def test_an_outcome_after_a_redelivery_does_not_overwrite_it(database_url, notify) -> None:
    job_id, _ = _finish_with_late_update(database_url, notify)
    running = claim(database_url, job_id)
    assert running is not None
    with session_scope(database_url) as session:
        notifications.redeliver(session, running.id, actor=audit.SYSTEM)
    outcome(database_url, notify, running, "answered HTTP 500")  # guarded by the lease
    row = rows(database_url, job_id)[0]
    assert (row.status, row.attempts, row.last_error) == ("pending", 0, None)
    assert claim(database_url, job_id) is not None  # due now


def test_redeliver_an_unknown_id_raises(database_url, notify) -> None:
    with pytest.raises(notifications.NotificationNotFound), session_scope(database_url) as s:
        notifications.redeliver(s, "msg_nope", actor=audit.SYSTEM)


def test_the_body_is_the_same_bytes_on_every_attempt(database_url, notify) -> None:
    job_id, _ = _finish_with_late_update(database_url, notify)
    first = claim(database_url, job_id)
    assert first is not None
    outcome(database_url, notify, first, "answered HTTP 500")
    with session_scope(database_url) as session:
        session.execute(update(Notification).values(next_attempt_at=datetime.now(UTC)))
    second = claim(database_url, job_id)
    assert second is not None
    assert notifications.body_of(first) == notifications.body_of(second)
    assert first.id == second.id


def test_a_result_applied_after_a_finalize_it_did_not_see_still_records_job_updated(
    database_url, notify
) -> None:
    from orchestrator.robot_events import apply_item_event

    job_id = dispatched_job(database_url, notify)
    first, _ = item_ids(database_url, job_id)
    with session_scope(database_url) as session:
        lifecycle.finalize(session, job_id, lifecycle.Failure("deadline"))
    # The callback read the job as processing just before that finalize committed.
    with session_scope(database_url) as session:
        apply_item_event(
            session,
            job_id,
            "processing",
            "raced",
            ITEM_COMPLETED,
            {"itemId": first, "status": "success", "trackingNumber": "RACE-1"},
        )
    kinds = [(r.type, r.payload["items"][0]["trackingNumber"]) for r in rows(database_url)]
    assert kinds == [("job.finished", None), ("job.updated", "RACE-1")]


# --- dispatch.paused and dispatch.resumed (CONTRACT §8), written with the pause itself ---


ROBOT_FIELDS = ("name", "hours", "timezone", "open", "nextOpenAt")


def _dispatch_rows(url: str) -> list[tuple[str, dict]]:
    return [(row.type, row.payload) for row in rows(url) if row.job_id is None]


def test_a_pause_and_a_resume_by_hand_are_notified_with_the_dispatch_state(
    database_url, notify, enqueued
) -> None:
    with session_scope(database_url) as session:
        paused = lifecycle.pause_dispatch(session, notify, "portal maintenance", actor=audit.SYSTEM)
    with session_scope(database_url) as session:  # a new reason for the same pause
        lifecycle.pause_dispatch(session, notify, "portal maintenance, longer", actor=audit.SYSTEM)
    with session_scope(database_url) as session:
        resumed = lifecycle.resume_dispatch(session, notify, actor=audit.SYSTEM)
    with session_scope(database_url) as session:  # not paused: nothing resumes
        lifecycle.resume_dispatch(session, notify, actor=audit.SYSTEM)

    # One notification per robot, its state with its name (CONTRACT §8); one robot here,
    # so the whole state is that robot's.
    named = [
        {key: value for key, value in data.items() if key not in ROBOT_FIELDS}
        for _kind, data in _dispatch_rows(database_url)
    ]
    assert [kind for kind, _ in _dispatch_rows(database_url)] == [
        notifications.DISPATCH_PAUSED,
        notifications.DISPATCH_RESUMED,
    ]
    assert named == [paused.as_json(), resumed.as_json()]
    assert [data["name"] for _kind, data in _dispatch_rows(database_url)] == ["default"] * 2
    assert paused.as_json()["pausedBy"] == "api"
    assert enqueued == [None, None]


def test_a_pause_by_itself_and_the_end_of_a_timed_pause_are_notified(
    database_url, notify, make_settings
) -> None:
    settings = make_settings(database_url=database_url, robot_pause_after_failures=2)
    for answer in (500, 503):
        job_id = dispatched_job(database_url, settings)
        with session_scope(database_url) as session:
            lifecycle.fail_dispatch(session, settings, job_id, f"refused: {answer}", False, answer)
    [(kind, data)] = _dispatch_rows(database_url)  # the second failure paused it
    assert (kind, data["pausedBy"], data["paused"]) == (
        notifications.DISPATCH_PAUSED,
        "failures",
        True,
    )
    assert "refused: 503" in data["pausedReason"]

    with session_scope(database_url) as session:
        lifecycle.pause_dispatch(
            session, settings, "short", datetime.now(UTC) + timedelta(hours=1), actor=audit.SYSTEM
        )
        session.execute(
            update(dispatch_control.DispatchControl).values(
                paused_until=datetime.now(UTC) - timedelta(seconds=1)
            )
        )
    with session_scope(database_url) as session:
        assert lifecycle.resume_if_due(session, settings)
    kind, data = _dispatch_rows(database_url)[-1]
    assert (kind, data["paused"]) == (notifications.DISPATCH_RESUMED, False)
