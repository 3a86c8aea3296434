"""A burst of concurrent changes leaves exactly one audit entry each (CONTRACT §12), on both
databases: the entry commits with its change, or neither does."""

from __future__ import annotations

import threading
from collections import Counter

from sqlalchemy import select

from orchestrator.db import session_scope
from orchestrator.models import AuditEntry, Job

from .test_access import (
    NAMES,
    ORDERS,
    TOKENS,
    bearer,
    enqueued,  # noqa: F401 (a fixture)
    roles_app,
)

BURST = 20


def test_twenty_concurrent_cancels_and_pauses_leave_one_entry_each(
    database_url,
    make_settings,
    fake_redis,
    started,
    enqueued,  # noqa: F811
) -> None:
    app = roles_app(make_settings, database_url)
    ops, reader = bearer(TOKENS["operate"]), bearer(TOKENS["read"])
    setup = app.test_client()
    job_ids = [
        setup.post("/api/jobs", json=ORDERS, headers=bearer(TOKENS["submit"])).json["id"]
        for _ in range(BURST)
    ]
    with session_scope(database_url) as session:
        session.execute(AuditEntry.__table__.delete())  # count only the burst's entries
    barrier = threading.Barrier(BURST * 3)
    answers: list[tuple[str, int]] = []
    lock = threading.Lock()

    def call(kind: str, n: int) -> None:
        client = app.test_client()
        barrier.wait()
        if kind == "cancel":
            # Each job cancelled once, while a reader is refused the same cancel.
            answer = client.post(f"/api/jobs/{job_ids[n]}/cancel", headers=ops)
        elif kind == "pause":
            body = {"reason": f"burst {n}"}
            answer = client.post("/api/dispatch/pause", json=body, headers=ops)
        else:  # a refused cancel: 403 and one denied entry
            answer = client.post(f"/api/jobs/{job_ids[n]}/cancel", headers=reader)
        with lock:
            answers.append((kind, answer.status_code))

    threads = [
        threading.Thread(target=call, args=(kind, n))
        for n in range(BURST)
        for kind in ("cancel", "pause", "denied")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    statuses = Counter(answers)
    assert statuses[("cancel", 200)] == BURST
    assert statuses[("pause", 200)] == BURST
    assert statuses[("denied", 403)] == BURST
    with session_scope(database_url) as session:
        rows = session.execute(
            select(AuditEntry.action, AuditEntry.target, AuditEntry.outcome, AuditEntry.actor)
        ).all()
        cancelled = set(session.scalars(select(Job.id).where(Job.status == "cancelled")))
    assert cancelled == set(job_ids)
    ok_cancels = Counter(
        r.target for r in rows if r.action == "job.cancelled" and r.outcome == "ok"
    )
    assert ok_cancels == Counter(job_ids)  # exactly one entry per change
    denied = Counter(r.target for r in rows if r.outcome == "denied")
    assert denied == Counter(job_ids)
    assert {r.actor for r in rows if r.outcome == "denied"} == {NAMES["read"]}
    pauses = [r for r in rows if r.action == "dispatch.paused"]
    assert len(pauses) == BURST and {r.target for r in pauses} == {"*"}
    assert len(rows) == BURST * 3
