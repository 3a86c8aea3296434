"""Engine and session factory, with SQLite tuned for several writer processes."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
        try:
            if time.monotonic() - idle_since > PING_AFTER_IDLE_SECONDS:
                engine.dialect.do_ping(dbapi_conn)
                return
            readable, _, _ = select.select([dbapi_conn.fileno()], [], [], 0)
        except Exception as exc:
            raise DisconnectionError(f"pooled connection is dead: {exc}") from exc
        if readable:
            raise DisconnectionError("the server closed this pooled connection")


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


@contextmanager
def driver_autocommit(url: str) -> Iterator[Any]:
    """The pool's own driver (psycopg) connection in autocommit, for one hot statement.

    Skips SQLAlchemy's per-statement work (execution context, result metadata), a large share
    of a callback's CPU in the web process (bench/README.md). The connection comes from and
    goes back to the engine's pool, through its checkout check. A driver error is raised as
    SQLAlchemy's own (``OperationalError`` answers 503 at the edge), and a connection it
    broke is dropped from the pool.
    """
    engine: Engine = session_factory(url).kw["bind"]
    dbapi_error = engine.dialect.loaded_dbapi.Error
    # engine.connect(), not raw_connection(): a failed connect comes out as SQLAlchemy's
    # OperationalError (raw_connection() lets the driver's own error through).
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        try:
            driver.autocommit = True
            yield driver
        except dbapi_error as exc:
            broken = engine.dialect.is_disconnect(exc, driver, None) or driver.closed
            if broken:
                conn.invalidate(exc)
            raise DBAPIError.instance(
                None, None, exc, dbapi_error, connection_invalidated=broken, dialect=engine.dialect
            ) from exc
        finally:
            # Back to the pool as SQLAlchemy expects it, or out of it if it broke.
            if not conn.invalidated:
                if driver.closed:
                    conn.invalidate()
                else:
                    driver.autocommit = False


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
