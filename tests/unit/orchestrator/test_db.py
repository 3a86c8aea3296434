"""Engines across a fork: a pool process must not close its parent's connections."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError, ProgrammingError

from orchestrator import db


def _backend_pid(url: str) -> int:
    with db.autocommit_connection(url) as conn:
        return int(conn.scalar(text("SELECT pg_backend_pid()")))


def test_a_forked_child_dropping_its_engines_leaves_the_parents_connection_open(postgres_url):
    # The worker's main process holds a connection for the report listener; a pool process
    # forked from it drops the inherited engines (worker_process_init) before its first task.
    before = _backend_pid(postgres_url)
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            db.dispose_all()
            # The child opens its own engine and connection, not the parent's.
            code = 0 if _backend_pid(postgres_url) != before else 3
            db.dispose_all()
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # Same server backend: the child did not say goodbye on the parent's socket (had it,
    # the checkout check would have seen the closed socket and connected anew).
    assert _backend_pid(postgres_url) == before


def test_dispose_all_closes_this_process_connections(postgres_url):
    before = _backend_pid(postgres_url)
    db.dispose_all()
    assert _backend_pid(postgres_url) != before


def test_the_driver_connection_is_in_autocommit_only_while_lent(postgres_url):
    with db.driver_autocommit(postgres_url) as driver:
        assert driver.autocommit is True
        lent = driver.execute("SELECT pg_backend_pid()").fetchone()[0]
    engine = db.session_factory(postgres_url).kw["bind"]
    fairy = engine.raw_connection()
    try:
        # The same pooled connection, handed back as SQLAlchemy expects it.
        assert fairy.driver_connection.execute("SELECT pg_backend_pid()").fetchone()[0] == lent
        assert fairy.driver_connection.autocommit is False
    finally:
        fairy.close()


def test_a_statement_error_is_sqlalchemys_and_keeps_the_connection(postgres_url):
    with pytest.raises(ProgrammingError), db.driver_autocommit(postgres_url) as driver:
        kept = driver.execute("SELECT pg_backend_pid()").fetchone()[0]
        driver.execute("SELECT no_such_column")
    assert _backend_pid(postgres_url) == kept


def test_a_connection_lost_mid_statement_is_an_operational_error_and_leaves_the_pool(
    postgres_url,
):
    with pytest.raises(OperationalError) as raised, db.driver_autocommit(postgres_url) as driver:
        lost = driver.execute("SELECT pg_backend_pid()").fetchone()[0]
        with db.autocommit_connection(postgres_url) as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": lost})
        driver.execute("SELECT 1")
    assert raised.value.connection_invalidated is True
    # The broken connection is gone: the next one is a new server backend.
    assert _backend_pid(postgres_url) != lost


def test_a_refused_connection_is_sqlalchemys_operational_error():
    # Port 9 (discard) refuses at once; the web answers this error with 503.
    with (
        pytest.raises(OperationalError),
        db.driver_autocommit("postgresql+psycopg://x@127.0.0.1:9/x"),
    ):
        pass
