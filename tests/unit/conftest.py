"""Unit-test fixtures: a Flask app on a migrated SQLite file, fakeredis, a recording starter."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import fakeredis
import pytest

from orchestrator import rendezvous, submission, tasks
from webapp import create_app, live

API_TOKEN = "unit-test-token"
REDIS_URL = "redis://fake-redis.invalid:6379/0"


@dataclass
class StartedJobs:
    """Records every job whose chain the app asked to start (instead of a broker)."""

    job_ids: list[str] = field(default_factory=list)

    def __call__(self, app, job_id, settings) -> None:
        self.job_ids.append(job_id)


@pytest.fixture
def fake_redis() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    key = (os.getpid(), REDIS_URL, None)
    rendezvous._clients[key] = client
    yield client
    rendezvous._clients.pop(key, None)
    client.close()


@pytest.fixture
def started(monkeypatch) -> StartedJobs:
    recorder = StartedJobs()
    monkeypatch.setattr(submission, "start_job", recorder)
    monkeypatch.setattr(tasks, "start_job", recorder)  # the hand-off's starts
    return recorder


def unit_app(make_settings, database_url: str):
    """The unit tests' app on the given database: fakeredis, small limits, two API tokens."""
    settings = make_settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        api_tokens=(API_TOKEN, "second-token"),
        max_body_bytes=64 * 1024,
        max_batch_size=50,
    )
    app = create_app(settings)
    # The live streams' subscription ends with the last stream, not seconds after it.
    live.hub_of(app).linger_seconds = 0.0
    return app


@pytest.fixture
def app(sqlite_url, make_settings, fake_redis, started):
    return unit_app(make_settings, sqlite_url)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_TOKEN}"}
