"""The web process's start: gunicorn's options, and where it listens."""

from __future__ import annotations

import pytest
from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker

import webapp.__main__ as web_main
from orchestrator.config import load_settings

FULL = {
    "APP_ENV": "development",
    "ROBOT_URL": "http://robot.internal:8090",
    "ROBOT_CALLBACK_SECRET": "a-real-secret",
    "PUBLIC_URL": "https://orchestrator.example",
    "API_TOKENS": "a-real-token",
    "PORT": "5055",
}


def test_gevent_workers_read_slow_requests_without_holding_a_thread() -> None:
    options = web_main.server_options(load_settings(FULL))
    worker = util.load_class(options["worker_class"])
    assert issubclass(worker, GeventWorker)
    assert options["workers"] == 2
    assert options["graceful_timeout"] < 10  # SIGTERM ends the process within 10 s


@pytest.mark.parametrize(
    "missing", ["ROBOT_URL", "ROBOT_CALLBACK_SECRET", "PUBLIC_URL", "API_TOKENS"]
)
def test_a_development_default_binds_loopback_only_and_says_so(
    monkeypatch, capsys, missing: str
) -> None:
    env = {k: v for k, v in FULL.items() if k != missing}
    for name in FULL:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    started = _no_server(monkeypatch)

    web_main.main()

    assert started[0]["bind"] == "127.0.0.1:5055"
    err = capsys.readouterr().err
    assert f"using local defaults for {missing}" in err
    assert "listening on 127.0.0.1:5055 only" in err


def test_with_every_value_set_it_binds_every_interface(monkeypatch, capsys) -> None:
    for name, value in FULL.items():
        monkeypatch.setenv(name, value)
    started = _no_server(monkeypatch)

    web_main.main()

    assert started[0]["bind"] == "0.0.0.0:5055"
    assert "listening on" not in capsys.readouterr().err


def _no_server(monkeypatch) -> list[dict]:
    """Record the options main() would serve with; leave this process's metrics and logging."""
    started: list[dict] = []
    monkeypatch.setattr(web_main.WebServer, "run", lambda self: started.append(self.options))
    monkeypatch.setattr(web_main.metrics, "use_multiprocess_dir", lambda role: "")
    monkeypatch.setattr(web_main.logs, "configure_root", lambda log_format: None)
    return started
