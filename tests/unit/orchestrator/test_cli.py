"""The ``orchestrator`` CLI against the real web app served over HTTP in a thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from werkzeug.serving import make_server

from orchestrator import lifecycle
from orchestrator.cli import main
from orchestrator.db import session_scope
from orchestrator.local.processes import free_port, wait_until
from orchestrator.robot_events import apply_event

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
