"""The Procfile's processes: configuration errors, PostgreSQL, clean SIGTERM."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from orchestrator.local.processes import bin_path, run_line

from ..conftest import fresh_postgres_database
from .conftest import flush_redis
from .harness import System, orders, wait_until

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("process", ["release", "web", "worker", "beat"])
def test_missing_required_variable_stops_the_process_with_one_line(process: str) -> None:
    env = {
        "PATH": bin_path(),
        "ROBOT_CALLBACK_SECRET": "s3cret-value",
        "PUBLIC_URL": "http://127.0.0.1:1",
        "API_TOKENS": "t0ken-value",
    }
    done = run_line(process, env, timeout=60)

    assert done.returncode != 0
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert lines == ["configuration error: ROBOT_URL is required (set it, or APP_ENV=development)"]


def test_invalid_number_is_named() -> None:
    env = {"PATH": bin_path(), "APP_ENV": "development", "ROBOT_SECONDS_PER_ITEM": "fast"}
    done = run_line("release", env, timeout=60)

    assert done.returncode != 0
    assert "ROBOT_SECONDS_PER_ITEM must be a number" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def on_postgres(tmp_path_factory, postgres_url) -> Iterator[System]:
    """The Procfile's processes on PostgreSQL with a Heroku-style postgres:// URL."""
    heroku_url = postgres_url.replace("postgresql+psycopg://", "postgres://")
    flush_redis(12)
    system = System(tmp_path_factory.mktemp("system-pg"), heroku_url, redis_db=12)
    try:
        yield system.start(("robot", "web", "worker"))
    finally:
        system.stop()
        flush_redis(12)


@pytest.fixture(scope="module")
def postgres_url(postgres_server) -> Iterator[str]:
    """An empty database: the release process migrates it."""
    with fresh_postgres_database(postgres_server, migrate=False) as url:
        yield url


def test_twenty_orders_on_postgresql(on_postgres: System) -> None:
    job = on_postgres.wait_final(on_postgres.submit(orders(20)).json()["id"])

    assert job["status"] == "completed"
    assert job["counts"]["success"] == 20
    assert len({item["trackingNumber"] for item in job["items"]}) == 20


def test_silent_robot_fails_at_the_deadline_on_postgresql(on_postgres: System) -> None:
    on_postgres.robot_config(mode="never_finish")
    try:
        job = on_postgres.wait_final(on_postgres.submit(orders(1)).json()["id"], timeout=40)
    finally:
        on_postgres.robot_config(mode="normal")

    assert job["status"] == "failed"
    assert job["items"][0]["status"] == "unknown"


def test_web_and_worker_exit_cleanly_soon_after_sigterm(on_postgres: System) -> None:
    on_postgres.robot_config(mode="never_finish")
    try:
        waiting = on_postgres.submit(orders(1)).json()["id"]
        wait_until(lambda: on_postgres.job(waiting)["dispatchedAt"], 30, "a waiting job")
    finally:
        on_postgres.robot_config(mode="normal")

    codes = {}
    for name in ("web", "worker"):
        process = on_postgres.processes[name]
        process.popen.send_signal(signal.SIGTERM)
        codes[name] = process.popen.wait(timeout=10)  # the contract's bound, not a speed target

    assert codes == {"web": 0, "worker": 0}
