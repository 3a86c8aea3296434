"""Engine and session factory, with SQLite tuned for several writer processes."""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

# A pooled connection idle for longer than this is pinged (one round trip) before use; a
# busier one only gets a local check that the server has not closed its socket.
PING_AFTER_IDLE_SECONDS = 10.0

_factories: dict[tuple[int, str], sessionmaker[Session]] = {}


def make_engine(url: str) -> Engine:
    """Create an engine; on SQLite enable WAL, a busy timeout and BEGIN IMMEDIATE."""
    if not url.startswith("sqlite"):
        engine = create_engine(url, pool_size=5, max_overflow=10, pool_recycle=3600)
        _check_connections_on_checkout(engine)
        return engine
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

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
    the worker and one per callback (bench/README.md). Here a connection idle for
    ``PING_AFTER_IDLE_SECONDS`` is pinged; a busier one is checked locally: a readable
    socket on an idle connection means the server closed it (restart, terminated backend,
    a cut proxy). Either failure raises DisconnectionError, which makes the pool drop the
    connection and connect anew. What neither catches (a silent network loss) fails the
    statement with an OperationalError: a 503 at the edge, housekeeping in the worker.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None:  # a new connection
            return
        dead = _why_dead(engine, dbapi_conn, time.monotonic() - idle_since)
        if dead:
            raise DisconnectionError(dead)


def _why_dead(engine: Engine, dbapi_conn: Any, idle_seconds: float) -> str | None:
    """Why a driver connection idle this long must not be used again, or None if it is live."""
    try:
        if idle_seconds > PING_AFTER_IDLE_SECONDS:
            engine.dialect.do_ping(dbapi_conn)
            return None
        readable, _, _ = select.select([dbapi_conn.fileno()], [], [], 0)
    except Exception as exc:
        return f"the connection is dead: {exc}"
    return "the server closed this connection" if readable else None


def session_factory(url: str) -> sessionmaker[Session]:
    """Return this process's session factory for the URL (one engine per process)."""
    key = (os.getpid(), url)
    factory = _factories.get(key)
    if factory is None:
        factory = sessionmaker(make_engine(url), expire_on_commit=False)
        _factories[key] = factory
    return factory


def is_postgresql(url: str) -> bool:
    """True for a PostgreSQL URL (the configuration rewrites ``postgres://`` to this form)."""
    return url.startswith("postgresql")


def autocommit_connection(url: str) -> Connection:
    """A pooled connection in AUTOCOMMIT: each statement commits by itself (PostgreSQL)."""
    engine = session_factory(url).kw["bind"]
    return engine.connect().execution_options(isolation_level="AUTOCOMMIT")


class _HotConnection:
    """One thread's own driver connection in autocommit, with when it was last handed out."""

    __slots__ = ("driver", "last_used", "pid")

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.last_used = time.monotonic()
        self.pid = os.getpid()


_hot = threading.local()  # per thread: {url: _HotConnection}
_hot_lock = threading.Lock()
_hot_all: list[_HotConnection] = []  # every thread's, for dispose_all


def _connect_hot(engine: Engine, url: str) -> _HotConnection:
    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    driver = engine.dialect.loaded_dbapi.connect(*cargs, **cparams)
    driver.autocommit = True
    hot = _HotConnection(driver)
    with _hot_lock:
        _hot_all.append(hot)
    _hot.__dict__.setdefault("by_url", {})[url] = hot
    return hot


def _close_hot(hot: _HotConnection) -> None:
    with _hot_lock:
        if hot in _hot_all:
            _hot_all.remove(hot)
    if hot.pid == os.getpid():  # a parent's connection is left open for the parent
        with suppress(Exception):  # already broken: dropping it is all that is left
            hot.driver.close()


def _drop_hot(url: str, hot: _HotConnection) -> None:
    by_url = _hot.__dict__.get("by_url", {})
    if by_url.get(url) is hot:
        del by_url[url]
    _close_hot(hot)


def _live_hot(engine: Engine, url: str) -> _HotConnection:
    """This thread's connection for the URL, checked as the pool checks its own."""
    hot: _HotConnection | None = _hot.__dict__.get("by_url", {}).get(url)
    if hot is not None and (
        hot.pid != os.getpid()  # inherited across a fork: never reused
        or hot.driver.closed
        or _why_dead(engine, hot.driver, time.monotonic() - hot.last_used)
    ):
        _drop_hot(url, hot)
        hot = None
    return hot or _connect_hot(engine, url)


@contextmanager
def driver_autocommit(url: str) -> Iterator[Any]:
    """This thread's own driver (psycopg) connection in autocommit, for one hot statement.

    Skips SQLAlchemy's per-statement work (execution context, result metadata) and the pool's
    checkout and return, a large share of a callback's CPU in the web process
    (bench/README.md). Each thread keeps one connection per URL outside the engine's pool (a
    web process holds at most one more connection per gunicorn thread), checked before use
    as the pool checks its own: pinged after ``PING_AFTER_IDLE_SECONDS`` idle, else a local
    look at its socket. A driver error is raised as SQLAlchemy's own (``OperationalError``
    answers 503 at the edge), and a connection it broke is dropped.
    """
    engine: Engine = session_factory(url).kw["bind"]
    dbapi_error = engine.dialect.loaded_dbapi.Error
    try:
        hot = _live_hot(engine, url)
    except dbapi_error as exc:  # could not connect: the same error the pool would raise
        raise DBAPIError.instance(
            None, None, exc, dbapi_error, connection_invalidated=False, dialect=engine.dialect
        ) from exc
    driver = hot.driver
    broken = False
    try:
        yield driver
    except dbapi_error as exc:
        broken = engine.dialect.is_disconnect(exc, driver, None) or driver.closed
        raise DBAPIError.instance(
            None, None, exc, dbapi_error, connection_invalidated=broken, dialect=engine.dialect
        ) from exc
    finally:
        hot.last_used = time.monotonic()
        if broken or driver.closed:  # the one place a used connection leaves
            _drop_hot(url, hot)


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
    with _hot_lock:
        hot_all = list(_hot_all)
    for hot in hot_all:  # threads' own connections: closed if this process opened them
        _close_hot(hot)
    for (owner, _url), factory in _factories.items():
        bind = factory.kw.get("bind")
        if bind is not None:
            bind.dispose(close=owner == pid)
    _factories.clear()
