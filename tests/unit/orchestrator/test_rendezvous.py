"""The Redis rendezvous on fakeredis: key before message, one poller, one waker."""

from __future__ import annotations

import fakeredis
import pytest
from redis.sentinel import SentinelConnectionPool

from orchestrator.rendezvous import (
    Rendezvous,
    get_redis,
    parse_sentinel_url,
    poller_key,
    report_channel,
    report_key,
)


@pytest.fixture
def rendezvous():
    client = fakeredis.FakeRedis()
    yield Rendezvous(client)
    client.close()


def test_report_key_is_written_before_the_announcement(rendezvous) -> None:
    pubsub = rendezvous.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(rendezvous.channel)
    seen_key_on_message: list[bool] = []

    rendezvous.announce_report("job-1", "completed")
    message = None
    for _ in range(20):  # the first read only consumes the subscribe confirmation
        message = pubsub.get_message(timeout=0.05)
        if message:
            break
    # Whoever hears the announcement can already read the key.
    seen_key_on_message.append(rendezvous.has_report("job-1"))

    assert message is not None and message["data"] == b"job-1"
    assert seen_key_on_message == [True]
    assert rendezvous.redis.get(report_key("job-1")) == b"completed"
    assert rendezvous.redis.ttl(report_key("job-1")) > 0
    pubsub.close()


def test_a_report_announced_before_anyone_listens_is_still_seen(rendezvous) -> None:
    rendezvous.announce_report("job-1", "failed")

    assert rendezvous.has_report("job-1")
    assert not rendezvous.has_report("job-2")


def test_only_one_poller_holds_a_job_and_stale_tokens_stop(rendezvous) -> None:
    first = rendezvous.claim_poller("job-1")
    duplicate_first_run = rendezvous.claim_poller("job-1")

    assert first is not None
    assert duplicate_first_run is None

    second, reported = rendezvous.pass_poller("job-1", first)
    redelivered_copy = rendezvous.pass_poller("job-1", first)

    assert second is not None and second != first
    assert reported is False
    assert redelivered_copy == (None, False)
    third, _ = rendezvous.pass_poller("job-1", second)
    assert third is not None and third not in (first, second)


def test_passing_the_poller_tells_whether_the_report_is_in(rendezvous) -> None:
    token = rendezvous.claim_poller("job-1")
    token, before = rendezvous.pass_poller("job-1", token)
    rendezvous.announce_report("job-1", "completed")
    token, after = rendezvous.pass_poller("job-1", token)

    assert (before, after) == (False, True)
    assert token is not None


def test_forgetting_a_job_stops_its_poller(rendezvous) -> None:
    token = rendezvous.claim_poller("job-1")
    rendezvous.announce_report("job-1", "completed")

    rendezvous.forget("job-1")

    assert rendezvous.pass_poller("job-1", token) == (None, False)
    assert not rendezvous.has_report("job-1")
    assert not rendezvous.redis.exists(poller_key("job-1"))


def test_one_waker_per_announcement(rendezvous) -> None:
    assert rendezvous.claim_wake("job-1") is True
    assert rendezvous.claim_wake("job-1") is False
    assert rendezvous.claim_wake("job-2") is True


def test_each_redis_database_has_its_own_report_channel() -> None:
    server = fakeredis.FakeServer()
    ours = Rendezvous(fakeredis.FakeRedis(server=server, db=3))
    theirs = Rendezvous(fakeredis.FakeRedis(server=server, db=4))
    listener = ours.redis.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(ours.channel)

    theirs.announce_report("their-job", "completed")
    ours.announce_report("our-job", "completed")
    heard = []
    for _ in range(20):
        message = listener.get_message(timeout=0.05)
        if message:
            heard.append(message["data"])

    assert (ours.channel, theirs.channel) == ("orchestrator:3:reports", "orchestrator:4:reports")
    assert heard == [b"our-job"]
    listener.close()


def test_celery_sentinel_urls_give_the_sentinels_the_password_and_the_database() -> None:
    hosts, password, db = parse_sentinel_url(
        "sentinel://:s%40cret@h1:26379/2;sentinel://h2:26380;sentinel://h3"
    )
    assert hosts == [("h1", 26379), ("h2", 26380), ("h3", 26379)]
    assert (password, db) == ("s@cret", 2)
    assert parse_sentinel_url("sentinel://h1:1") == ([("h1", 1)], None, 0)


@pytest.mark.parametrize(
    "url", ["", "redis://h:6379/0", "sentinel://h1:1;redis://h2:2", "sentinel://h1:1/x"]
)
def test_a_bad_sentinel_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_sentinel_url(url)


def test_with_a_master_name_the_client_follows_the_master_the_sentinels_name() -> None:
    url = "sentinel://:pw@127.0.0.1:1/3;sentinel://127.0.0.1:2"
    client = get_redis(url, "orchestrator")
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "orchestrator"
    assert [
        (c.connection_pool.connection_kwargs["port"]) for c in pool.sentinel_manager.sentinels
    ] == [1, 2]
    assert (pool.connection_kwargs["db"], pool.connection_kwargs["password"]) == (3, "pw")
    # The report channel carries the database, as for a plain Redis URL.
    assert report_channel(client) == "orchestrator:3:reports"
    assert get_redis(url, "orchestrator") is client
