"""Who may see the dashboard, for how long, and the CSRF token on each of its forms.

A person signs in with one of API_TOKENS, or with DASHBOARD_USER / DASHBOARD_PASSWORD when that
password is configured; nobody gets in otherwise. The signed session cookie holds an HMAC of
the credential (never the credential), checked again on every request: removing a token from
API_TOKENS ends the sessions opened with it. It also holds a random session id whose record in
Redis lives ``SESSION_LIFETIME`` from the sign-in and never longer: signing out deletes it, so
a copy of the cookie kept from before is refused, and no request (the pages' live refresh
included) extends it.

Failed sign-ins are counted per client address and user (any name but DASHBOARD_USER counts as
the API-token login): after ``FREE_FAILURES`` of them that pair waits 1 s, then 2 s, 4 s, ... up
to ``MAX_WAIT_SECONDS`` between attempts. Another address, or another user, is never held up
by them (behind a proxy, set TRUSTED_PROXY_HOPS so that addresses are the clients' own).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import math
import secrets
import time
from datetime import UTC, datetime, timedelta

from flask import Flask, Request, abort, current_app, g, request, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin
from redis.exceptions import RedisError

from orchestrator.audit import Actor

from ..auth import find_token
from ..state import orchestrator

log = logging.getLogger(__name__)

SESSION_LIFETIME = timedelta(hours=12)
FREE_FAILURES = 5
MAX_WAIT_SECONDS = 300
FAILURES_KEPT_SECONDS = 900  # a quarter of an hour without a failure forgets them

_USER = "user"
_CREDENTIAL = "credential"
_CSRF = "csrf"
_SID = "sid"
_ISSUED = "issued"
_SESSIONS = "orchestrator:dashboard-session:"
_FAILURES = "orchestrator:dashboard-login-failures:"


class SessionStoreUnavailable(Exception):
    """Redis, which holds the sessions' records, did not answer."""


def _now() -> float:
    return time.time()


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

    def get_expiration_time(self, app: Flask, session: SessionMixin) -> datetime | None:
        """End the cookie when its session ends: the sign-in plus the lifetime, not later."""
        issued = session.get(_ISSUED)
        if session.permanent and isinstance(issued, int):
            return datetime.fromtimestamp(issued, UTC) + SESSION_LIFETIME
        return super().get_expiration_time(app, session)


def session_key(callback_secret: str) -> str:
    """Derive the session-signing key from ROBOT_CALLBACK_SECRET (never equal to it)."""
    return hmac.new(
        callback_secret.encode(), b"orchestrator dashboard session key", hashlib.sha256
    ).hexdigest()


def _mark(credential: str) -> str:
    key = str(current_app.secret_key).encode()
    return hmac.new(key, credential.encode(), hashlib.sha256).hexdigest()


def _credentials() -> list[tuple[str, str, str]]:
    """Every credential accepted right now (the form marks are made from), its name, role.

    A token signs in as its API_TOKENS name and role; DASHBOARD_USER as itself, ``operate``
    (CONTRACT §12). Looked up on every request: a changed role applies at once.
    """
    accepted = [(f"token:{t.token}", t.name, t.role) for t in orchestrator().settings.tokens]
    password = current_app.config.get("DASHBOARD_PASSWORD")
    if password:
        user = str(current_app.config["DASHBOARD_USER"])
        accepted.append((f"password:{user}:{password}", user, "operate"))
    return accepted


def check_login(user: str, password: str) -> tuple[str, str] | None:
    """Return (who, credential) when the login is good, else None."""
    token = find_token(password, orchestrator().settings.tokens) if password else None
    if token is not None:
        return token.name, f"token:{password}"
    configured = current_app.config.get("DASHBOARD_PASSWORD")
    if configured:
        expected_user = str(current_app.config["DASHBOARD_USER"])
        good_user = hmac.compare_digest(user.encode(), expected_user.encode())
        good_password = hmac.compare_digest(password.encode(), configured.encode())
        if good_user and good_password:
            return user, f"password:{user}:{password}"
    return None


def _failure_key(user: str) -> str:
    """The (address, user) pair a sign-in attempt counts against."""
    configured = str(current_app.config.get("DASHBOARD_USER") or "")
    who = user if configured and hmac.compare_digest(user.encode(), configured.encode()) else ""
    pair = f"{request.remote_addr or 'unknown'}\0{who}".encode()
    return _FAILURES + hashlib.sha256(pair).hexdigest()[:32]


def seconds_to_wait(user: str) -> int:
    """Return how long this address must wait before trying this user again (0: now).

    With Redis down the check is skipped (the sign-in still needs a valid credential).
    """
    try:
        left_ms = int(orchestrator().rendezvous.redis.pttl(_failure_key(user) + ":wait"))
    except RedisError:
        return 0
    return math.ceil(left_ms / 1000) if left_ms > 0 else 0  # -2: no wait, -1: cannot be


def count_failure(user: str) -> None:
    """Count a failed sign-in; past FREE_FAILURES, make the pair wait twice as long as before."""
    key = _failure_key(user)
    try:
        redis = orchestrator().rendezvous.redis
        pipe = redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, FAILURES_KEPT_SECONDS)
        failures = int(pipe.execute()[0])
        if failures >= FREE_FAILURES:
            wait = min(2 ** (failures - FREE_FAILURES), MAX_WAIT_SECONDS)
            redis.set(key + ":wait", failures, ex=wait)
    except RedisError:
        pass


def forget_failures(user: str) -> None:
    key = _failure_key(user)
    with contextlib.suppress(RedisError):
        orchestrator().rendezvous.redis.delete(key, key + ":wait")


def _session_record(sid: str) -> str:
    return _SESSIONS + hashlib.sha256(sid.encode()).hexdigest()


def sign_in(who: str, credential: str) -> None:
    """Start a fresh session (a new id and CSRF token) for a person who logged in.

    Raises SessionStoreUnavailable when Redis cannot record it.
    """
    sid = secrets.token_urlsafe(32)
    issued = int(_now())
    try:
        orchestrator().rendezvous.redis.set(
            _session_record(sid), who, ex=int(SESSION_LIFETIME.total_seconds())
        )
    except RedisError as exc:
        raise SessionStoreUnavailable from exc
    session.clear()
    session.permanent = True
    session[_USER] = who
    session[_CREDENTIAL] = _mark(credential)
    session[_CSRF] = secrets.token_urlsafe(32)
    session[_SID] = sid
    session[_ISSUED] = issued
    g.pop("dashboard_user", None)  # read again, with its role, on first use


def sign_out() -> None:
    """End the session here and in Redis: a copy of its cookie no longer signs in."""
    sid = session.get(_SID)
    if isinstance(sid, str):
        try:
            orchestrator().rendezvous.redis.delete(_session_record(sid))
        except RedisError:
            log.warning("sign-out: Redis unavailable; the session record expires by itself")
    session.clear()
    g.dashboard_user = None


def signed_in_user() -> str | None:
    """Return who is signed in: a live session record, an accepted credential, within 12 h."""
    actor = signed_in_actor()
    return actor.name if actor is not None else None


def signed_in_actor() -> Actor | None:
    """Return the signed-in person as an actor: name, role (looked up now), address."""
    if "dashboard_user" not in g:
        g.dashboard_user = _check_session()
    return g.dashboard_user


def _check_session() -> Actor | None:
    who, mark = session.get(_USER), session.get(_CREDENTIAL)
    sid, issued = session.get(_SID), session.get(_ISSUED)
    if not who or not isinstance(mark, str) or not isinstance(sid, str):
        return None
    if not isinstance(issued, int) or not 0 <= _now() - issued < SESSION_LIFETIME.total_seconds():
        return None
    found: tuple[str, str] | None = None
    for credential, name, role in _credentials():
        if hmac.compare_digest(mark, _mark(credential)):
            found = (name, role)
    if found is None:
        return None
    try:
        alive = orchestrator().rendezvous.redis.exists(_session_record(sid))
    except RedisError:
        # A session that was signed out must not come back while Redis is away.
        log.warning("dashboard: Redis unavailable, sessions cannot be checked")
        return None
    return Actor(found[0], found[1], request.remote_addr) if alive else None


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
