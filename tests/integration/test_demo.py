"""``make demo`` end to end: on the local Redis, and on the embedded fallback.

Each run starts every process, pushes the 25-order batch through the simulator, prints the
table, stops everything and exits 0 only when the batch ended as planned.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import pytest
import requests

from orchestrator.local.processes import ROOT, free_port, wait_until
from tests import REDIS_PORT

pytestmark = pytest.mark.integration


def make_demo(**env: str) -> subprocess.CompletedProcess[str]:
    """Run ``make demo`` as a newcomer would, with no orchestrator variable set.

    ``-o`` keeps make from reinstalling the virtual environment this test runs in.
    """
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(
        ["make", "--no-print-directory", "demo", "-o", ".venv/.installed"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=240,
    )


def closed(url: str) -> bool:
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) != 0


def check_output(out: str) -> None:
    rows = re.findall(r"^  (DEMO-\d{4}) +(success|error) +(.+)$", out, re.M)
    assert len(rows) == 25, out
    errors = [order for order, status, _ in rows if status == "error"]
    assert errors == ["DEMO-1005", "DEMO-1012", "DEMO-1019"]
    for _, status, detail in rows:
        assert re.fullmatch(r"CO\d{10}", detail) if status == "success" else detail
    assert "demo: job completed as expected: 22 success, 3 error, 0 unknown of 25 orders" in out
    assert re.search(r"^  \[#{30}\]  25/25 items", out, re.M)
    assert out.rstrip().endswith("demo: stopped every process it started")
    # Nothing the demo started is left listening.
    web = re.search(r"demo: dashboard (http://\S+)/dashboard/", out)
    robot = re.search(r"demo: robot simulator on (http://\S+)", out)
    assert web and robot
    assert closed(web.group(1)) and closed(robot.group(1))


def test_make_demo_on_the_local_redis():
    # No REDIS_URL: the demo finds the local Redis (CI's .ci/run starts one).
    done = make_demo()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "demo: Redis: the local Redis, redis://127.0.0.1:6379/14" in done.stdout
    check_output(done.stdout)


def test_make_demo_on_the_embedded_redis():
    done = make_demo(DEMO_REDIS="embedded")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "demo: Redis: the embedded Redis (fakeredis)" in done.stdout
    assert "about 20x slower than a real Redis" in done.stdout
    check_output(done.stdout)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_make_run_serves_until_a_signal_then_stops_everything(tmp_path, sig):
    out = tmp_path / "run.out"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}/13",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}",
        "PORT": str(free_port()),
    }
    with out.open("w") as sink:
        run = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.local.demo", "--run"],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: "Ctrl-C stops it" in out.read_text() or run.poll() is not None,
            120,
            "make run to be up",
        )
        text = out.read_text()
        dashboard = re.search(r"dashboard +(http://\S+/dashboard/)", text)
        flower = re.search(r"Flower +(http://\S+/)", text)
        token = re.search(r"API token +(dev-\S+)", text)
        assert dashboard and flower and token, text
        login = requests.get(dashboard.group(1), timeout=10)
        assert login.status_code == 200 and "Sign in" in login.text
        assert requests.get(f"{flower.group(1)}api/workers", timeout=10).status_code == 401
        health = requests.get(
            f"{flower.group(1)}healthcheck", auth=("operator", token.group(1)), timeout=10
        )
        assert health.status_code == 200
        assert f"ORCHESTRATOR_TOKEN={token.group(1)}" in text
        # Two couriers, each its own simulator (CONTRACT §11).
        couriers = dict(re.findall(r"robot +([a-z-]+): (http://\S+) \(a simulator\)", text))
        assert list(couriers) == ["coordinadora", "servientrega"], text
        assert all(requests.get(f"{u}/healthz", timeout=10).ok for u in couriers.values())
        assert "submit examples/orders.csv --robot coordinadora --wait" in text
        base = dashboard.group(1).removesuffix("/dashboard/")
        headers = {"Authorization": f"Bearer {token.group(1)}"}
        robots = requests.get(f"{base}/api/robots", headers=headers, timeout=10).json()
        assert [r["name"] for r in robots["robots"]] == ["coordinadora", "servientrega"]
        run.send_signal(sig)
        assert run.wait(60) == 0
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    text = out.read_text()
    assert f"run: {signal.Signals(sig).name} received; stopping" in text
    assert text.rstrip().endswith("run: stopped every process it started")
    assert closed(dashboard.group(1)) and closed(flower.group(1))
    assert all(closed(url) for url in couriers.values())
