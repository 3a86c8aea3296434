"""Engine and session factory, with SQLite tuned for several writer processes."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy
from sqlalchemy import Column, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import Insert

# A pooled connection idle for longer than this is pinged (one round trip) before use; a
# busier one only gets a local check that the server has not closed its socket.
PING_AFTER_IDLE_SECONDS = 10.0
IDLE_IN_TRANSACTION_MS = 60_000

_factories: dict[tuple[int, str], sessionmaker[Session]] = {}
# Session.info entries given to every session on a URL (kept across dispose_all and forks).
_session_info: dict[str, dict[str, Any]] = {}


def make_engine(url: str) -> Engine:
    """Create an engine; on SQLite enable WAL, a busy timeout and BEGIN IMMEDIATE."""
    if not url.startswith("sqlite"):
        # One pool per process; a connection the server dropped is replaced on checkout.
        # A worker host cut off mid-transaction must not hold its row locks forever: the
        # server ends a session idle inside a transaction (none is, across any I/O, here),
        # and keepalives let either side notice a peer that is gone (CONTRACT §10).
        # Looked up at each call: with traces on, the SQLAlchemy instrumentation wraps it.
        engine = sqlalchemy.create_engine(
            url,
            pool_size=5,
            max_overflow=10,
            pool_recycle=3600,
            connect_args={
                "connect_timeout": 10,
                "keepalives": 1,
                "keepalives_idle": 30,
                "keepalives_interval": 10,
                "keepalives_count": 3,
                "options": f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
            },
        )
        _check_connections_on_checkout(engine)
        return engine
    engine = sqlalchemy.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Take the write lock up front: no lock upgrade deadlocks between processes.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _check_connections_on_checkout(engine: Engine) -> None:
    """Hand out only live connections, without a round trip per checkout.

    ``pool_pre_ping`` pings on every checkout: one round trip per session, five per job in
    the worker and one per callback, a sixth of a callback's database work (bench/README.md).
    Here a connection idle for ``PING_AFTER_IDLE_SECONDS`` is pinged; a busier one is checked
    locally: a readable socket on an idle connection means the server closed it (restart,
    terminated backend, a cut proxy). Either failure raises DisconnectionError, which makes
    the pool drop the connection and connect anew. What neither catches (a silent network
    loss) fails the statement with an OperationalError: a 503 at the edge, housekeeping in
    the worker.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None:  # a new connection
            return
        try:
            if time.monotonic() - idle_since > PING_AFTER_IDLE_SECONDS:
                engine.dialect.do_ping(dbapi_conn)
                return
            readable, _, _ = select.select([dbapi_conn.fileno()], [], [], 0)
        except Exception as exc:
            raise DisconnectionError(f"the connection is dead: {exc}") from exc
        if readable:
            raise DisconnectionError("the server closed this connection")


def session_factory(url: str) -> sessionmaker[Session]:
    """Return this process's session factory for the URL (one engine per process)."""
    key = (os.getpid(), url)
    factory = _factories.get(key)
    if factory is None:
        info = dict(_session_info.get(url, {}))
        factory = sessionmaker(make_engine(url), expire_on_commit=False, info=info)
        _factories[key] = factory
    return factory


def configure_sessions(url: str, **info: Any) -> None:
    """Give every session this process opens on ``url`` these ``Session.info`` entries."""
    _session_info.setdefault(url, {}).update(info)
    factory = _factories.get((os.getpid(), url))
    if factory is not None:
        factory.configure(info=dict(_session_info[url]))


def connect(url: str) -> Connection:
    """A pooled connection of this process's engine (use it as a context manager)."""
    engine: Engine = session_factory(url).kw["bind"]
    return engine.connect()


class InsertOrSkip:
    """``INSERT … ON CONFLICT (columns) DO NOTHING RETURNING …``, built once per engine kind.

    Both engines have the statement, but SQLAlchemy builds it from each dialect's own
    ``insert``; a connection picks its own. No row back means the row existed already.
    """

    def __init__(self, table: Table, conflict: Sequence[Column[Any]], returning: Column[Any]):
        self._by_dialect: dict[str, Insert] = {
            name: module.insert(table)
            .on_conflict_do_nothing(index_elements=conflict)
            .returning(returning)
            for name, module in (("postgresql", postgresql), ("sqlite", sqlite))
        }

    def __call__(self, conn: Connection) -> Insert:
        return self._by_dialect[conn.dialect.name]


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """Open a session, commit on success, roll back on error, always close."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_all() -> None:
    """Drop every engine (after a fork, or at the end of tests).

    An engine inherited from the parent process is dropped without closing its connections:
    closing sends the server a goodbye on sockets the parent still uses (the worker's main
    process holds connections for the report listener while its pool processes fork).
    """
    pid = os.getpid()
    for (owner, _url), factory in _factories.items():
        bind = factory.kw.get("bind")
        if bind is not None:
            bind.dispose(close=owner == pid)
    _factories.clear()
