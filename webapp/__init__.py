"""The HTTP edge: the job API, the robot's callbacks and the health check."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from orchestrator.config import Settings

# Flask, Celery, redis-py and the database drivers are imported inside create_app, not here:
# ``python -m webapp`` imports this package in gunicorn's master process, and the gevent
# worker must patch the standard library before any of them is first imported
# (docs/security.md, "Web server and slow clients").

# The WSGI environ key under which a request names the job it is about (gunicorn's access log).
JOB_ID_ENVIRON = "orchestrator.job_id"


def create_app(config: Settings | Mapping[str, object] | None = None) -> Flask:
    """Build the Flask app from settings, a mapping of setting overrides, or the environment."""
    from flask import Flask

    from orchestrator.celery_app import create_celery
    from orchestrator.config import Settings, load_settings, settings_from_mapping

    from . import access, dashboard, errors, live, openapi, security
    from .state import Orchestrator

    if isinstance(config, Settings):
        settings = config
    elif config is not None:
        settings = settings_from_mapping(config)
    else:
        settings = load_settings()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["orchestrator"] = state = Orchestrator(settings, create_celery(settings))
    live.init_app(app, state)  # the job streams' subscription, made by the first stream
    errors.init_app(app)
    init_job_logging(app)
    init_api(app)
    dashboard.init_app(app)  # the operator's pages under /dashboard
    app.session_interface = dashboard.DashboardSessions()  # no cookie session under /api/
    security.init_app(app)  # rate limits and secure headers
    openapi.init_app(app)  # GET /openapi.json
    access.check_rules(app)  # a state-changing route without a role rule stops here
    return app


def init_api(app: Flask) -> None:
    """Register the job, dispatch, robot, notification, audit and metrics APIs, callbacks."""
    from . import audit, callbacks, dispatch, health, jobs, metrics, notifications, robots

    app.register_blueprint(jobs.bp)
    app.register_blueprint(audit.bp)
    app.register_blueprint(dispatch.bp)
    app.register_blueprint(robots.bp)
    app.register_blueprint(notifications.bp)
    app.register_blueprint(callbacks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)


def init_job_logging(app: Flask) -> None:
    """Stop marking a request's log lines with its job once the request ends."""
    from flask import g

    from orchestrator import logs

    @app.teardown_request
    def _unbind_job(_exc: BaseException | None) -> None:
        token = g.pop("job_log_token", None)
        if token is not None:
            logs.unbind_job(token)


def bind_url_job() -> None:
    """Mark the request's log lines (and its access line) with the job its URL names.

    Called only once the request is authenticated (a valid API token, a signed-in dashboard
    user, a callback whose signature holds for that id): before that the id is whatever a
    stranger typed, and it must not reach a log line as the job a line is about.
    """
    from flask import g, request

    from orchestrator import logs

    job_id = (request.view_args or {}).get("job_id")
    if job_id and "job_log_token" not in g:
        g.job_log_token = logs.bind_job(job_id)
        request.environ[JOB_ID_ENVIRON] = job_id
