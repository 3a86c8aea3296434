"""Run the web process: check the configuration, then serve under gunicorn on $PORT.

gunicorn runs gevent workers (docs/security.md, "Web server and slow clients"): each connection is a
greenlet, so a client that trickles its headers or its body holds a few kilobytes, not one of
a handful of threads. Each worker patches the standard library (``gevent.monkey.patch_all``)
before it loads the app; this module and ``webapp/__init__`` therefore import nothing that
opens sockets or starts threads (Flask, Celery, redis-py, psycopg) in the master process.
"""

from __future__ import annotations

import sys
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


def _post_worker_init(worker: Any) -> None:
    """On SIGTERM, also end the open live job streams (docs/live.md).

    gunicorn's gevent worker stops accepting and waits up to ``graceful_timeout`` for its
    connections to finish; a server-sent event stream never finishes by itself, so the
    worker would wait the whole time and then cut it. Ending the streams lets it go at once.
    """
    import signal

    import gevent

    from webapp import live

    handle_exit = worker.handle_exit

    def _on_term(sig: int, frame: Any) -> None:
        handle_exit(sig, frame)
        gevent.spawn(live.end_all_streams)  # out of the signal handler, as gunicorn does

    signal.signal(signal.SIGTERM, _on_term)
    signal.siginterrupt(signal.SIGTERM, False)


WORKERS = 2
# Connections one worker holds at once (gunicorn's default); slow ones cost a greenlet each.
WORKER_CONNECTIONS = 1000


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
        # In the worker, after fork and after gevent's patch (the gevent worker patches, then
        # loads the app): traces are set up here, never in the master (orchestrator.tracing).
        from orchestrator import tracing
        from webapp import create_app

        tracing.init_tracing("web")
        app = create_app(self.settings)
        tracing.instrument_app(app)
        return app


def bind_host(settings: Settings) -> str:
    """All interfaces, unless a public development default is in use: then loopback only."""
    return "127.0.0.1" if settings.dev_defaults_used else "0.0.0.0"  # noqa: S104


def server_options(settings: Settings) -> dict[str, Any]:
    """Return gunicorn's options for these settings."""
    return {
        "bind": f"{bind_host(settings)}:{settings.port}",
        "workers": WORKERS,
        # gunicorn's gevent worker, whose own errors (414, 431, 400) are JSON too.
        "worker_class": "webapp.gunicorn_worker.JsonErrorWorker",
        "worker_connections": WORKER_CONNECTIONS,
        # A connection must send its request's headers within this many seconds (gunicorn's
        # gevent worker reads them under this timeout); bodies are read as they come.
        "keepalive": 2,
        # On SIGTERM a worker stops accepting and lets its requests finish for this long
        # (ours take milliseconds); a client still trickling is then cut off, so the process
        # ends within the contract's 10 s.
        "graceful_timeout": 5,
        "timeout": 60,
        "accesslog": "-",
        "loglevel": "info",
        "logger_class": type("WebLogger", (GunicornLogger,), {"log_format": settings.log_format}),
        "child_exit": _child_exit,
        "post_worker_init": _post_worker_init,
    }


def main() -> None:
    settings = load_settings_or_exit()
    # Before anything imports prometheus_client: gunicorn's workers count into one directory.
    metrics.use_multiprocess_dir("web")
    logs.configure_root(settings.log_format)
    options = server_options(settings)
    if settings.dev_defaults_used:
        print(
            f"APP_ENV=development with public default values: listening on "
            f"{options['bind']} only (set them to listen on every interface)",
            file=sys.stderr,
        )
    WebServer(settings, options).run()


if __name__ == "__main__":
    main()
