"""Rate limits on the job API and the robot callbacks, and secure response headers.

Limits are fixed windows counted in Redis (the process's client for ``REDIS_URL``), so every
gunicorn process shares one count. Under a limit of ``BATCH_FROM`` requests or more per window,
a process adds its requests to that count in batches (every ``SYNC_EVERY`` requests or
``SYNC_SECONDS``, and at every request once the count it knows is within 10 % of the limit):
a Redis round trip costs a callback as much CPU as its database statement (bench/README.md).
The last 10 % of such a limit is counted exactly as long as ``SYNC_EVERY`` times the number of
processes stays below it; smaller limits are counted exactly, request by request. They are
configurable and generous by default:

* ``RATE_LIMIT_API`` (default ``3000/minute``): per API token on ``/api/jobs``,
  ``/api/dispatch``, ``/api/robots``, ``/api/notifications`` and ``/metrics`` — requests
  without a valid token share one bucket per client address, so guessing tokens is throttled
  too;
* ``RATE_LIMIT_CALLBACKS`` (default ``12000/minute``): robot callbacks, counted only once
  their signature is checked — per job for correctly signed ones, per client address for the
  rest (one bucket of their own): a flood of unsigned requests never makes the robot's signed
  callbacks answer 429.

A limit is ``<count>/<second|minute|hour>`` or ``<count>/<seconds>``; ``off`` disables it.
Past it the answer is 429 in the error envelope with ``Retry-After``. When Redis is down the
limits are not enforced (fail open): a lost Redis must not turn a robot's callback, which the
database alone can apply, into an error.

Also here: the Host check (Flask's ``TRUSTED_HOSTS``: ``PUBLIC_URL``'s host and the loopback
names; ``/healthz`` answers any Host, for probes by address) and, with ``TRUSTED_PROXY_HOPS``
set, werkzeug's ``ProxyFix`` so that client addresses and the scheme come from that many
proxies' ``X-Forwarded-For`` / ``X-Forwarded-Proto``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Flask, Request, Response, current_app, make_response, request
from redis.exceptions import RedisError
from werkzeug.middleware.proxy_fix import ProxyFix

from orchestrator.config import Settings

from .auth import find_token
from .errors import ApiError, error_response
from .state import orchestrator

log = logging.getLogger(__name__)

SYNC_EVERY = 20
SYNC_SECONDS = 0.25
BATCH_FROM = 2000
DEFAULT_API_LIMIT = "3000/minute"
DEFAULT_CALLBACK_LIMIT = "12000/minute"
_UNITS = {"second": 1, "minute": 60, "hour": 3600}
_LIMIT = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(\d+|second|minute|hour)s?\s*$", re.IGNORECASE)

SECURE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    # A view that needs more (say, a dashboard's inline script) sets its own policy.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
}
HSTS = "max-age=31536000; includeSubDomains"


@dataclass(frozen=True)
class Limit:
    count: int
    window: int  # seconds

    def __str__(self) -> str:
        return f"{self.count}/{self.window}s"


def parse_limit(name: str, raw: str) -> Limit | None:
    """Parse ``<count>/<unit or seconds>``; None for ``off``; ValueError naming ``name``."""
    if raw.strip().lower() in ("off", "none", "0"):
        return None
    match = _LIMIT.match(raw)
    if not match:
        raise ValueError(f"{name} must look like '600/minute' or 'off', got {raw!r}")
    count, unit = int(match.group(1)), match.group(2).lower()
    window = _UNITS.get(unit) or int(unit)
    if count < 1 or window < 1:
        raise ValueError(f"{name} needs a count and a window of at least 1")
    return Limit(count, window)


def configured_limit(app: Flask, name: str, default: str) -> Limit | None:
    """Read a limit from the app's config or the environment; a bad value keeps the default."""
    raw = str(app.config.get(name) or os.environ.get(name, "").strip() or default)
    try:
        return parse_limit(name, raw)
    except ValueError as exc:
        log.error("%s; using the default %s", exc, default)
        return parse_limit(name, default)


class WindowCounter:
    """This process's view of the shared fixed-window counts, synced with Redis in batches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}  # requests not yet added to Redis, per key
        self._known: dict[str, int] = {}  # the shared count at the last sync, per key
        self._synced_at: dict[str, float] = {}

    def hit(self, key: str, limit: Limit, now: float) -> int | None:
        """Count one request; return the window's count as best known (None: Redis down)."""
        with self._lock:
            pending = self._pending.get(key, 0) + 1
            self._pending[key] = pending
            estimate = self._known.get(key, 0) + pending
            due = (
                limit.count < BATCH_FROM
                or pending >= SYNC_EVERY
                or estimate * 10 >= limit.count * 9
                or now - self._synced_at.get(key, 0.0) >= SYNC_SECONDS
            )
            if not due:
                return estimate
            self._pending[key] = 0
            self._synced_at[key] = now
            if len(self._synced_at) > 10_000:  # keys of past windows pile up: forget them
                for table in (self._known, self._synced_at, self._pending):
                    table.clear()
                self._synced_at[key] = now
        try:
            pipe = orchestrator().rendezvous.redis.pipeline(transaction=True)
            pipe.incrby(key, pending)
            pipe.expire(key, limit.window + 1)
            count = int(pipe.execute()[0])
        except (RedisError, OSError) as exc:
            log.warning("rate limit not enforced: Redis unavailable (%s)", type(exc).__name__)
            return None
        with self._lock:
            self._known[key] = count
            return count + self._pending.get(key, 0)


LOOPBACK_HOSTS = ("localhost", "127.0.0.1")
UNCHECKED_HOST_PATHS = ("/healthz",)  # answers no URL built from the Host: probes by address


class EdgeRequest(Request):
    """A request whose Host is checked against TRUSTED_HOSTS, except on the health probe."""

    _trusted: list[str] | None = None

    @property  # type: ignore[override]
    def trusted_hosts(self) -> list[str] | None:
        return None if self.path in UNCHECKED_HOST_PATHS else self._trusted

    @trusted_hosts.setter
    def trusted_hosts(self, value: list[str] | None) -> None:
        self._trusted = value


def init_app(app: Flask) -> None:
    """Install the Host check, ProxyFix, the rate limits (before every request) and the
    secure headers (after)."""
    settings = orchestrator_settings(app)
    host = urlsplit(settings.public_url).hostname
    app.config["TRUSTED_HOSTS"] = [h for h in (host, *LOOPBACK_HOSTS) if h]
    app.request_class = EdgeRequest
    if settings.trusted_proxy_hops:
        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    limits = {
        "api": configured_limit(app, "RATE_LIMIT_API", DEFAULT_API_LIMIT),
        "callbacks": configured_limit(app, "RATE_LIMIT_CALLBACKS", DEFAULT_CALLBACK_LIMIT),
    }
    app.extensions["rate_limits"] = limits
    app.extensions["rate_counter"] = WindowCounter()
    app.before_request(_enforce_limits)
    app.after_request(_secure_headers)


# The bearer-token routes that share the API's limit (every route that takes API_TOKENS: one
# left out would let a client guess tokens there at any rate).
API_ROUTES = (
    "/api/jobs",
    "/api/dispatch",
    "/api/robots",
    "/api/notifications",
    "/api/audit",
    "/metrics",
)


def orchestrator_settings(app: Flask) -> Settings:
    return app.extensions["orchestrator"].settings


def _scope() -> tuple[str, str] | None:
    """Return (limit name, bucket) of this request, or None when no limit applies."""
    path = request.path
    if any(path == base or path.startswith(base + "/") for base in API_ROUTES):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        accepted = orchestrator().settings.tokens
        if scheme.lower() == "bearer" and token and find_token(token, accepted) is not None:
            return "api", "token:" + hashlib.sha256(token.encode()).hexdigest()[:32]
        return "api", f"addr:{request.remote_addr or 'unknown'}"
    return None  # the callbacks count themselves, once their signature is checked


def check_limit(name: str, bucket: str) -> None:
    """Count one request against a limit's bucket; raise a 429 ApiError past the limit."""
    limits = current_app.extensions.get("rate_limits")  # absent in a host app (library use)
    limit: Limit | None = limits[name] if limits else None
    if limit is None:
        return
    now = time.time()
    window_start = int(now // limit.window) * limit.window
    key = f"orchestrator:ratelimit:{name}:{bucket}:{window_start}"
    count = current_app.extensions["rate_counter"].hit(key, limit, now)
    if count is None or count <= limit.count:
        return
    retry_after = max(1, math.ceil(window_start + limit.window - now))
    raise ApiError(
        429,
        f"too many requests: at most {limit.count} per {limit.window} s; "
        f"retry after {retry_after} s",
        details={"retryAfter": retry_after},
        headers={"Retry-After": str(retry_after)},
    )


def check_callback_limit(job_id: str, signed: bool) -> None:
    """Count a callback after its signature check: per job if signed, else per address."""
    if signed:
        check_limit("callbacks", f"job:{job_id}")
    else:
        check_limit("callbacks", f"unsigned:{request.remote_addr or 'unknown'}")


def _enforce_limits() -> Response | None:
    scope = _scope()
    if scope is None:
        return None
    try:
        check_limit(*scope)
    except ApiError as exc:
        body, status = error_response(exc)  # type: ignore[misc]
        response = make_response(body, status)
        response.headers.update(exc.headers)
        return response
    return None


def _secure_headers(response: Response) -> Response:
    """Add every secure header the view did not set itself (one pass over its headers)."""
    wanted = list(SECURE_HEADERS.items())
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    if request.is_secure or forwarded == "https":
        wanted.append(("Strict-Transport-Security", HSTS))
    path = request.path
    if path.startswith("/api/") or (
        path.startswith("/dashboard") and not path.startswith("/dashboard/static/")
    ):
        wanted.append(("Cache-Control", "no-store"))  # job data stays out of every cache
    present = {name.lower() for name, _value in response.headers.items()}
    response.headers.extend(
        [(name, value) for name, value in wanted if name.lower() not in present]
    )
    return response
