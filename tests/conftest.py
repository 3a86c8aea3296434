"""Shared fixtures: migrated databases on SQLite and PostgreSQL, settings, fakeredis."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from sqlalchemy import create_engine, text

from orchestrator import db
from orchestrator.config import Settings, settings_from_mapping
from orchestrator.local.processes import private_redis
from orchestrator.migrate import upgrade
from tests import figures

# Property-based and schema-driven tests (hypothesis, schemathesis) draw the same examples on
# every run: derandomized, and no example database carried from one run to the next, so that
# `make test` gives the same verdict every time. `make fuzz` selects the "fuzz" profile: fresh
# randomness and six times the examples (tests that set their own number scale it by
# `settings.default.max_examples`). A failure prints the reproduce blob either way.
settings.register_profile("repeatable", derandomize=True, database=None, print_blob=True)
settings.register_profile(
    "fuzz", derandomize=False, database=None, print_blob=True, max_examples=600
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


# --- parallel runs (pytest-xdist) ---


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config: pytest.Config, specs: Sequence[Any]) -> None:
    """Give each xdist worker a private redis-server (``TEST_REDIS_PORT`` in its environment).

    Every Redis database number a test uses is then its worker's own, whatever test of another
    worker runs beside it. Started here, in the controller, before the workers exist: the
    tests read the port when they are imported. A replacement for a crashed worker inherits
    its spec, so its server too. Every server stops when the run ends.
    """
    log_dir = Path(tempfile.mkdtemp(prefix="pytest-redis-"))
    config.add_cleanup(lambda: shutil.rmtree(log_dir, ignore_errors=True))
    for n, spec in enumerate(specs):
        (log_dir / str(n)).mkdir()
        started = private_redis(log_dir / str(n))
        if started is None:
            raise pytest.UsageError("parallel runs (-n) need redis-server, one per worker")
        url, process = started
        config.add_cleanup(process.stop)
        spec.env["TEST_REDIS_PORT"] = url.rsplit(":", 1)[1].split("/")[0]


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: its figures go to the controller
        workeroutput["figures"] = list(figures.FIGURES)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    figures.FIGURES.extend(getattr(node, "workeroutput", {}).get("figures", []))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    figures.report(terminalreporter)


PG_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def migrated_sqlite(path: str) -> str:
    """Create a SQLite database file and run every migration on it."""
    url = f"sqlite:///{path}"
    upgrade(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return migrated_sqlite(str(tmp_path / "test.db"))


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """Return the admin URL of the local PostgreSQL; fail loudly if it does not answer."""
    engine = create_engine(PG_ADMIN_URL)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    return PG_ADMIN_URL


@contextmanager
def fresh_postgres_database(admin_url: str, migrate: bool = True) -> Iterator[str]:
    """Create a uniquely named PostgreSQL database (migrated to head), drop it afterwards."""
    name = f"orch_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        if migrate:
            upgrade(url)
        yield url
    finally:
        db.dispose_all()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh PostgreSQL database migrated to head, for one test."""
    with fresh_postgres_database(postgres_server) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL, both migrated."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def make_settings():
    """Build Settings from overrides on top of the development defaults."""

    def build(**overrides: object) -> Settings:
        return settings_from_mapping(overrides)

    return build


@pytest.fixture(autouse=True)
def _fresh_engines() -> Iterator[None]:
    yield
    db.dispose_all()
