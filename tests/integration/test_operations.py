"""Operations on the real processes (CONTRACT §3 metrics, §9): JSON logs, /metrics summed over
gunicorn's two workers, the worker's own metrics endpoint, retention by housekeeping."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.local.processes import free_port, wait_until
from orchestrator.signing import job_callback_secret

from .conftest import flush_redis
from .harness import MASTER_SECRET, System, orders

pytestmark = pytest.mark.integration

REDIS_DB = 13
RETENTION_SECONDS = 8.0


@pytest.fixture(scope="module")
def ops(tmp_path_factory) -> Iterator[System]:
    log_dir = tmp_path_factory.mktemp("system-ops")
    flush_redis(REDIS_DB)
    running = System(
        log_dir,
        f"sqlite:///{log_dir / 'orchestrator.db'}",
        redis_db=REDIS_DB,
        HOUSEKEEPING_INTERVAL_SECONDS="1",
        LOG_FORMAT="json",
        WORKER_METRICS_PORT=str(free_port()),
        RETENTION_DAYS=repr(RETENTION_SECONDS / 86400),
        # An open job stays open for the retention test (the harness's default is 4 s).
        ROBOT_DEADLINE_MARGIN_SECONDS="120",
    )
    try:
        yield running.start()
    finally:
        running.stop()
        flush_redis(REDIS_DB)


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def web_metrics(system: System) -> dict[Any, float]:
    answer = requests.get(f"{system.base}/metrics", headers=system.headers(), timeout=10)
    assert answer.status_code == 200, answer.text
    return parse(answer.text)


def worker_metrics(system: System) -> dict[Any, float]:
    port = system.env["WORKER_METRICS_PORT"]
    return parse(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)


def json_lines(system: System, name: str) -> list[dict[str, Any]]:
    """Every line of a process's log, each parsed as JSON (a line that is not fails here)."""
    lines = []
    for number, line in enumerate(system.processes[name].log().splitlines(), 1):
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"{name}.log line {number} is not JSON: {line!r}")
    return lines


def received(system: System, job_id: str) -> bool:
    """The robot has the job (in the mode it had then): a mode change no longer affects it."""
    return system.robot_stats()["dispatches"].get(job_id) == 1


def test_every_log_line_is_json_and_the_chains_lines_carry_the_job_id(ops: System) -> None:
    answer = ops.submit(orders(3))
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    assert ops.wait_final(job_id)["status"] == "completed"
    ops.robot_config(mode="http_400")  # the failure path: the dispatch task raises, the errback
    try:
        refused_id = ops.submit(orders(1)).json()["id"]
        assert ops.wait_final(refused_id)["status"] == "failed"
    finally:
        ops.robot_reset()
    worker_closed = f"job {job_id} completed"
    wait_until(
        lambda: any(worker_closed in line.get("message", "") for line in json_lines(ops, "worker")),
        20,
        "the worker to log the job's close",
    )
    wait_until(lambda: json_lines(ops, "beat"), 30, "beat to log")

    for name in ("web", "worker", "beat"):
        for line in json_lines(ops, name):
            assert {"time", "level", "logger", "message"} <= set(line), line
            # Every line that names one of the jobs is marked as about it.
            for about in (job_id, refused_id):
                if about in line["message"]:
                    assert line.get("jobId") == about, (name, line)

    worker = [line for line in json_lines(ops, "worker") if line.get("jobId") == job_id]
    messages = " | ".join(line["message"] for line in worker)
    assert f"job {job_id} dispatched (3 items)" in messages
    assert worker_closed in messages
    # The refused dispatch: the task's error (its traceback inside the one line) and the close.
    refused = [line for line in json_lines(ops, "worker") if line.get("jobId") == refused_id]
    raised = [line for line in refused if "DispatchRefused" in line.get("exception", "")]
    assert raised and raised[0]["level"] == "ERROR", refused
    assert any(f"job {refused_id} failed" in line["message"] for line in refused), refused
    # The callbacks' access lines in the web log carry the job too.
    web = [line for line in json_lines(ops, "web") if line.get("jobId") == job_id]
    assert any(f"/api/robot/jobs/{job_id}/events" in line["message"] for line in web)
    assert any(line["logger"] == "gunicorn.access" for line in web)
    assert any(line["message"].endswith("ready.") for line in json_lines(ops, "worker"))


def test_metrics_need_the_api_token(ops: System) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        answer = requests.get(f"{ops.base}/metrics", headers=headers, timeout=10)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "unauthorized"


def test_callbacks_are_summed_over_both_web_workers(ops: System) -> None:
    before = web_metrics(ops)
    answer = ops.submit(orders(1))
    job_id = answer.json()["id"]
    sent = 40
    for _ in range(sent):
        # A new connection each time: either gunicorn worker may accept it.
        response = requests.post(
            f"{ops.base}/api/robot/jobs/{job_id}/events",
            data=b"{}",
            headers={"webhook-id": "x", "webhook-timestamp": "1", "webhook-signature": "v1,x"},
            timeout=10,
        )
        assert response.status_code == 401

    def served() -> set[int] | None:
        pids = {
            line["pid"]
            for line in json_lines(ops, "web")
            if line["logger"] == "gunicorn.access"
            and f"/api/robot/jobs/{job_id}/events" in line["message"]
        }
        return pids if len(pids) == 2 else None

    # Both processes answered some of them (each access line names its process).
    wait_until(served, 10, "both gunicorn workers to have served callbacks")
    after = web_metrics(ops)
    rejected = ("orchestrator_callbacks_total", (("outcome", "rejected"),))
    assert after[rejected] - before.get(rejected, 0) == sent
    statuses = {
        dict(labels)["status"]: value
        for (name, labels), value in after.items()
        if name == "orchestrator_jobs"
    }
    assert set(statuses) == {"pending", "processing", "completed", "failed", "cancelled"}


def test_the_workers_endpoint_sums_its_pool_processes(ops: System) -> None:
    before = worker_metrics(ops)
    accepted = ("orchestrator_dispatches_total", (("result", "accepted"),))
    woken = ("orchestrator_report_to_final_seconds_count", ())
    job_id = ops.submit(orders(2)).json()["id"]
    assert ops.wait_final(job_id)["status"] == "completed"

    def counted() -> dict[Any, float] | None:
        now = worker_metrics(ops)
        grew = now[accepted] > before.get(accepted, 0) and now[woken] > before.get(woken, 0)
        return now if grew else None

    # The dispatch is counted in a pool process, the wake-up in the main process.
    now = wait_until(counted, 20, "the worker's counters to grow")
    assert now[accepted] - before.get(accepted, 0) == 1
    for reason in ("deadline", "refused", "ambiguous", "robot_reported", "silence", "unexpected"):
        assert ("orchestrator_jobs_failed_total", (("reason", reason),)) in now


def test_retention_deletes_final_jobs_and_never_open_ones(ops: System) -> None:
    ops.robot_config(mode="never_finish")
    try:
        open_id = ops.submit(orders(1)).json()["id"]
        wait_until(lambda: received(ops, open_id), 20, "the robot to receive the open job")
    finally:
        ops.robot_reset()
    done_id = ops.submit(orders(1)).json()["id"]
    done = ops.wait_final(done_id)
    assert done["status"] == "completed"
    due = time.monotonic() + RETENTION_SECONDS

    def gone() -> bool:
        answer = requests.get(f"{ops.base}/api/jobs/{done_id}", headers=ops.headers(), timeout=10)
        return answer.status_code == 404

    wait_until(gone, RETENTION_SECONDS + 60, "the finished job to be deleted")
    assert time.monotonic() <= due + 60
    answer = requests.get(f"{ops.base}/api/jobs/{done_id}", headers=ops.headers(), timeout=10)
    assert answer.json()["error"]["code"] == "not_found"
    assert ops.job(open_id)["status"] == "processing"


def _restart_web(system: System, **env: str | None) -> None:
    system.processes.pop("web").stop()
    for name, value in env.items():
        if value is None:
            system.env.pop(name, None)
        else:
            system.env[name] = value
    system.start_process("web")


def test_rotation_keeps_jobs_dispatched_before_it_verifying(ops: System) -> None:
    # Runs last in this module: it restarts the web process with a new master secret.
    ops.robot_config(mode="never_finish")
    try:
        old_job = ops.submit(orders(2)).json()["id"]
        wait_until(lambda: received(ops, old_job), 20, "the robot to receive the job")
    finally:
        ops.robot_reset()
    first, second = (item["id"] for item in ops.job(old_job)["items"])
    old_secret = job_callback_secret(MASTER_SECRET, old_job)
    rotated = "rotated-master-secret"

    _restart_web(
        ops, ROBOT_CALLBACK_SECRET=rotated, ROBOT_CALLBACK_SECRET_PREVIOUS=f"x,{MASTER_SECRET}"
    )
    started = ops.send_event(old_job, "robot.item.started", {"itemId": first}, secret=old_secret)
    assert started.status_code == 200, started.text
    assert ops.job(old_job)["items"][0]["status"] == "processing"

    _restart_web(ops, ROBOT_CALLBACK_SECRET=rotated, ROBOT_CALLBACK_SECRET_PREVIOUS=None)
    refused = ops.send_event(old_job, "robot.item.started", {"itemId": second}, secret=old_secret)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized"
    # Nor does the current value sign for it: a job verifies only with the secret of the value
    # it was dispatched under (CONTRACT §9).
    new_secret = job_callback_secret(rotated, old_job)
    assert (
        ops.send_event(old_job, "robot.item.started", {"itemId": second}, secret=new_secret)
    ).status_code == 401
