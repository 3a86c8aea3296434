"""Live job streams (CONTRACT §13) through the Flask test client, with fakeredis pub/sub."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from orchestrator import audit, lifecycle, live, robot_events
from orchestrator.db import session_scope
from webapp import create_app
from webapp import live as web_live

from ..conftest import API_TOKEN, REDIS_URL

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def app(sqlite_url, make_settings, fake_redis, started):
    settings = make_settings(
        database_url=sqlite_url,
        redis_url=REDIS_URL,
        api_tokens=(API_TOKEN,),
        live_keepalive_seconds=0.2,
        live_reread_seconds=30.0,  # announcements, not the timer, drive these tests
    )
    app = create_app(settings)
    web_live.hub_of(app).linger_seconds = 0.0
    yield app
    web_live.hub_of(app).end_all()
    wait_for(lambda: web_live.hub_of(app)._listener is None)


@pytest.fixture
def client(app):
    return app.test_client()


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def submit(client, n: int = 2) -> dict[str, Any]:
    orders = [{"orderId": f"ORD-{i}", "pedidoInput": {"n": i}} for i in range(n)]
    response = client.post("/api/jobs", json={"orders": orders}, headers=AUTH)
    assert response.status_code == 202
    return response.get_json()


class Reader:
    """Reads a streamed response's parts in a thread, so the test can wait on each one."""

    def __init__(self, response) -> None:
        self.response = response
        self.parts: queue.Queue[str | None] = queue.Queue()
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for chunk in self.response.response:
                self.parts.put(chunk.decode() if isinstance(chunk, bytes) else chunk)
                if self.closing.is_set():
                    break
        finally:
            self.response.close()  # as a server does when its client went away
            self.parts.put(None)  # the stream ended

    def next_part(self, timeout: float = 10.0) -> str | None:
        return self.parts.get(timeout=timeout)

    def next_event(self, timeout: float = 10.0) -> dict[str, Any] | None:
        """Return the next event's fields (keep-alive comments skipped); None at the end."""
        while True:
            part = self.next_part(timeout)
            if part is None:
                return None
            fields = parse(part)
            if "data" in fields:
                return fields

    def close(self) -> None:
        """Go away after the next part (a comment comes within the keep-alive interval)."""
        self.closing.set()
        self.thread.join(timeout=10)


def parse(part: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for line in part.splitlines():
        name, _, value = line.partition(": ")
        if name in ("id", "event", "retry"):
            fields[name] = value
        elif name == "data":
            fields["data"] = json.loads(value)
    return fields


def open_stream(client, job_id: str, headers: dict[str, str] | None = None) -> Reader:
    response = client.get(f"/api/jobs/{job_id}/stream", headers=headers or AUTH, buffered=False)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    return Reader(response)


def claim(app, job_id: str) -> None:
    settings = app.extensions["orchestrator"].settings
    with session_scope(settings.database_url) as session:
        assert lifecycle.claim_dispatch(session, job_id, settings) is not None


def item_result(app, job_id: str, item_id: str, tracking: str) -> None:
    settings = app.extensions["orchestrator"].settings
    data = {"itemId": item_id, "status": "success", "trackingNumber": tracking}
    with session_scope(settings.database_url) as session:
        status = session.connection().scalar(robot_events.JOB_STATUS, {"the_job": job_id})
        robot_events.apply_item_event(
            session, job_id, status, f"msg_{uuid.uuid4().hex}", robot_events.ITEM_COMPLETED, data
        )


def cancel(client, job_id: str) -> None:
    assert client.post(f"/api/jobs/{job_id}/cancel", headers=AUTH).status_code == 200


# --- the stream ---


def test_the_stream_sends_the_job_at_once_then_each_change_in_order_and_closes_when_final(
    app, client
):
    job = submit(client)
    stream = open_stream(client, job["id"])
    first = stream.next_event()
    assert first["event"] == "job"
    assert first["data"] == client.get(f"/api/jobs/{job['id']}", headers=AUTH).get_json()
    assert first["data"]["status"] == "pending"

    claim(app, job["id"])
    second = stream.next_event()
    assert second["data"]["status"] == "processing"
    assert [i["status"] for i in second["data"]["items"]] == ["processing", "processing"]

    item_result(app, job["id"], job["items"][0]["id"], "CO-1")
    third = stream.next_event()
    assert third["data"]["items"][0]["trackingNumber"] == "CO-1"
    assert third["data"]["counts"]["success"] == 1

    cancel(client, job["id"])
    last = stream.next_event()
    assert last["data"]["status"] == "cancelled"
    assert last["data"] == client.get(f"/api/jobs/{job['id']}", headers=AUTH).get_json()
    assert stream.next_event() is None  # closed after the final state
    ids = [first["id"], second["id"], third["id"], last["id"]]
    assert len(set(ids)) == 4


def test_a_final_job_gets_one_event_then_the_stream_closes(client):
    job = submit(client)
    cancel(client, job["id"])
    stream = open_stream(client, job["id"])
    part = stream.next_part()
    assert part.startswith("retry: ")  # an EventSource's reconnect delay
    assert parse(part)["data"]["status"] == "cancelled"
    assert stream.next_part() is None


def test_a_client_that_already_has_the_final_state_gets_204_and_stops_reconnecting(client):
    job = submit(client)
    cancel(client, job["id"])
    event = open_stream(client, job["id"]).next_event()
    again = client.get(
        f"/api/jobs/{job['id']}/stream", headers={**AUTH, "Last-Event-ID": event["id"]}
    )
    assert again.status_code == 204
    other = client.get(f"/api/jobs/{job['id']}/stream", headers={**AUTH, "Last-Event-ID": "x"})
    assert other.status_code == 200
    assert parse(other.get_data(as_text=True))["data"]["status"] == "cancelled"


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_TOKEN}"}]
)
def test_a_stream_without_a_valid_token_is_401_json(client, headers):
    job = submit(client)
    response = client.get(f"/api/jobs/{job['id']}/stream", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"


# Ids the same in every process (pytest-xdist compares them): not the random one.
@pytest.mark.parametrize(
    "job_id", ["no-such-job", str(uuid.uuid4()), "nul\x00byte"], ids=["name", "uuid", "nul"]
)
def test_the_stream_of_an_unknown_job_is_404_json(app, client, job_id):
    response = client.get(f"/api/jobs/{job_id}/stream", headers=AUTH)
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert response.get_json()["error"]["code"] == "not_found"
    assert web_live.hub_of(app).count() == 0


def test_an_open_stream_sends_comment_lines_while_nothing_changes(app, client):
    job = submit(client)
    stream = open_stream(client, job["id"])
    stream.next_event()
    comments = [stream.next_part(), stream.next_part()]
    assert comments == [": keep-alive\n\n", ": keep-alive\n\n"]  # every 0.2 s here
    stream.close()


def test_the_default_comment_interval_is_at_most_15_seconds(make_settings):
    assert make_settings().live_keepalive_seconds <= 15


def test_a_change_without_an_announcement_arrives_by_the_timer_re_read(
    sqlite_url, make_settings, fake_redis, started
):
    settings = make_settings(
        database_url=sqlite_url,
        redis_url=REDIS_URL,
        api_tokens=(API_TOKEN,),
        live_keepalive_seconds=10.0,
        live_reread_seconds=0.2,
    )
    app = create_app(settings)
    hub = web_live.hub_of(app)
    hub.linger_seconds = 0.0
    client = app.test_client()
    job = submit(client)
    stream = open_stream(client, job["id"])
    stream.next_event()
    fake_redis.connection_pool.connection_kwargs["db"] = 99  # announcements go elsewhere
    try:
        cancel(client, job["id"])
        assert stream.next_event()["data"]["status"] == "cancelled"
    finally:
        fake_redis.connection_pool.connection_kwargs["db"] = 0
        hub.end_all()
        wait_for(lambda: hub._listener is None)


def test_streams_of_a_process_share_one_subscription(app, client, fake_redis):
    jobs = [submit(client) for _ in range(3)]
    streams = [open_stream(client, job["id"]) for job in jobs for _ in range(2)]
    for stream in streams:
        stream.next_event()
    channel = live.job_channel(fake_redis)
    wait_for(lambda: web_live.hub_of(app).subscribed.is_set())
    assert fake_redis.pubsub_numsub(channel) == [(channel.encode(), 1)]
    for stream in streams:
        stream.close()
    # Nobody listens: the subscription goes too (linger 0 here).
    wait_for(lambda: fake_redis.pubsub_numsub(channel) == [(channel.encode(), 0)])


def test_a_stream_that_falls_behind_is_ended_and_the_others_go_on(app, client):
    hub = web_live.hub_of(app)
    job = submit(client)
    slow = hub.open(job["id"])
    fast = open_stream(client, job["id"])
    fast.next_event()
    wait_for(hub.subscribed.is_set)  # (which wakes every stream once)
    while slow.queue.qsize() < web_live.QUEUE_SIZE:  # nobody takes the slow one's wake-ups
        slow.wake("wake")
    assert slow.ended is None
    hub._wake([job["id"]], "wake")  # one more for a full queue: never waits, ends it
    assert slow.ended == "behind"
    assert slow.queue.qsize() == web_live.QUEUE_SIZE  # bounded: nothing more is kept
    cancel(client, job["id"])
    assert fast.next_event()["data"]["status"] == "cancelled"
    assert fast.next_event() is None


def test_a_redis_outage_re_subscribes_and_every_stream_reads_again(
    app, client, fake_redis, monkeypatch
):
    hub = web_live.hub_of(app)
    hub.retry_seconds = 0.05
    job = submit(client)
    stream = open_stream(client, job["id"])
    stream.next_event()
    wait_for(hub.subscribed.is_set)
    # Redis goes away: the subscription breaks, and a change committed meanwhile is not
    # announced (the publish fails too) ...
    down = threading.Event()
    down.set()
    pubsub_class = type(fake_redis.pubsub())
    get_message = pubsub_class.get_message

    def broken_get_message(self, *args, **kwargs):
        if down.is_set():
            raise RedisConnectionError("Redis is down")
        return get_message(self, *args, **kwargs)

    def broken_publish(*_args: object) -> None:
        raise RedisConnectionError("Redis is down")

    monkeypatch.setattr(pubsub_class, "get_message", broken_get_message)
    monkeypatch.setattr(type(fake_redis), "publish", broken_publish)
    wait_for(lambda: not hub.subscribed.is_set())
    cancel(client, job["id"])  # the commit stands; its announcement is lost
    # ... and once Redis is back, the new subscription makes every stream read once.
    down.clear()
    assert stream.next_event()["data"]["status"] == "cancelled"


def test_ending_all_streams_closes_them_at_once(app, client):
    job = submit(client)
    streams = [open_stream(client, job["id"]) for _ in range(3)]
    for stream in streams:
        stream.next_event()
    web_live.end_all_streams()
    for stream in streams:
        while (part := stream.next_part(timeout=5)) is not None:
            assert part.startswith(":")
    assert web_live.hub_of(app).count() == 0


# --- the announcements ---


@pytest.fixture
def announcements(fake_redis) -> Iterator[list[list[str]]]:
    pubsub = fake_redis.pubsub()
    pubsub.subscribe(live.job_channel(fake_redis))
    got: list[list[str]] = []

    def drain() -> list[list[str]]:
        while (message := pubsub.get_message(timeout=0.05)) is not None:
            if message["type"] == "message":
                got.append(live.parse_announcement(message["data"]))
        return got

    drain()
    yield drain  # type: ignore[misc]
    pubsub.close()


def test_a_commit_announces_the_jobs_it_changed_once_after_the_commit(app, client, announcements):
    jobs = [submit(client) for _ in range(2)]
    assert announcements() == []  # a new job is no change anyone can be streaming
    settings = app.extensions["orchestrator"].settings
    with session_scope(settings.database_url) as session:
        for job in jobs:
            lifecycle.cancel(session, job["id"], actor=audit.SYSTEM)
        session.flush()
        assert announcements() == []  # nothing before the commit
    assert announcements() == [sorted(job["id"] for job in jobs)]  # one PUBLISH


def test_a_rolled_back_change_is_not_announced(app, client, announcements):
    job = submit(client)
    settings = app.extensions["orchestrator"].settings
    with pytest.raises(RuntimeError), session_scope(settings.database_url) as session:
        lifecycle.cancel(session, job["id"], actor=audit.SYSTEM)
        raise RuntimeError("rolled back")
    assert announcements() == []
    assert client.get(f"/api/jobs/{job['id']}", headers=AUTH).get_json()["status"] == "pending"


def test_a_failed_announcement_is_logged_and_the_change_stands(app, client, monkeypatch, caplog):
    job = submit(client)

    def broken(*_args: object) -> None:
        raise RedisConnectionError("Redis is down")

    monkeypatch.setattr(type(app.extensions["orchestrator"].rendezvous.redis), "publish", broken)
    cancel(client, job["id"])
    assert client.get(f"/api/jobs/{job['id']}", headers=AUTH).get_json()["status"] == "cancelled"
    assert any("could not announce" in r.getMessage() for r in caplog.records)
