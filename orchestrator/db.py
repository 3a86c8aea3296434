"""Engine and session factory, with SQLite tuned for several writer processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

_factories: dict[tuple[int, str], sessionmaker[Session]] = {}


def make_engine(url: str) -> Engine:
    """Create an engine; on SQLite enable WAL, a busy timeout and BEGIN IMMEDIATE."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
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


def session_factory(url: str) -> sessionmaker[Session]:
    """Return this process's session factory for the URL (one engine per process)."""
    key = (os.getpid(), url)
    factory = _factories.get(key)
    if factory is None:
        factory = sessionmaker(make_engine(url), expire_on_commit=False)
        _factories[key] = factory
    return factory


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
    """Drop every engine (after a fork, or at the end of tests)."""
    for factory in _factories.values():
        bind = factory.kw.get("bind")
        if bind is not None:
            bind.dispose()
    _factories.clear()
