"""Who may see the dashboard, and the CSRF token on each of its forms.

A person signs in with one of API_TOKENS, or with DASHBOARD_USER / DASHBOARD_PASSWORD when that
password is configured; nobody gets in otherwise. The signed session cookie holds an HMAC of
the credential (never the credential), checked again on every request: removing a token from
API_TOKENS ends the sessions opened with it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from flask import Flask, Request, abort, current_app, request, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from redis.exceptions import RedisError

from ..auth import token_matches
from ..state import orchestrator

_USER = "user"
_CREDENTIAL = "credential"
_CSRF = "csrf"


class DashboardSessions(SecureCookieSessionInterface):
    """The signed session cookie, opened only where it can matter: never under ``/api/``.

    The job API authenticates by bearer token and the callbacks by signature; neither reads
    the session, and skipping the cookie's signature check saves every such request the work
    (bench/README.md). Those requests get Flask's null session: reading it finds nothing,
    writing to it fails loudly.
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path.startswith("/api/"):
            return None
        return super().open_session(app, request)


def session_key(callback_secret: str) -> str:
    """Derive the session-signing key from ROBOT_CALLBACK_SECRET (never equal to it)."""
    return hmac.new(
        callback_secret.encode(), b"orchestrator dashboard session key", hashlib.sha256
    ).hexdigest()


def _mark(credential: str) -> str:
    key = str(current_app.secret_key).encode()
    return hmac.new(key, credential.encode(), hashlib.sha256).hexdigest()


def _credentials() -> list[str]:
    """Every credential accepted right now, in the form their marks are made from."""
    accepted = [f"token:{t}" for t in orchestrator().settings.api_tokens]
    password = current_app.config.get("DASHBOARD_PASSWORD")
    if password:
        accepted.append(f"password:{current_app.config['DASHBOARD_USER']}:{password}")
    return accepted


def check_login(user: str, password: str) -> tuple[str, str] | None:
    """Return (who, credential) when the login is good, else None."""
    if password and token_matches(password, orchestrator().settings.api_tokens):
        return "API token", f"token:{password}"
    configured = current_app.config.get("DASHBOARD_PASSWORD")
    if configured:
        expected_user = str(current_app.config["DASHBOARD_USER"])
        good_user = hmac.compare_digest(user.encode(), expected_user.encode())
        good_password = hmac.compare_digest(password.encode(), configured.encode())
        if good_user and good_password:
            return user, f"password:{user}:{password}"
    return None


FAILED_LOGINS_PER_MINUTE = 20


def too_many_failures() -> bool:
    """Tell whether this address failed to sign in too often in the last minute.

    Counted in Redis, shared by every web process; with Redis down the check is skipped
    (the login still needs a valid credential).
    """
    key = f"orchestrator:dashboard-login-failures:{request.remote_addr or 'unknown'}"
    try:
        count = orchestrator().rendezvous.redis.get(key)
    except RedisError:
        return False
    return count is not None and int(count) >= FAILED_LOGINS_PER_MINUTE


def count_failure() -> None:
    key = f"orchestrator:dashboard-login-failures:{request.remote_addr or 'unknown'}"
    try:
        pipe = orchestrator().rendezvous.redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, 60)  # a minute without failures clears it
        pipe.execute()
    except RedisError:
        pass


def sign_in(who: str, credential: str) -> None:
    """Start a fresh session (a new CSRF token too) for a person who logged in."""
    session.clear()
    session.permanent = True
    session[_USER] = who
    session[_CREDENTIAL] = _mark(credential)
    session[_CSRF] = secrets.token_urlsafe(32)


def sign_out() -> None:
    session.clear()


def signed_in_user() -> str | None:
    """Return who is signed in, if their credential is still accepted."""
    who, mark = session.get(_USER), session.get(_CREDENTIAL)
    if not who or not isinstance(mark, str):
        return None
    found = False
    for credential in _credentials():
        found |= hmac.compare_digest(mark, _mark(credential))
    return who if found else None


def csrf_token() -> str:
    """Return the session's CSRF token, creating it on first use."""
    token = session.get(_CSRF)
    if not token:
        token = session[_CSRF] = secrets.token_urlsafe(32)
    return str(token)


def check_csrf() -> None:
    """Abort with 400 unless the form carries the session's CSRF token."""
    expected = session.get(_CSRF)
    given = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    if not expected or not hmac.compare_digest(given.encode(), str(expected).encode()):
        abort(400, "the form expired or did not come from this dashboard; reload and try again")
