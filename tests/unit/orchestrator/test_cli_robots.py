"""The CLI with several robots (CONTRACT §11): robots, pause/resume --robot, submit, list and
resubmit --robot, against the real web app served over HTTP in a thread."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator.robots import DAYS, Hours, RobotSettings

from ..conftest import unit_app
from .test_cli import cli, job_id_of, server  # noqa: F401 - fixtures

ROBOTS = ("north", "south")


def _closed_hours() -> Hours:
    day = DAYS[(datetime.now(UTC).weekday() + 2) % 7].capitalize()
    return Hours.parse(f"{day} 10:00-11:00", "America/Bogota")


@pytest.fixture
def app(sqlite_url, make_settings, fake_redis, started):
    several = (
        RobotSettings(name="north", url="http://127.0.0.1:9", max_active_jobs=2),
        RobotSettings(
            name="south", url="http://127.0.0.1:9", hours=_closed_hours(), timezone="America/Bogota"
        ),
    )

    def settings(**base: Any) -> Any:
        return make_settings(**base, several_robots=several)

    return unit_app(settings, sqlite_url)


@pytest.fixture
def csv_file(tmp_path) -> Path:
    path = tmp_path / "orders.csv"
    path.write_text("orderId,ciudad\nK-1,Cali\nK-2,Pasto\n")
    return path


def test_submit_needs_the_robot_and_shows_it(cli, csv_file, started):  # noqa: F811
    missing = cli("submit", str(csv_file))
    assert missing.exit_code == 2
    [line] = missing.stderr.splitlines()  # one line naming the field
    assert line.startswith("error: orders.csv: robot: robot is required: one of north, south")
    unknown = cli("submit", str(csv_file), "--robot", "nowhere")
    assert unknown.exit_code == 2 and "robot: " in unknown.stderr
    assert started.job_ids == []
    done = cli("submit", str(csv_file), "--robot", "south")
    assert done.exit_code == 0, done.output
    job_id = job_id_of(done.stdout)
    assert "robot south" in done.stdout.splitlines()[0]
    assert started.job_ids == [job_id]
    assert "robot south, queue position 1" in cli("status", job_id).stdout


def test_list_filters_by_robot(cli, csv_file):  # noqa: F811
    north = job_id_of(cli("submit", str(csv_file), "--robot", "north").stdout)
    south = job_id_of(cli("submit", str(csv_file), "--robot", "south").stdout)
    everything = cli("list").stdout
    assert north in everything and south in everything
    only = cli("list", "--robot", "north").stdout
    assert north in only and south not in only
    assert cli("list", "--robot", "north", "--status", "completed").stdout == (
        "no jobs with status completed and robot north\n"
    )
    refused = cli("list", "--robot", "nowhere")
    assert refused.exit_code == 2 and refused.stderr.startswith("error: robot: ")


def test_robots_shows_each_robot_state_capacity_queue_and_hours(cli, csv_file):  # noqa: F811
    cli("submit", str(csv_file), "--robot", "south")
    lines = cli("robots").stdout.splitlines()
    assert lines[0].split() == ["robot", "dispatching", "active", "waiting", "hours"]
    assert lines[1].split()[:5] == ["north", "running", "0/2", "0", "any"]
    south = lines[2]
    assert south.split()[:4] == ["south", "running", "0/-", "1"]
    hours = _closed_hours()
    opens = hours.next_open(datetime.now(UTC))
    assert opens is not None
    assert f"{hours.text} (America/Bogota): closed, opens {opens.isoformat()}" in south


def test_pause_and_resume_one_robot_or_every_robot(cli):  # noqa: F811
    paused = cli("pause", "--robot", "south", "--reason", "portal maintenance")
    assert paused.exit_code == 0, paused.output
    lines = paused.stdout.splitlines()
    assert lines[0] == "robot south"
    assert lines[1].startswith(f"hours: {_closed_hours().text} (America/Bogota), closed; opens ")
    assert lines[2:4] == ["dispatching: paused", "  reason: portal maintenance"]
    listed = cli("robots").stdout.splitlines()
    assert listed[1].split()[1] == "running" and listed[2].split()[1] == "paused"
    assert "reason: portal maintenance" in listed[3]
    assert cli("resume", "--robot", "south").stdout.splitlines()[2] == "dispatching: running"

    cli("pause", "--reason", "end of day")
    listed = cli("robots").stdout.splitlines()
    assert [line.split()[1] for line in listed[1:] if not line.startswith(" ")] == [
        "paused",
        "paused",
    ]
    assert cli("resume").stdout.splitlines()[0] == "dispatching: running"
    unknown = cli("pause", "--robot", "nowhere", "--reason", "x")
    assert unknown.exit_code == 2
    assert unknown.stderr.startswith("error: no robot nowhere at ")


def test_resubmit_to_another_robot(cli, csv_file, server):  # noqa: F811
    import requests

    from ..conftest import API_TOKEN

    job_id = job_id_of(cli("submit", str(csv_file), "--robot", "south").stdout)
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    cancelled = requests.post(f"{server}/api/jobs/{job_id}/cancel", headers=headers, timeout=10)
    assert cancelled.status_code == 200
    refused = cli("resubmit", job_id, "--robot", "nowhere")
    assert refused.exit_code == 1 and "robot: " in refused.stderr
    done = cli("resubmit", job_id, "--robot", "north")
    assert done.exit_code == 0, done.output
    assert f"2 orders, resubmitted from {job_id}, robot north" in done.stdout
    new_id = job_id_of(done.stdout)
    assert "robot north" in cli("status", new_id).stdout
