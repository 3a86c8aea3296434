"""Read the environment once into one typed settings object (CONTRACT §2)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from urllib.parse import urlsplit, urlunsplit

from .robots import DEFAULT_ROBOT, Hours, RobotSettings, valid_name, variable_prefix, zone


class ConfigError(Exception):
    """A required setting is missing or invalid; the message names the variable."""


DEV_DEFAULTS: dict[str, str] = {
    "ROBOT_URL": "http://127.0.0.1:8090",
    "ROBOT_CALLBACK_SECRET": "development-only-callback-secret",
    "PUBLIC_URL": "http://127.0.0.1:5000",
    "API_TOKENS": "dev-token",
}


# CONTRACT §12: each role includes the ones before it.
ROLES = ("read", "submit", "operate")
_TOKEN_NAME = re.compile(r"[a-z][a-z0-9-]{0,39}")


@dataclass(frozen=True)
class ApiToken:
    """One entry of API_TOKENS: a name for the audit log, a role, and the bearer token."""

    name: str
    role: str
    token: str = field(repr=False)


def role_includes(role: str, needed: str) -> bool:
    """Tell whether ``role`` may do what ``needed`` may (read < submit < operate)."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def bare_token_name(token: str) -> str:
    """Name a bare token: ``token-`` and the first 8 hex digits of its SHA-256."""
    return "token-" + hashlib.sha256(token.encode()).hexdigest()[:8]


def parse_api_tokens(entries: tuple[str, ...]) -> tuple[ApiToken, ...]:
    """Read API_TOKENS entries: a bare token (operate) or ``name:role:token`` (CONTRACT §12).

    The messages name the entry by its place, never by its text: a malformed entry may be
    a token with a colon in it, so not even its name part is shown.
    """
    parsed: list[ApiToken] = []
    seen: dict[str, int] = {}
    for place, entry in enumerate(entries, start=1):
        if ":" not in entry:
            token = ApiToken(bare_token_name(entry), "operate", entry)
        else:
            name, _, rest = entry.partition(":")
            role, _, secret = rest.partition(":")
            if not _TOKEN_NAME.fullmatch(name):
                raise ConfigError(
                    f"API_TOKENS entry {place}: a name:role:token entry needs a name of 1-40 "
                    "characters of a-z, 0-9 and -, starting with a letter"
                )
            if role not in ROLES:
                raise ConfigError(
                    f"API_TOKENS entry {place}: the role must be read, submit or operate"
                )
            if not secret:
                raise ConfigError(f"API_TOKENS entry {place}: the token after name:role: is empty")
            token = ApiToken(name, role, secret)
        if token.name in seen:
            raise ConfigError(
                f"API_TOKENS entry {place} repeats the name of entry {seen[token.name]}"
            )
        seen[token.name] = place
        parsed.append(token)
    return tuple(parsed)


@dataclass(frozen=True)
class Settings:
    """Every setting the processes read, typed, with the contract's defaults."""

    app_env: str = "production"
    database_url: str = "sqlite:///orchestrator.db"
    redis_url: str = "redis://localhost:6379/0"
    celery_broker_url: str = ""
    redis_sentinel_master: str | None = None
    robot_url: str = ""
    robot_api_token: str | None = field(default=None, repr=False)
    robot_callback_secret: str = field(default="", repr=False)
    public_url: str = ""
    # API_TOKENS as written, one entry each; ``tokens`` is what they mean (CONTRACT §12).
    api_tokens: tuple[str, ...] = field(default=(), repr=False)
    robot_seconds_per_item: float = 30.0
    robot_deadline_margin_seconds: float = 300.0
    robot_settle_seconds: float = 2.0
    robot_dispatch_timeout_seconds: float = 30.0
    max_batch_size: int = 500
    max_body_bytes: int = 2_097_152
    port: int = 5000
    notify_url: str = ""
    notify_secret: str = field(default="", repr=False)
    notify_backoff_seconds: float = 10.0
    notify_give_up_seconds: float = 86400.0
    robot_callback_secret_previous: tuple[str, ...] = field(default=(), repr=False)
    retention_days: float | None = None
    log_format: str = "text"
    # Robot capacity and dispatch control (CONTRACT §7): None means no limit / off.
    robot_max_active_jobs: int | None = None
    robot_silence_timeout_seconds: float | None = None
    robot_pause_after_failures: int = 3
    # Opening hours (CONTRACT §11): ROBOT_HOURS read in ROBOT_TIMEZONE; None: at any time.
    robot_hours: Hours | None = None
    robot_timezone: str = "UTC"
    # With ROBOTS set: the robots it names, in its order; empty: one robot, ``default``,
    # built from the unprefixed ROBOT_* settings above (``robots``).
    several_robots: tuple[RobotSettings, ...] = ()
    # Not in the contract: operational knobs with safe defaults (docs/configuration.md).
    # 5 s: a pause's `until` and the silence timeout act within 20 s of their time (§7) with
    # room for a slow tick; the hand-off's safety net runs as often.
    housekeeping_interval_seconds: float = 5.0
    rekick_after_seconds: float = 120.0
    wait_poll_max_seconds: float = 3600.0  # default: half of broker_visibility_timeout
    broker_visibility_timeout: int = 7200
    worker_metrics_port: int | None = None
    trusted_proxy_hops: int = 0  # proxies in front of web whose X-Forwarded-* are believed
    # Live job streams (CONTRACT §13): a comment at least this often (the contract: 15 s),
    # and a re-read of the job from the database at least this often (the safety net for a
    # lost announcement; 5 s cost a web worker with 1,000 streams 200 reads a second and
    # slowed its other requests to seconds: bench/README.md).
    live_keepalive_seconds: float = 10.0
    live_reread_seconds: float = 15.0
    dev_defaults_used: tuple[str, ...] = ()
    tokens: tuple[ApiToken, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Derived here, so settings built by tests or ``replace`` are checked the same way.
        object.__setattr__(self, "tokens", parse_api_tokens(self.api_tokens))

    @property
    def broker_url(self) -> str:
        """Return the Celery broker URL: the override, else the Redis URL."""
        return self.celery_broker_url or self.redis_url

    @cached_property
    def robots(self) -> tuple[RobotSettings, ...]:
        """Return every configured robot, in the order of ROBOTS (one, ``default``, without)."""
        return self.several_robots or (self.unprefixed_robot(DEFAULT_ROBOT),)

    @cached_property
    def _robots_by_name(self) -> dict[str, RobotSettings]:
        return {robot.name: robot for robot in self.robots}

    def robot(self, name: str) -> RobotSettings | None:
        """Return the configured robot of this name; None when there is none."""
        return self._robots_by_name.get(name)

    def robot_or_fallback(self, name: str) -> RobotSettings:
        """Return the robot, or for one no longer configured the unprefixed settings' values.

        A robot taken out of ROBOTS still has dispatched jobs to settle (CONTRACT §11): their
        silence timeout and the like come from the unprefixed variables, then the defaults.
        """
        return self.robot(name) or self.unprefixed_robot(name)

    def unprefixed_robot(self, name: str) -> RobotSettings:
        """Return a robot of this name with the unprefixed ROBOT_* settings."""
        several = bool(self.several_robots)
        return RobotSettings(
            name=name,
            url="" if several else self.robot_url,
            api_token=None if several else self.robot_api_token,
            max_active_jobs=self.robot_max_active_jobs,
            seconds_per_item=self.robot_seconds_per_item,
            deadline_margin_seconds=self.robot_deadline_margin_seconds,
            dispatch_timeout_seconds=self.robot_dispatch_timeout_seconds,
            silence_timeout_seconds=self.robot_silence_timeout_seconds,
            pause_after_failures=self.robot_pause_after_failures,
            hours=self.robot_hours,
            timezone=self.robot_timezone,
        )

    @property
    def robot_names(self) -> tuple[str, ...]:
        """Return the configured robots' names, in order."""
        return tuple(robot.name for robot in self.robots)

    @property
    def callback_secrets(self) -> tuple[str, ...]:
        """Return the master secrets a callback may be signed under: current first."""
        return (self.robot_callback_secret, *self.robot_callback_secret_previous)

    def secrets(self) -> list[str]:
        """Return every secret value that must never reach a log or a response."""
        values = [
            *(t.token for t in self.tokens),
            self.robot_api_token or "",
            *(robot.api_token or "" for robot in self.robots),
            *self.callback_secrets,
            self.notify_secret,
            self.notify_secret.removeprefix("whsec_"),
        ]
        for url in (self.database_url, self.redis_url, self.broker_url, self.notify_url):
            password = urlsplit(url).password
            if password:
                values.append(password)
        return [v for v in values if v]

    def __repr__(self) -> str:
        """Show every setting except the secrets; URL passwords are masked."""
        shown = []
        for f in fields(self):
            if not f.repr:
                continue
            value = getattr(self, f.name)
            if f.name.endswith("_url") and isinstance(value, str):
                value = mask_password(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"


def mask_password(url: str) -> str:
    """Return the URL with any password replaced by ``***``."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _float(name: str, raw: str, minimum: float = 0.0) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum or value == float("inf"):
        raise ConfigError(f"{name} must be a finite number >= {minimum:g}")
    return value


def _int(name: str, raw: str, minimum: int = 1) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}")
    return value


def _keepalive(name: str, raw: str) -> float:
    value = _float(name, raw, minimum=0.1)
    if value > 15:
        raise ConfigError(f"{name} must be at most 15 (CONTRACT §13: a comment every 15 s)")
    return value


def _comma_list(name: str, raw: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in raw.split(",") if t.strip())


def _log_format(name: str, raw: str) -> str:
    if raw not in ("text", "json"):
        raise ConfigError(f"{name} must be 'text' or 'json', got {raw!r}")
    return raw


def _http_url(name: str, raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} must be an http(s) URL")
    return raw.rstrip("/")


def _webhook_secret(name: str, raw: str) -> str:
    body = raw.removeprefix("whsec_")
    try:
        key = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not raw.startswith("whsec_") or not key:
        # Never echo the value: it is a secret.
        raise ConfigError(f"{name} must be a Standard Webhooks secret: whsec_ and base64")
    return raw


def normalize_database_url(url: str) -> str:
    """Rewrite Heroku-style ``postgres://`` URLs for SQLAlchemy 2 and psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


_PARSERS: dict[str, tuple[str, Callable[[str, str], object]]] = {
    "DATABASE_URL": ("database_url", lambda n, v: normalize_database_url(v)),
    "REDIS_URL": ("redis_url", lambda n, v: v),
    "CELERY_BROKER_URL": ("celery_broker_url", lambda n, v: v),
    "REDIS_SENTINEL_MASTER": ("redis_sentinel_master", lambda n, v: v),
    "ROBOT_URL": ("robot_url", _http_url),
    "ROBOT_API_TOKEN": ("robot_api_token", lambda n, v: v),
    "ROBOT_CALLBACK_SECRET": ("robot_callback_secret", lambda n, v: v),
    "PUBLIC_URL": ("public_url", _http_url),
    "API_TOKENS": ("api_tokens", _comma_list),
    "ROBOT_CALLBACK_SECRET_PREVIOUS": ("robot_callback_secret_previous", _comma_list),
    "ROBOT_SECONDS_PER_ITEM": ("robot_seconds_per_item", _float),
    "ROBOT_DEADLINE_MARGIN_SECONDS": ("robot_deadline_margin_seconds", _float),
    "ROBOT_SETTLE_SECONDS": ("robot_settle_seconds", _float),
    "ROBOT_DISPATCH_TIMEOUT_SECONDS": (
        "robot_dispatch_timeout_seconds",
        lambda n, v: _float(n, v, minimum=0.001),
    ),
    "MAX_BATCH_SIZE": ("max_batch_size", _int),
    "MAX_BODY_BYTES": ("max_body_bytes", _int),
    "PORT": ("port", lambda n, v: _int(n, v, minimum=0)),
    # Sent to exactly as written: a receiver's route may end with a slash.
    "NOTIFY_URL": ("notify_url", lambda n, v: _http_url(n, v) and v),
    "NOTIFY_SECRET": ("notify_secret", _webhook_secret),
    "NOTIFY_BACKOFF_SECONDS": ("notify_backoff_seconds", lambda n, v: _float(n, v, 0.001)),
    "NOTIFY_GIVE_UP_SECONDS": ("notify_give_up_seconds", _float),
    "RETENTION_DAYS": ("retention_days", _float),
    "LOG_FORMAT": ("log_format", _log_format),
    "ROBOT_MAX_ACTIVE_JOBS": ("robot_max_active_jobs", _int),
    "ROBOT_SILENCE_TIMEOUT_SECONDS": (
        "robot_silence_timeout_seconds",
        lambda n, v: _float(n, v, minimum=0.001),
    ),
    "ROBOT_PAUSE_AFTER_FAILURES": ("robot_pause_after_failures", lambda n, v: _int(n, v, 0)),
    "HOUSEKEEPING_INTERVAL_SECONDS": (
        "housekeeping_interval_seconds",
        lambda n, v: _float(n, v, minimum=0.1),
    ),
    "REKICK_AFTER_SECONDS": ("rekick_after_seconds", _float),
    "WAIT_POLL_MAX_SECONDS": ("wait_poll_max_seconds", lambda n, v: _float(n, v, 0.1)),
    "BROKER_VISIBILITY_TIMEOUT": ("broker_visibility_timeout", _int),
    "WORKER_METRICS_PORT": ("worker_metrics_port", _int),
    "TRUSTED_PROXY_HOPS": ("trusted_proxy_hops", lambda n, v: _int(n, v, minimum=0)),
    "LIVE_KEEPALIVE_SECONDS": ("live_keepalive_seconds", _keepalive),
    "LIVE_REREAD_SECONDS": ("live_reread_seconds", lambda n, v: _float(n, v, minimum=0.1)),
}

REQUIRED = ("ROBOT_URL", "ROBOT_CALLBACK_SECRET", "PUBLIC_URL", "API_TOKENS")

# Each robot's own variables (CONTRACT §11), ROBOT_<N>_<suffix>: the unprefixed variable's
# parser; every one but the URL and the API token falls back to the unprefixed value.
ROBOT_SUFFIXES = (
    "URL",
    "API_TOKEN",
    "MAX_ACTIVE_JOBS",
    "SECONDS_PER_ITEM",
    "DEADLINE_MARGIN_SECONDS",
    "DISPATCH_TIMEOUT_SECONDS",
    "SILENCE_TIMEOUT_SECONDS",
    "PAUSE_AFTER_FAILURES",
    "HOURS",
    "TIMEZONE",
)
_NOT_INHERITED = ("URL", "API_TOKEN")


def _timezone(name: str, raw: str) -> str:
    try:
        zone(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return raw


def _hours(name: str, raw: str, timezone: str) -> Hours:
    try:
        return Hours.parse(raw, timezone)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _robot_names(name: str, raw: str) -> tuple[str, ...]:
    names = [n.strip() for n in raw.split(",")]
    if not all(names):
        raise ConfigError(f"{name} must be comma-separated robot names, with none empty")
    for robot in names:
        if not valid_name(robot):
            raise ConfigError(
                f"{name}: {robot[:60]!r} is not a robot name (1-40 of a-z, 0-9 and -, "
                "starting with a letter)"
            )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{name} names {', '.join(repeated)} more than once")
    return tuple(names)


def _several_robots(env: Mapping[str, str], names: tuple[str, ...]) -> tuple[RobotSettings, ...]:
    """Build each robot of ROBOTS from its ROBOT_<N>_* variables, then the unprefixed ones."""
    robots = []
    for robot in names:
        prefix = variable_prefix(robot)
        values: dict[str, tuple[str, str]] = {}  # suffix -> (variable read, raw value)
        for suffix in ROBOT_SUFFIXES:
            own = f"{prefix}{suffix}"
            raw = env.get(own, "").strip()
            if raw:
                values[suffix] = (own, raw)
            elif suffix not in _NOT_INHERITED:
                plain = f"ROBOT_{suffix}"
                raw = env.get(plain, "").strip()
                if raw:
                    values[suffix] = (plain, raw)
        if "URL" not in values:
            raise ConfigError(f"{prefix}URL is required for robot {robot} (listed in ROBOTS)")
        parsed: dict[str, object] = {}
        for suffix, (variable, raw) in values.items():
            if suffix in ("HOURS", "TIMEZONE"):
                continue
            parse = _PARSERS[f"ROBOT_{suffix}"][1]
            parsed[suffix] = parse(variable, raw)
        timezone = "UTC"
        if "TIMEZONE" in values:
            timezone = _timezone(*values["TIMEZONE"])
        hours = _hours(*values["HOURS"], timezone) if "HOURS" in values else None
        defaults = RobotSettings(name=robot, url="")
        robots.append(
            RobotSettings(
                name=robot,
                url=str(parsed["URL"]),
                api_token=parsed.get("API_TOKEN"),  # type: ignore[arg-type]
                max_active_jobs=parsed.get("MAX_ACTIVE_JOBS"),  # type: ignore[arg-type]
                seconds_per_item=parsed.get(  # type: ignore[arg-type]
                    "SECONDS_PER_ITEM", defaults.seconds_per_item
                ),
                deadline_margin_seconds=parsed.get(  # type: ignore[arg-type]
                    "DEADLINE_MARGIN_SECONDS", defaults.deadline_margin_seconds
                ),
                dispatch_timeout_seconds=parsed.get(  # type: ignore[arg-type]
                    "DISPATCH_TIMEOUT_SECONDS", defaults.dispatch_timeout_seconds
                ),
                silence_timeout_seconds=parsed.get("SILENCE_TIMEOUT_SECONDS"),  # type: ignore[arg-type]
                pause_after_failures=parsed.get(  # type: ignore[arg-type]
                    "PAUSE_AFTER_FAILURES", defaults.pause_after_failures
                ),
                hours=hours,
                timezone=timezone,
            )
        )
    return tuple(robots)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from a mapping (the process environment by default)."""
    env = dict(os.environ if environ is None else environ)
    app_env = env.get("APP_ENV", "production").strip() or "production"
    if app_env not in ("production", "development"):
        raise ConfigError("APP_ENV must be 'production' or 'development'")
    used: list[str] = []
    if app_env == "development":
        for name, value in DEV_DEFAULTS.items():
            if not env.get(name, "").strip():
                env[name] = value
                used.append(name)
    values: dict[str, object] = {"app_env": app_env, "dev_defaults_used": tuple(used)}
    robots = env.get("ROBOTS", "").strip()
    for name, (attr, parse) in _PARSERS.items():
        if robots and name in ("ROBOT_URL", "ROBOT_API_TOKEN"):
            continue  # not used with ROBOTS: each robot has its own
        raw = env.get(name, "").strip()
        if raw:
            values[attr] = parse(name, raw)
    timezone = env.get("ROBOT_TIMEZONE", "").strip()
    if timezone:
        values["robot_timezone"] = _timezone("ROBOT_TIMEZONE", timezone)
    hours = env.get("ROBOT_HOURS", "").strip()
    if hours:
        values["robot_hours"] = _hours("ROBOT_HOURS", hours, timezone or "UTC")
    if robots:
        # ROBOT_URL and ROBOT_API_TOKEN are not used: each robot has its own.
        values["several_robots"] = _several_robots(env, _robot_names("ROBOTS", robots))
    for name in REQUIRED:
        attr = _PARSERS[name][0]
        if name == "ROBOT_URL" and robots:
            continue
        if not values.get(attr):
            raise ConfigError(f"{name} is required (set it, or APP_ENV=development)")
    if values.get("notify_url") and not values.get("notify_secret"):
        raise ConfigError("NOTIFY_SECRET is required when NOTIFY_URL is set")
    if "wait_poll_max_seconds" not in values:
        # The poll is only the safety net (the wake-up is the report's message): sleep as
        # long as the broker allows, half its visibility timeout.
        vt = values.get("broker_visibility_timeout", Settings.broker_visibility_timeout)
        values["wait_poll_max_seconds"] = float(vt) / 2  # type: ignore[arg-type]
    settings = Settings(**values)  # type: ignore[arg-type]
    if settings.redis_sentinel_master:
        from .rendezvous import parse_sentinel_url

        for name, url in (
            ("REDIS_URL", settings.redis_url),
            ("CELERY_BROKER_URL", settings.broker_url),
        ):
            if name == "REDIS_URL" or url.startswith("sentinel://"):
                try:
                    parse_sentinel_url(url)
                except ValueError as exc:
                    raise ConfigError(
                        f"{name} must list Sentinels (sentinel://host:port;…) when "
                        f"REDIS_SENTINEL_MASTER is set: {exc}"
                    ) from None
    if settings.wait_poll_max_seconds * 2 > settings.broker_visibility_timeout:
        raise ConfigError("WAIT_POLL_MAX_SECONDS must be at most half of BROKER_VISIBILITY_TIMEOUT")
    return settings


def settings_from_mapping(overrides: Mapping[str, object]) -> Settings:
    """Build settings for tests from attribute names, filling development defaults."""
    base = load_settings({"APP_ENV": "development"})
    known = {f.name for f in fields(Settings) if f.init}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigError(f"unknown settings: {sorted(unknown)}")
    values = {f.name: getattr(base, f.name) for f in fields(Settings) if f.init}
    return Settings(**{**values, **overrides})  # type: ignore[arg-type]


def load_settings_or_exit() -> Settings:
    """Load the environment's settings for a process start; exit with one line if wrong."""
    import sys

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if settings.dev_defaults_used:
        names = ", ".join(settings.dev_defaults_used)
        print(f"APP_ENV=development: using local defaults for {names}", file=sys.stderr)
    return settings
