"""The operator's dashboard: server-rendered pages over the job store, behind a login.

``init_app(app)`` registers it on an app built by ``webapp.create_app`` (it needs the
orchestrator state). Configuration: ``DASHBOARD_USER`` (default ``operator``) and
``DASHBOARD_PASSWORD`` (optional) from the environment; any of ``API_TOKENS`` also signs in.
"""

from __future__ import annotations

import os

from flask import Flask, redirect, url_for
from flask.typing import ResponseReturnValue

from ..state import Orchestrator
from .login import SESSION_LIFETIME, DashboardSessions, session_key
from .views import bp

__all__ = ["DashboardSessions", "bp", "init_app"]


def init_app(app: Flask) -> None:
    """Register the dashboard, its session settings, and ``/`` leading to it."""
    state: Orchestrator = app.extensions["orchestrator"]
    settings = state.settings
    if not app.secret_key:
        app.secret_key = session_key(settings.robot_callback_secret)
    app.config.setdefault("DASHBOARD_USER", os.environ.get("DASHBOARD_USER") or "operator")
    app.config.setdefault("DASHBOARD_PASSWORD", os.environ.get("DASHBOARD_PASSWORD") or None)
    # Set, not setdefault: Flask's defaults already hold these keys.
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.public_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        SESSION_REFRESH_EACH_REQUEST=False,  # the live refresh must not re-send the cookie
    )
    app.register_blueprint(bp)
    if not any(rule.rule == "/" for rule in app.url_map.iter_rules()):
        app.add_url_rule("/", "dashboard_home", _home)


def _home() -> ResponseReturnValue:
    return redirect(url_for("dashboard.index"))
