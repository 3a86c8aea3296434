"""Engines across a fork, the pool's liveness check and the dialect-aware insert."""

from __future__ import annotations

import os
import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from orchestrator import db
from orchestrator.models import Event, Job, utcnow


def _backend_pid(url: str) -> int:
    with db.connect(url) as conn:
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


def _terminate(url: str, pid: int) -> None:
    """End a server backend from outside this process's pool; wait until it is gone."""
    outsider = create_engine(url, poolclass=NullPool)
    with outsider.connect() as other:
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        gone = text("SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = :p")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not other.scalar(gone, {"p": pid}):
            time.sleep(0.02)
    outsider.dispose()


def test_a_connection_the_server_closed_while_idle_is_replaced_on_checkout(postgres_url):
    lost = _backend_pid(postgres_url)
    _terminate(postgres_url, lost)
    # No error for the statement that comes next: the checkout saw the closed socket.
    assert _backend_pid(postgres_url) != lost


def test_a_connection_idle_past_the_ping_threshold_is_pinged_and_replaced_if_dead(
    postgres_url, monkeypatch
):
    lost = _backend_pid(postgres_url)
    _terminate(postgres_url, lost)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", -1.0)  # every checkout counts as idle
    assert _backend_pid(postgres_url) != lost


def test_a_refused_connection_is_sqlalchemys_operational_error():
    # Port 9 (discard) refuses at once; the web answers this error with 503.
    with pytest.raises(OperationalError), db.connect("postgresql+psycopg://x@127.0.0.1:9/x"):
        pass


def test_insert_or_skip_returns_a_row_only_for_a_new_key(database_url):
    events = Event.__table__
    insert = db.InsertOrSkip(events, [events.c.job_id, events.c.webhook_id], events.c.id)
    with db.session_scope(database_url) as session:
        session.add(Job(id="j1", status="pending", item_count=0, created_at=utcnow()))
    row = {"job_id": "j1", "webhook_id": "msg_1", "type": "t", "payload": {}, "late": False}
    with db.connect(database_url) as conn, conn.begin():
        first = conn.scalar(insert(conn), {**row, "received_at": utcnow()})
        again = conn.scalar(insert(conn), {**row, "received_at": utcnow()})
    assert first is not None
    assert again is None
