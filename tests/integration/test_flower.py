"""Flower (the Procfile's ``flower``) watches the broker and shows each step of a job's chain."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests

from orchestrator.local.processes import FLOWER_USER, LocalSystem, wait_until
from tests import REDIS_PORT

pytestmark = pytest.mark.integration

REDIS_DB = 10
# The chain's steps as Flower names them. Its last step, ``orchestrator.finalize``, runs as a
# task only when a poll finds the report or the deadline; a job woken by its report is closed
# by the worker's report listener itself (docs/operations.md, Flower).
STEPS = (
    "orchestrator.mark_processing",
    "orchestrator.dispatch",
    "orchestrator.wait_for_report",
)


def _flush() -> None:
    client = redis.Redis(host="127.0.0.1", port=REDIS_PORT, db=REDIS_DB)
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def system(tmp_path_factory) -> Iterator[LocalSystem]:
    log_dir = tmp_path_factory.mktemp("flower")
    _flush()
    running = LocalSystem(
        log_dir,
        f"redis://127.0.0.1:{REDIS_PORT}/{REDIS_DB}",
        f"sqlite:///{log_dir / 'orchestrator.db'}",
        item_delay=0.05,
        settings={"ROBOT_SETTLE_SECONDS": "0.3"},
    )
    try:
        running.start(("robot", "web", "flower", "worker"), say=lambda line: None)
        yield running
    finally:
        running.stop()
        _flush()


def _submit(system: LocalSystem, count: int) -> str:
    orders = [{"orderId": f"FL-{n}", "pedidoInput": {"n": n}} for n in range(count)]
    answer = requests.post(
        f"{system.base}/api/jobs",
        json={"orders": orders},
        headers={"Authorization": f"Bearer {system.token}"},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def _tasks_of(system: LocalSystem, job_id: str) -> list[dict[str, Any]]:
    answer = requests.get(
        f"{system.flower}/api/tasks",
        auth=(FLOWER_USER, system.token),
        params={"limit": 1000},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return [task for task in answer.json().values() if job_id in (task.get("args") or "")]


def _job(system: LocalSystem, job_id: str) -> dict[str, Any]:
    return requests.get(
        f"{system.base}/api/jobs/{job_id}",
        headers={"Authorization": f"Bearer {system.token}"},
        timeout=10,
    ).json()


def _done(system: LocalSystem, job_id: str) -> list[dict[str, Any]] | None:
    """Return the job's tasks once it is final and Flower saw every step succeed.

    Also waits out a task still under way (a finalize sent by a poll that saw the report just
    before the listener closed the job), so the states below are the tasks' last ones.
    """
    if _job(system, job_id)["status"] != "completed":
        return None
    tasks = _tasks_of(system, job_id)
    finished = {t["name"] for t in tasks if t["state"] == "SUCCESS"}
    under_way = [t for t in tasks if t["state"] in ("PENDING", "RECEIVED", "STARTED")]
    return tasks if set(STEPS) <= finished and not under_way else None


def test_flower_shows_every_step_of_a_jobs_chain_by_name(system):
    # Flower sees only the events sent after it subscribed: a first job proves it listens.
    warm_up = _submit(system, 1)
    wait_until(lambda: _done(system, warm_up), 60, "Flower to see a first chain")

    job_id = _submit(system, 3)
    tasks = wait_until(lambda: _done(system, job_id), 60, "Flower to see every step")
    names = [task["name"] for task in sorted(tasks, key=lambda t: t["received"] or 0)]
    assert names[:3] == list(STEPS)
    # Nothing else ran for this job but, at most, a finalize that found it settled already
    # (when a poll saw the report before the listener closed the job).
    assert set(names) <= {*STEPS, "orchestrator.finalize"}
    assert {task["state"] for task in tasks} == {"SUCCESS"}
    assert all(task["worker"] for task in tasks)


def test_flower_is_not_open_without_its_password(system):
    assert requests.get(f"{system.flower}/api/tasks", timeout=10).status_code == 401
    wrong = requests.get(f"{system.flower}/api/tasks", auth=(FLOWER_USER, "nope"), timeout=10)
    assert wrong.status_code == 401
