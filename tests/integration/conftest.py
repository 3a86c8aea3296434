"""Integration fixtures: the whole system as real processes on real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests import REDIS_PORT

from .harness import System

pytestmark = pytest.mark.integration


def flush_redis(db: int) -> None:
    client = redis.Redis(host="127.0.0.1", port=REDIS_PORT, db=db)
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def system(tmp_path_factory) -> Iterator[System]:
    """The Procfile's processes on SQLite, beat's housekeeping every second."""
    log_dir = tmp_path_factory.mktemp("system-sqlite")
    flush_redis(11)
    running = System(
        log_dir,
        f"sqlite:///{log_dir / 'orchestrator.db'}",
        redis_db=11,
        HOUSEKEEPING_INTERVAL_SECONDS="1",
    )
    try:
        yield running.start()
    finally:
        running.stop()
        flush_redis(11)


@pytest.fixture
def robot(system: System) -> Iterator[System]:
    """The shared system with the simulator back to normal after each test."""
    system.robot_reset()
    yield system
    system.robot_reset()
