"""Which Redis the demo picks, and the embedded Redis it falls back to."""

from __future__ import annotations

import redis

from orchestrator.local import processes
from orchestrator.local.processes import choose_redis


class FakeProcess:
    def __init__(self, name: str) -> None:
        self.name = name


def test_redis_url_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:6380/2")
    monkeypatch.setattr(processes, "redis_answers", lambda url: True)
    choice = choose_redis(tmp_path)
    assert (choice.url, choice.process, choice.slow) == ("redis://elsewhere:6380/2", None, False)


def test_then_the_local_redis_on_database_14(monkeypatch, tmp_path):
    monkeypatch.delenv("REDIS_URL", raising=False)
    asked: list[str] = []
    monkeypatch.setattr(processes, "redis_answers", lambda url: asked.append(url) or True)
    choice = choose_redis(tmp_path)
    assert choice.url == asked[0] == "redis://127.0.0.1:6379/14"
    assert choice.process is None


def test_then_a_private_redis_server(monkeypatch, tmp_path):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setattr(processes, "redis_answers", lambda url: False)
    private = FakeProcess("redis")
    monkeypatch.setattr(processes, "private_redis", lambda d: ("redis://127.0.0.1:7000/0", private))
    choice = choose_redis(tmp_path)
    assert choice.url == "redis://127.0.0.1:7000/0" and choice.process is private
    assert not choice.slow


def test_then_the_embedded_one_and_it_says_it_is_slow(monkeypatch, tmp_path):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setattr(processes, "redis_answers", lambda url: False)
    monkeypatch.setattr(processes, "private_redis", lambda d: None)
    embedded = FakeProcess("embedded-redis")
    monkeypatch.setattr(
        processes, "embedded_redis", lambda d: ("redis://127.0.0.1:7001/0", embedded)
    )
    choice = choose_redis(tmp_path)
    assert choice.process is embedded and choice.slow
    assert "20x slower" in choice.description


def test_embedded_mode_skips_the_real_ones(monkeypatch, tmp_path):
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:6380/2")
    embedded = FakeProcess("embedded-redis")
    monkeypatch.setattr(
        processes, "embedded_redis", lambda d: ("redis://127.0.0.1:7001/0", embedded)
    )
    assert choose_redis(tmp_path, "embedded").process is embedded


def test_no_redis_at_all_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setattr(processes, "redis_answers", lambda url: False)
    monkeypatch.setattr(processes, "private_redis", lambda d: None)
    monkeypatch.setattr(processes, "embedded_redis", lambda d: None)
    try:
        choose_redis(tmp_path)
    except RuntimeError as exc:
        assert "no Redis" in str(exc) and "redis-server" in str(exc)
    else:
        raise AssertionError("expected a RuntimeError")


def test_the_embedded_redis_serves_what_the_system_uses(tmp_path):
    started = processes.embedded_redis(tmp_path)
    assert started is not None
    url, process = started
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe("channel")
        assert client.set("k", "v", nx=True, ex=60)
        assert client.eval("return redis.call('GET', KEYS[1])", 1, "k") == b"v"
        client.publish("channel", "hello")
        # The first read may be the (ignored) subscribe confirmation.
        message = processes.wait_until(lambda: pubsub.get_message(timeout=1), 5, "the message")
        assert message["data"] == b"hello"
        pubsub.close()
    finally:
        client.close()
        assert process.stop() == 0
