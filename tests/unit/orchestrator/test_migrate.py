"""Migration 0004 (jobs.resubmit_of) on SQLite and PostgreSQL, with data in the tables."""

from __future__ import annotations

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, delete, inspect, select, text
from sqlalchemy.exc import IntegrityError

from orchestrator import lifecycle
from orchestrator.db import dispose_all, session_scope
from orchestrator.migrate import alembic_config, downgrade, upgrade
from orchestrator.models import IdempotencyKey, Item, Job


def before_0004(url: str) -> str:
    """The revision 0004 follows (whatever the chain in front of it is)."""
    down = ScriptDirectory.from_config(alembic_config(url)).get_revision("0004").down_revision
    assert isinstance(down, str)
    return down


def new_job(url: str, resubmit_of: str | None = None) -> str:
    orders = [{"orderId": "ORD-1", "pedidoInput": {"n": 1}}]
    with session_scope(url) as session:
        return lifecycle.create_job(session, orders, resubmit_of=resubmit_of).id


def columns(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return {column["name"] for column in inspect(engine).get_columns("jobs")}
    finally:
        engine.dispose()


def test_down_and_up_again_keeps_every_job_and_item(database_url):
    old = new_job(database_url)
    new = new_job(database_url, resubmit_of=old)
    dispose_all()

    # Down: the column goes, the rows stay (no table is recreated, so nothing cascades).
    downgrade(database_url, before_0004(database_url))
    assert "resubmit_of" not in columns(database_url)
    engine = create_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 2
        assert conn.execute(text("SELECT count(*) FROM items")).scalar() == 2
    engine.dispose()

    upgrade(database_url)
    assert "resubmit_of" in columns(database_url)
    with session_scope(database_url) as session:
        assert session.scalar(select(Job.resubmit_of).where(Job.id == new)) is None
        assert len(session.scalars(select(Item)).all()) == 2


def test_resubmit_of_must_name_a_job(database_url):
    with pytest.raises(IntegrityError):
        new_job(database_url, resubmit_of="00000000-0000-0000-0000-000000000000")


def test_deleting_the_old_job_sets_resubmit_of_null_and_keeps_the_new_job(database_url):
    old = new_job(database_url)
    new = new_job(database_url, resubmit_of=old)
    with session_scope(database_url) as session:
        assert session.get(Job, new).resubmit_of == old
        session.execute(delete(Job).where(Job.id == old))
    with session_scope(database_url) as session:
        kept = session.get(Job, new)
        assert kept is not None and kept.resubmit_of is None
        assert [item.order_id for item in session.scalars(select(Item))] == ["ORD-1"]


# jobs.trace_parent (orchestrator.tracing): the migration that adds it.
TRACE_PARENT = "0005"


def test_trace_parent_comes_empty_for_existing_jobs_and_goes_without_losing_them(database_url):
    down = ScriptDirectory.from_config(alembic_config(database_url)).get_revision(TRACE_PARENT)
    assert isinstance(down.down_revision, str)
    job_id = new_job(database_url)
    dispose_all()
    downgrade(database_url, down.down_revision)
    assert "trace_parent" not in columns(database_url)
    engine = create_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM items")).scalar() == 1
    engine.dispose()

    upgrade(database_url)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with session_scope(database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None and job.trace_parent is None  # a job from before: none
        job.trace_parent = traceparent
    with session_scope(database_url) as session:
        assert session.scalar(select(Job.trace_parent).where(Job.id == job_id)) == traceparent


# jobs.robot and one dispatch control row per robot (CONTRACT §11).
ROBOTS_MIGRATION = "0008"


def test_existing_jobs_and_the_pause_belong_to_default_after_the_robots_migration(database_url):
    down = ScriptDirectory.from_config(alembic_config(database_url)).get_revision(ROBOTS_MIGRATION)
    assert isinstance(down.down_revision, str)
    dispose_all()
    downgrade(database_url, down.down_revision)
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, status, item_count, created_at, priority) "
                "VALUES ('old-job', 'pending', 0, CURRENT_TIMESTAMP, 0)"
            )
        )
        conn.execute(text("UPDATE dispatch_control SET paused = true, paused_reason = 'kept'"))
    engine.dispose()

    upgrade(database_url)

    with session_scope(database_url) as session:
        assert session.scalar(select(Job.robot).where(Job.id == "old-job")) == "default"
        row = session.execute(text("SELECT robot, paused, paused_reason FROM dispatch_control"))
        assert [tuple(r) for r in row] == [("default", True, "kept")]


def test_0006_keeps_every_key_and_deleting_a_job_leaves_its_key(database_url):
    """Migration 0006 rebuilds idempotency_keys (SQLite): its rows stay, and from then on a
    deleted job leaves its key behind with job_id NULL (CONTRACT §3)."""
    kept, gone = new_job(database_url), new_job(database_url)
    dispose_all()
    downgrade(database_url, TRACE_PARENT)
    engine = create_engine(database_url)
    with engine.begin() as conn:
        for job_id in (kept, gone):
            conn.execute(
                text(
                    "INSERT INTO idempotency_keys (token_digest, key, request_digest, job_id,"
                    " created_at) VALUES ('t', :key, 'd', :job, CURRENT_TIMESTAMP)"
                ),
                {"key": f"key-{job_id}", "job": job_id},
            )
    engine.dispose()

    upgrade(database_url)
    with session_scope(database_url) as session:
        session.execute(delete(Job).where(Job.id == gone))
    with session_scope(database_url) as session:
        keys = dict(session.execute(select(IdempotencyKey.key, IdempotencyKey.job_id)).all())
        assert keys == {f"key-{kept}": kept, f"key-{gone}": None}
        assert session.get(Job, kept).callback_key is None  # claimed before: no fingerprint
        assert len(session.scalars(select(Item)).all()) == 1


# audit_entries and jobs.created_by (CONTRACT §12): the migration that adds them.
AUDIT_LOG = "0007"


def test_created_by_comes_empty_for_existing_jobs_and_the_audit_table_goes_cleanly(database_url):
    from orchestrator import audit
    from orchestrator.models import AuditEntry

    down = ScriptDirectory.from_config(alembic_config(database_url)).get_revision(AUDIT_LOG)
    assert isinstance(down.down_revision, str)
    job_id = new_job(database_url)
    dispose_all()
    downgrade(database_url, down.down_revision)
    assert "created_by" not in columns(database_url)
    engine = create_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM items")).scalar() == 1
    engine.dispose()

    upgrade(database_url)
    with session_scope(database_url) as session:
        assert session.get(Job, job_id).created_by is None  # a job from before names: none
        audit.record(session, audit.SYSTEM, "dispatch.paused", "*", {"reason": "r"})
    with session_scope(database_url) as session:
        (entry,) = session.scalars(select(AuditEntry))
        assert (entry.actor, entry.details, entry.outcome) == ("system", {"reason": "r"}, "ok")
