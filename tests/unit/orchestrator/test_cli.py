"""The ``orchestrator`` CLI against the real web app served over HTTP in a thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from werkzeug.serving import make_server

from orchestrator import lifecycle
from orchestrator.cli import main
from orchestrator.db import session_scope
from orchestrator.local.processes import free_port, wait_until
from orchestrator.models import Item
from orchestrator.robot_events import apply_event
from webapp import live

from ..conftest import API_TOKEN


@pytest.fixture
def server(app) -> Iterator[str]:
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{http.server_port}"
    http.shutdown()
    http.server_close()
    thread.join()


@pytest.fixture
def cli(server):
    """Run the CLI with the server's URL and a good token in the environment."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None):
        environ = {"ORCHESTRATOR_URL": server, "ORCHESTRATOR_TOKEN": API_TOKEN}
        return runner.invoke(main, list(args), input=input, env=environ, catch_exceptions=False)

    return run


@pytest.fixture
def csv_file(tmp_path) -> Path:
    path = tmp_path / "orders.csv"
    path.write_text("orderId,ciudad,peso_kg\nK-1,Cali,1.5\nK-2,Bogotá,2\nK-3,Pasto,1\n")
    return path


def job_id_of(output: str) -> str:
    first = output.splitlines()[0]
    assert first.startswith("job "), output
    return first.split()[1]


def finish(database_url: str, make_settings, job_id: str, report: str = "completed") -> None:
    """Play the worker and the robot: dispatch, one result per item, then the batch report."""
    settings = make_settings(database_url=database_url)
    with session_scope(database_url) as session:
        lifecycle.mark_processing(session, job_id)
    with session_scope(database_url) as session:
        ticket = lifecycle.claim_dispatch(session, job_id, settings)
        assert ticket is not None
    with session_scope(database_url) as session:
        first, second, *_ = (item["itemId"] for item in ticket.items)
        ok = {"itemId": first, "status": "success", "trackingNumber": "CO777"}
        apply_event(session, job_id, "m1", "robot.item.completed", ok)
        bad = {"itemId": second, "status": "error", "error": "no such street"}
        apply_event(session, job_id, "m2", "robot.item.completed", bad)
        if report == "completed":
            apply_event(session, job_id, "m3", "robot.batch.completed", {"items": []})
        else:
            apply_event(session, job_id, "m3", "robot.batch.failed", {"error": "portal down"})
    with session_scope(database_url) as session:
        lifecycle.finalize(session, job_id)


def test_submit_a_csv_file(cli, csv_file, started):
    result = cli("submit", str(csv_file))
    assert result.exit_code == 0, result.output
    job_id = job_id_of(result.stdout)
    assert result.stdout.startswith(f"job {job_id} pending: 3 orders")
    assert started.job_ids == [job_id]


def test_submit_json_from_stdin_with_an_idempotency_key(cli, started):
    body = '{"orders": [{"orderId": "S-1", "pedidoInput": {"a": 1}}]}'
    first = cli("submit", "-", "--idempotency-key", "k-1", input=body)
    assert first.exit_code == 0, first.output
    again = cli("submit", "-", "--idempotency-key", "k-1", input=body)
    assert again.exit_code == 0
    assert job_id_of(again.stdout) == job_id_of(first.stdout)
    assert "(the same Idempotency-Key made it before)" in again.stdout
    assert len(started.job_ids) == 1


def test_submit_waits_with_progress_and_prints_the_outcome(
    cli, csv_file, started, sqlite_url, make_settings
):
    def robot() -> None:
        wait_until(lambda: started.job_ids, 10, "the submit")
        finish(sqlite_url, make_settings, started.job_ids[0])

    thread = threading.Thread(target=robot)
    thread.start()
    result = cli("submit", str(csv_file), "--wait")
    thread.join()
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"job {started.job_ids[0]}: completed" in out
    assert "3 items: 1 success, 1 error, 1 unknown, 0 open" in out
    assert "K-1       success     CO777" in out
    assert "K-2       error       no such street" in out
    assert "check the courier's portal" in out


def test_submit_wait_exits_1_when_the_job_fails(cli, csv_file, started, sqlite_url, make_settings):
    def robot() -> None:
        wait_until(lambda: started.job_ids, 10, "the submit")
        finish(sqlite_url, make_settings, started.job_ids[0], report="failed")

    thread = threading.Thread(target=robot)
    thread.start()
    result = cli("submit", str(csv_file), "--wait")
    thread.join()
    assert result.exit_code == 1
    assert "the robot reported the batch failed: portal down" in result.stdout


def test_an_invalid_file_names_its_lines_and_sends_nothing(cli, tmp_path, started):
    path = tmp_path / "bad.csv"
    path.write_text('orderId,pedidoInput\nA,{}\n,{}\nC,"{oops"\n')
    result = cli("submit", str(path))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: bad.csv: line 3: orderId is empty",
        "error: bad.csv: line 4: pedidoInput is not valid JSON: "
        "Expecting property name enclosed in double quotes",
    ]
    assert started.job_ids == []


def test_the_servers_validation_comes_back_as_one_line(cli, tmp_path, started):
    path = tmp_path / "big.json"
    orders = ",".join(f'{{"orderId": "B-{n}", "pedidoInput": {{}}}}' for n in range(51))
    path.write_text(f'{{"orders": [{orders}]}}')
    result = cli("submit", str(path))
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: big.json: orders: must contain 1 to 50 orders"


def test_a_missing_file(cli, tmp_path):
    result = cli("submit", str(tmp_path / "nope.csv"))
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == f"error: cannot read {tmp_path / 'nope.csv'}: No such file or directory"
    )


def test_status_and_list_and_cancel(cli, csv_file, sqlite_url, make_settings, started):
    done = job_id_of(cli("submit", str(csv_file)).stdout)
    finish(sqlite_url, make_settings, done)
    open_job = job_id_of(cli("submit", str(csv_file)).stdout)

    status = cli("status", done)
    assert status.exit_code == 0
    assert f"job {done}: completed" in status.stdout and "CO777" in status.stdout
    as_json = cli("status", done, "--json")
    assert '"status": "completed"' in as_json.stdout

    listing = cli("list")
    assert listing.exit_code == 0
    assert done in listing.stdout and open_job in listing.stdout
    only = cli("list", "--status", "pending")
    assert open_job in only.stdout and done not in only.stdout
    assert cli("list", "--status", "cancelled").stdout.strip() == "no jobs with status cancelled"

    cancelled = cli("cancel", open_job)
    assert cancelled.exit_code == 0
    assert f"job {open_job}: cancelled" in cancelled.stdout
    again = cli("cancel", open_job)
    assert again.exit_code == 1
    assert again.stderr.strip() == "error: the job is already cancelled and cannot be cancelled"


def test_unknown_job(cli, server):
    result = cli("status", "no-such-job")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: no job no-such-job at {server}"


def test_unreachable_server_is_one_line():
    port = free_port()
    result = CliRunner().invoke(
        main, ["list", "--url", f"http://127.0.0.1:{port}", "--token", "t"], env={}
    )
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: cannot reach the orchestrator at http://127.0.0.1:{port} (connection refused)"
    )


def test_a_bad_token_is_one_line(cli):
    result = cli("list", "--token", "wrong-token")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: the server refused the API token (401): check --token or ORCHESTRATOR_TOKEN"
    )
    assert "wrong-token" not in result.output


def test_no_token_at_all(server):
    result = CliRunner().invoke(main, ["list", "--url", server], env={"ORCHESTRATOR_TOKEN": ""})
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: no API token: pass --token or set ORCHESTRATOR_TOKEN"


def test_a_url_that_is_not_the_orchestrator():
    def some_website(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/html")])
        return [b"<html>a shop</html>"]

    http = make_server("127.0.0.1", 0, some_website)
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        url = f"http://127.0.0.1:{http.server_port}"
        result = CliRunner().invoke(main, ["list", "--url", url, "--token", "t"], env={})
    finally:
        http.shutdown()
        http.server_close()
        thread.join()
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: unexpected answer from {url}/api/jobs (HTTP 200, not JSON): "
        "is this the orchestrator's URL?"
    )


# --- resubmit ---


def item_ids_by_order(database_url: str, job_id: str) -> dict[str, str]:
    with session_scope(database_url) as session:
        rows = session.execute(select(Item.order_id, Item.id).where(Item.job_id == job_id))
        return {order_id: item_id for order_id, item_id in rows}


def orders_of(database_url: str, job_id: str) -> list[str]:
    with session_scope(database_url) as session:
        return list(
            session.scalars(
                select(Item.order_id).where(Item.job_id == job_id).order_by(Item.position)
            )
        )


def test_resubmit_the_error_items_of_a_finished_job(
    cli, csv_file, sqlite_url, make_settings, started
):
    old = job_id_of(cli("submit", str(csv_file)).stdout)
    finish(sqlite_url, make_settings, old)  # K-1 success, K-2 error, K-3 unknown

    result = cli("resubmit", old, "--idempotency-key", "again-1")
    assert result.exit_code == 0, result.output
    new = job_id_of(result.stdout)
    assert result.stdout.strip() == f"job {new} pending: 1 orders, resubmitted from {old}"
    assert started.job_ids[-1] == new
    assert orders_of(sqlite_url, new) == ["K-2"]
    repeat = cli("resubmit", old, "--idempotency-key", "again-1")
    assert job_id_of(repeat.stdout) == new
    assert "(the same Idempotency-Key made it before)" in repeat.stdout
    assert f"resubmitOf   {old}" in cli("status", new).stdout


def test_resubmit_unknown_items_needs_confirm_unknown(
    cli, csv_file, sqlite_url, make_settings, started
):
    old = job_id_of(cli("submit", str(csv_file)).stdout)
    finish(sqlite_url, make_settings, old)
    items = item_ids_by_order(sqlite_url, old)

    refused = cli("resubmit", old, "--item", items["K-3"], "--item", items["K-1"])
    assert refused.exit_code == 1
    lines = refused.stderr.splitlines()
    assert lines[0] == "error: 2 of the items asked for cannot be resubmitted"
    assert sorted(lines[1:]) == sorted(
        [
            f"error: item {items['K-3']}: order K-3 is unknown: the robot may have entered it;"
            " check the courier's portal, then resubmit it with confirmUnknown: true",
            f"error: item {items['K-1']}: order K-1 is success (tracking number CO777): it was"
            " entered and is never resubmitted",
        ]
    )

    def robot() -> None:
        wait_until(lambda: len(started.job_ids) == 2, 10, "the resubmit")
        finish(sqlite_url, make_settings, started.job_ids[-1])

    thread = threading.Thread(target=robot)
    thread.start()
    confirmed = cli(
        "resubmit",
        old,
        "--item",
        items["K-2"],
        "--item",
        items["K-3"],
        "--confirm-unknown",
        "--wait",
    )
    thread.join()
    assert confirmed.exit_code == 0, confirmed.output
    new = job_id_of(confirmed.stdout)
    assert orders_of(sqlite_url, new) == ["K-2", "K-3"]
    assert f"job {new}: completed" in confirmed.stdout


def test_resubmit_refusals_are_one_line(cli, csv_file, server, started):
    open_job = job_id_of(cli("submit", str(csv_file)).stdout)
    result = cli("resubmit", open_job)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: the job is still pending: only a finished job can be resubmitted"
    )
    result = cli("resubmit", "no-such-job")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: no job no-such-job at {server}"
    cli("cancel", open_job)  # its items: error
    result = cli("resubmit", open_job, "--item", "no-such-item")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[1] == "error: item no-such-item: not an item of this job"


# --- orchestrator db prune (CONTRACT §9, retention by hand) ---


def test_db_prune_dry_run_counts_then_prune_deletes(database_url, make_settings) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from orchestrator.models import Job

    settings = make_settings()
    with session_scope(database_url) as session:
        job_id = lifecycle.create_job(session, [{"orderId": "A", "pedidoInput": {}}]).id
    with session_scope(database_url) as session:
        lifecycle.claim_dispatch(session, job_id, settings)
    with session_scope(database_url) as session:
        apply_event(session, job_id, "msg-1", "robot.batch.completed", {})
    with session_scope(database_url) as session:
        lifecycle.finalize(session, job_id)
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(finished_at=datetime.now(UTC) - timedelta(days=3))
        )
    with session_scope(database_url) as session:
        open_id = lifecycle.create_job(session, [{"orderId": "B", "pedidoInput": {}}]).id
    env = {"APP_ENV": "development", "DATABASE_URL": database_url}
    runner = CliRunner()

    dry = runner.invoke(main, ["db", "prune", "--older-than", "2.5", "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    counts = "1 jobs, 1 items, 1 events, 0 notifications"
    assert f"would delete {counts}" in dry.output
    with session_scope(database_url) as session:
        assert session.get(Job, job_id) is not None

    done = runner.invoke(main, ["db", "prune", "--older-than", "2.5"], env=env)
    assert done.exit_code == 0, done.output
    assert f"deleted {counts}" in done.output
    with session_scope(database_url) as session:
        assert session.get(Job, job_id) is None
        assert session.get(Job, open_id) is not None

    again = runner.invoke(main, ["db", "prune", "--older-than", "2.5"], env=env)
    assert "deleted 0 jobs" in again.output


def test_db_prune_needs_a_number_of_days() -> None:
    runner = CliRunner()
    for args in (["db", "prune"], ["db", "prune", "--older-than", "-1"]):
        answer = runner.invoke(main, args, env={"APP_ENV": "development"})
        assert answer.exit_code == 2
        assert "--older-than" in answer.output


# --- the robot's queue and dispatch control (CONTRACT §3, §7) ---


def test_submit_with_a_priority_shows_its_place(cli, csv_file, started):
    first = cli("submit", str(csv_file))
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines()[0].endswith("3 orders, queue position 1")
    urgent = cli("submit", str(csv_file), "--priority", "5")
    assert urgent.exit_code == 0, urgent.output
    job_id = job_id_of(urgent.stdout)
    assert urgent.stdout.splitlines()[0] == (
        f"job {job_id} pending: 3 orders, priority 5, queue position 1"
    )
    assert "  priority 5, queue position 1" in cli("status", job_id).stdout
    assert len(started.job_ids) == 2


@pytest.mark.parametrize("priority", ["101", "-101", "high", "1.5"])
def test_a_priority_out_of_range_is_refused_before_sending(cli, csv_file, started, priority):
    result = cli("submit", str(csv_file), "--priority", priority)
    assert result.exit_code == 2
    assert "--priority" in result.stderr
    assert started.job_ids == []


def test_queue_shows_the_state_and_the_waiting_jobs_in_dispatch_order(
    cli, csv_file, started, app, sqlite_url
):
    state = app.extensions["orchestrator"]
    state.settings = replace(state.settings, robot_max_active_jobs=2)
    low = job_id_of(cli("submit", str(csv_file), "--priority", "-2").stdout)
    plain = job_id_of(cli("submit", str(csv_file)).stdout)
    high = job_id_of(cli("submit", str(csv_file), "--priority", "9").stdout)
    result = cli("queue")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:3] == ["dispatching: running", "active jobs: 0 of 2", "waiting jobs: 3"]
    rows = [line.split() for line in lines if line.strip()[:1].isdigit()]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("1", "9", high, "3"),
        ("2", "0", plain, "3"),
        ("3", "-2", low, "3"),
    ]
    shown = cli("queue", "--limit", "1").stdout
    assert high in shown and plain not in shown
    assert "(showing the first 1 of 3 waiting jobs)" in shown

    state.settings = replace(state.settings, robot_max_active_jobs=None)
    assert "active jobs: 0 (no limit)" in cli("queue").stdout


def test_an_empty_queue(cli):
    result = cli("queue")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "dispatching: running",
        "active jobs: 0 (no limit)",
        "waiting jobs: 0",
        "",
        "no job is waiting",
    ]


def test_pause_with_an_end_then_resume(cli, server):
    paused = cli("pause", "--reason", "portal maintenance", "--until", "2999-01-01T06:00:00Z")
    assert paused.exit_code == 0, paused.output
    assert paused.stdout.splitlines()[:3] == [
        "dispatching: paused",
        "  reason: portal maintenance",
        "  until:  2999-01-01T06:00:00+00:00 (then it resumes by itself)",
    ]
    assert cli("queue").stdout.startswith("dispatching: paused\n  reason: portal maintenance")
    again = cli("pause", "--reason", "still down")
    assert "  until:  resumed by hand (orchestrator resume)" in again.stdout
    resumed = cli("resume")
    assert resumed.exit_code == 0
    assert resumed.stdout.splitlines()[0] == "dispatching: running"
    assert cli("queue").stdout.startswith("dispatching: running")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--reason", "x", "--until", "2001-01-01T00:00:00Z"],
            "until: must be a time in the future",
        ),
        (["--reason", "x", "--until", "next week"], "until: Not a valid datetime."),
        (["--reason", "x" * 501], "reason: "),
        (["--reason", ""], "reason: "),
    ],
)
def test_a_refused_pause_is_one_line_per_field(cli, args, message):
    result = cli("pause", *args)
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {message}"), line
    assert cli("queue").stdout.startswith("dispatching: running")


def test_pause_needs_a_reason(cli):
    result = cli("pause")
    assert result.exit_code == 2
    assert "--reason" in result.stderr


def test_queue_says_when_dispatching_paused_itself(cli, app, sqlite_url):
    from orchestrator import dispatch_control

    settings = app.extensions["orchestrator"].settings
    with session_scope(sqlite_url) as session:
        for _ in range(3):
            dispatch_control.count_failure(session, settings, "HTTP 503 from the robot", True)
    lines = cli("queue").stdout.splitlines()
    assert lines[0] == "dispatching: paused by itself after 3 failed dispatches in a row"
    assert "HTTP 503 from the robot" in lines[1]
    assert lines[2] == "  until:  resumed by hand (orchestrator resume)"


def test_credentials_in_the_url_never_reach_the_message():
    port = free_port()
    result = CliRunner().invoke(
        main,
        ["list", "--url", f"http://user:s3cretpw@127.0.0.1:{port}", "--token", "t"],
        env={},
    )
    assert result.exit_code == 1
    assert "s3cretpw" not in result.output
    assert result.stderr.strip() == (
        f"error: cannot reach the orchestrator at http://***@127.0.0.1:{port} (connection refused)"
    )


def test_status_follow_prints_each_change_from_the_live_stream(
    cli, csv_file, started, sqlite_url, make_settings, app
):
    job_id = job_id_of(cli("submit", str(csv_file)).stdout)
    hub = live.hub_of(app)

    def robot() -> None:
        wait_until(lambda: hub.count() == 1, 10, "the stream")  # the CLI is following
        finish(sqlite_url, make_settings, job_id)

    thread = threading.Thread(target=robot)
    thread.start()
    result = cli("status", job_id, "--follow")
    thread.join()
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "pending: 0 of 3 items done"
    assert "completed: 3 of 3 items done" in lines
    assert f"job {job_id}: completed" in lines
    wait_until(lambda: hub.count() == 0, 10, "the stream to close after the final state")


def test_status_follow_of_an_unknown_job_says_so(cli):
    result = cli("status", "no-such-job", "--follow")
    assert result.exit_code == 1
    assert "no job no-such-job at" in result.output


# --- orchestrator audit and db prune-audit (CONTRACT §12) ---


def test_audit_shows_who_did_what_newest_first_and_filters(cli, csv_file, started) -> None:
    job_id = job_id_of(cli("submit", str(csv_file)).output)
    assert cli("cancel", job_id).exit_code == 0

    shown = cli("audit")
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].split()[:3] == ["at", "actor", "action"]
    assert "job.cancelled" in lines[1] and job_id in lines[1]
    assert "job.submitted" in lines[2] and job_id in lines[2]
    only = cli("audit", "--action", "job.submitted", "--target", job_id).output.splitlines()
    assert len(only) == 2 and "job.submitted" in only[1]
    assert "no audit entries match" in cli("audit", "--actor", "nobody").output


def test_audit_with_a_token_below_operate_is_one_line(server, sqlite_url, app) -> None:
    from dataclasses import replace

    state = app.extensions["orchestrator"]
    state.settings = replace(state.settings, api_tokens=("grafana:read:reader-t0ken",))
    runner = CliRunner()
    env = {"ORCHESTRATOR_URL": server, "ORCHESTRATOR_TOKEN": "reader-t0ken"}
    done = runner.invoke(main, ["audit"], env=env)
    assert done.exit_code == 1
    assert done.output.startswith("error: the audit log needs a token with the operate role")
    assert len(done.output.strip().splitlines()) == 1


def test_db_prune_audit_dry_run_counts_then_deletes(database_url) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import func, update

    from orchestrator import audit
    from orchestrator.models import AuditEntry

    with session_scope(database_url) as session:
        for target in ("old", "new"):
            audit.record(session, audit.SYSTEM, "dispatch.paused", target)
    with session_scope(database_url) as session:
        session.execute(
            update(AuditEntry)
            .where(AuditEntry.target == "old")
            .values(at=datetime.now(UTC) - timedelta(days=40))
        )
    env = {"APP_ENV": "development", "DATABASE_URL": database_url}
    runner = CliRunner()
    args = ["db", "prune-audit", "--older-than", "30"]
    dry = runner.invoke(main, [*args, "--dry-run"], env=env)
    assert dry.exit_code == 0 and "would delete 1 audit entries" in dry.output
    done = runner.invoke(main, args, env=env)
    assert done.exit_code == 0 and "deleted 1 audit entries" in done.output
    with session_scope(database_url) as session:
        left = session.scalars(select(AuditEntry.target)).all()
        assert left == ["new"]
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == 1
