"""Run the web process: check the configuration, then serve under gunicorn on $PORT."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from orchestrator import logs, metrics
from orchestrator.config import Settings, load_settings_or_exit
from webapp import JOB_ID_ENVIRON


class GunicornLogger(Logger):  # type: ignore[misc]
    """gunicorn's error and access logs in LOG_FORMAT; an access line carries its job's id."""

    log_format = "text"

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        logs.apply_format([*self.error_log.handlers, *self.access_log.handlers], self.log_format)

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        with logs.job_context(environ.get(JOB_ID_ENVIRON)):
            super().access(resp, req, environ, request_time)


def _child_exit(_server: Any, worker: Any) -> None:
    metrics.mark_process_dead(worker.pid)


class WebServer(BaseApplication):  # type: ignore[misc]
    """gunicorn with the app factory, started only once the settings are known good."""

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from webapp import create_app

        return create_app(self.settings)


def main() -> None:
    settings = load_settings_or_exit()
    # Before anything imports prometheus_client: gunicorn's workers count into one directory.
    metrics.use_multiprocess_dir("web")
    logs.configure_root(settings.log_format)
    options = {
        "bind": f"0.0.0.0:{settings.port}",
        "workers": 2,
        "threads": 4,
        "worker_class": "gthread",
        "graceful_timeout": 8,
        "timeout": 60,
        "accesslog": "-",
        "loglevel": "info",
        "logger_class": type("WebLogger", (GunicornLogger,), {"log_format": settings.log_format}),
        "child_exit": _child_exit,
    }
    WebServer(settings, options).run()


if __name__ == "__main__":
    main()
