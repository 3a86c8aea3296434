"""Engines across a fork, and the threads' own connections for the callbacks' statement."""

from __future__ import annotations

import os
import threading
import time

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


def _hot_pid(url: str) -> int:
    with db.driver_autocommit(url) as driver:
        assert driver.autocommit is True
        return int(driver.execute("SELECT pg_backend_pid()").fetchone()[0])


def test_each_thread_keeps_its_own_autocommit_connection_outside_the_pool(postgres_url):
    mine = _hot_pid(postgres_url)
    assert _hot_pid(postgres_url) == mine  # kept for the next request on this thread
    assert _backend_pid(postgres_url) != mine  # not the pool's
    other: list[int] = []
    thread = threading.Thread(target=lambda: other.append(_hot_pid(postgres_url)))
    thread.start()
    thread.join()
    assert other and other[0] != mine


def test_a_connection_the_server_closed_while_idle_is_replaced_before_use(postgres_url):
    lost = _hot_pid(postgres_url)
    with db.autocommit_connection(postgres_url) as other:
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": lost})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _backend_still_there(postgres_url, lost):
        time.sleep(0.02)
    # No error for the request that comes next: a new backend serves it.
    assert _hot_pid(postgres_url) != lost


def test_a_connection_idle_past_the_ping_threshold_is_pinged_and_replaced_if_dead(
    postgres_url, monkeypatch
):
    lost = _hot_pid(postgres_url)
    with db.autocommit_connection(postgres_url) as other:
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": lost})
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", -1.0)  # every use counts as idle
    assert _hot_pid(postgres_url) != lost


def test_dispose_all_closes_the_threads_connections(postgres_url):
    before = _hot_pid(postgres_url)
    db.dispose_all()
    assert not _backend_still_there(postgres_url, before)
    assert _hot_pid(postgres_url) != before


def _backend_still_there(url: str, pid: int) -> bool:
    with db.autocommit_connection(url) as conn:
        found = conn.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": pid}
        )
    return bool(found)


def test_a_statement_error_is_sqlalchemys_and_keeps_the_connection(postgres_url):
    with pytest.raises(ProgrammingError), db.driver_autocommit(postgres_url) as driver:
        kept = driver.execute("SELECT pg_backend_pid()").fetchone()[0]
        driver.execute("SELECT no_such_column")
    assert _hot_pid(postgres_url) == kept


def test_a_connection_lost_mid_statement_is_an_operational_error_and_is_dropped(postgres_url):
    with pytest.raises(OperationalError) as raised, db.driver_autocommit(postgres_url) as driver:
        lost = driver.execute("SELECT pg_backend_pid()").fetchone()[0]
        with db.autocommit_connection(postgres_url) as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": lost})
        driver.execute("SELECT 1")
    assert raised.value.connection_invalidated is True
    # The broken connection is gone: the next one is a new server backend.
    assert _hot_pid(postgres_url) != lost


def test_a_refused_connection_is_sqlalchemys_operational_error():
    # Port 9 (discard) refuses at once; the web answers this error with 503.
    with (
        pytest.raises(OperationalError),
        db.driver_autocommit("postgresql+psycopg://x@127.0.0.1:9/x"),
    ):
        pass
