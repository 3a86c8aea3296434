"""A malformed API_TOKENS entry stops each process at start with one line (CONTRACT §12)."""

from __future__ import annotations

import pytest

from orchestrator.local.processes import bin_path, run_line

pytestmark = pytest.mark.integration

SECRET = "t0ken-s3cr3t-value"
MALFORMED = {
    "no role": f"shop:{SECRET}",
    "unknown role": f"shop:admin:{SECRET}",
    "empty token": "shop:read:",
    "bad name": f"Shop_1:read:{SECRET}",
    "name too long": f"{'a' * 41}:read:{SECRET}",
    "repeated name": f"shop:read:{SECRET},shop:operate:{SECRET}x",
}


def _run(process: str, value: str, **extra: str):
    env = {
        "PATH": bin_path(),
        "ROBOT_URL": "http://127.0.0.1:1",
        "ROBOT_CALLBACK_SECRET": "callback-s3cret-value",
        "PUBLIC_URL": "http://127.0.0.1:1",
        "API_TOKENS": value,
        **extra,
    }
    return run_line(process, env, timeout=60)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_the_web_process_stops_with_one_line_naming_api_tokens(case: str) -> None:
    done = _run("web", MALFORMED[case])

    assert done.returncode != 0
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("configuration error: API_TOKENS entry ")
    assert SECRET not in lines[0] and "shop" not in lines[0]


@pytest.mark.parametrize("process", ["release", "worker", "beat"])
def test_every_process_refuses_a_malformed_entry(process: str) -> None:
    done = _run(process, f"shop:admin:{SECRET}")

    assert done.returncode != 0
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert lines == [
        "configuration error: API_TOKENS entry 1: the role must be read, submit or operate"
    ]


def test_bare_and_named_tokens_together_start(tmp_path) -> None:
    # The release process reads the same settings and then migrates: it must run through.
    env_value = f"legacy-{SECRET},shop:submit:{SECRET}-2,grafana:read:{SECRET}-3"
    done = _run("release", env_value, DATABASE_URL=f"sqlite:///{tmp_path / 'release.db'}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert SECRET not in done.stdout + done.stderr
