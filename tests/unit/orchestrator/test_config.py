"""Reading the environment into Settings (CONTRACT §2)."""

from __future__ import annotations

import pytest

from orchestrator import config
from orchestrator.config import ConfigError, Settings, load_settings, load_settings_or_exit

REQUIRED = {
    "ROBOT_URL": "https://robot.example.test",
    "ROBOT_CALLBACK_SECRET": "master-s3cr3t",
    "PUBLIC_URL": "https://orchestrator.example.test",
    "API_TOKENS": "token-one-s3cr3t,token-two-s3cr3t",
}


def load(**env: str) -> Settings:
    return load_settings({**REQUIRED, **env})


def test_defaults_follow_the_contract():
    settings = load()
    assert settings.app_env == "production"
    assert settings.database_url == "sqlite:///orchestrator.db"
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.broker_url == settings.redis_url
    assert settings.robot_api_token is None
    assert settings.robot_seconds_per_item == 30
    assert settings.robot_deadline_margin_seconds == 300
    assert settings.robot_settle_seconds == 2
    assert settings.robot_dispatch_timeout_seconds == 30
    assert settings.max_batch_size == 500
    assert settings.max_body_bytes == 2_097_152
    assert settings.port == 5000
    assert settings.dev_defaults_used == ()


def test_required_values_are_read():
    settings = load(ROBOT_API_TOKEN="robot-token")
    assert settings.robot_url == "https://robot.example.test"
    assert settings.public_url == "https://orchestrator.example.test"
    assert settings.robot_callback_secret == "master-s3cr3t"
    assert settings.api_tokens == ("token-one-s3cr3t", "token-two-s3cr3t")
    assert settings.robot_api_token == "robot-token"


def test_api_tokens_ignore_blanks_around_commas():
    assert load(API_TOKENS=" a , b ,, ").api_tokens == ("a", "b")


def test_celery_broker_url_overrides_the_redis_url():
    settings = load(REDIS_URL="redis://r:6379/1", CELERY_BROKER_URL="redis://b:6379/2")
    assert settings.redis_url == "redis://r:6379/1"
    assert settings.broker_url == "redis://b:6379/2"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db.example:5432/app", "postgresql+psycopg://u:p@db.example:5432/app"),
        ("postgresql://u@db/app", "postgresql+psycopg://u@db/app"),
        ("postgresql+psycopg://u@db/app", "postgresql+psycopg://u@db/app"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_database_url_is_rewritten_for_sqlalchemy_2(given, expected):
    assert load(DATABASE_URL=given).database_url == expected


@pytest.mark.parametrize(
    ("name", "attribute"),
    [
        ("ROBOT_SECONDS_PER_ITEM", "robot_seconds_per_item"),
        ("ROBOT_DEADLINE_MARGIN_SECONDS", "robot_deadline_margin_seconds"),
        ("ROBOT_SETTLE_SECONDS", "robot_settle_seconds"),
        ("ROBOT_DISPATCH_TIMEOUT_SECONDS", "robot_dispatch_timeout_seconds"),
    ],
)
def test_seconds_accept_floats(name, attribute):
    assert getattr(load(**{name: "0.5"}), attribute) == 0.5
    assert getattr(load(**{name: "12"}), attribute) == 12.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ROBOT_SECONDS_PER_ITEM", "abc"),
        ("ROBOT_SECONDS_PER_ITEM", "-1"),
        ("ROBOT_SECONDS_PER_ITEM", "nan"),
        ("ROBOT_DEADLINE_MARGIN_SECONDS", "inf"),
        ("ROBOT_SETTLE_SECONDS", "2s"),
        ("ROBOT_DISPATCH_TIMEOUT_SECONDS", "0"),
        ("MAX_BATCH_SIZE", "1.5"),
        ("MAX_BATCH_SIZE", "0"),
        ("MAX_BATCH_SIZE", "many"),
        ("MAX_BODY_BYTES", "2MB"),
        ("MAX_BODY_BYTES", "-5"),
        ("PORT", "http"),
        ("PORT", "-1"),
    ],
)
def test_invalid_numbers_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        load(**{name: value})


@pytest.mark.parametrize("name", sorted(REQUIRED))
@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_required_variable_is_named(name, value):
    env = {k: v for k, v in REQUIRED.items() if k != name}
    if value is not None:
        env[name] = value
    with pytest.raises(ConfigError, match=name):
        load_settings(env)


@pytest.mark.parametrize("name", ["ROBOT_URL", "PUBLIC_URL"])
@pytest.mark.parametrize("value", ["robot.example.test", "ftp://robot.example.test", "http://"])
def test_urls_must_be_http(name, value):
    with pytest.raises(ConfigError, match=name):
        load(**{name: value})


def test_trailing_slash_is_dropped_from_urls():
    settings = load(PUBLIC_URL="https://orchestrator.example.test/", ROBOT_URL="http://r:1/")
    assert settings.public_url == "https://orchestrator.example.test"
    assert settings.robot_url == "http://r:1"


def test_unknown_app_env_is_refused():
    with pytest.raises(ConfigError, match="APP_ENV"):
        load(APP_ENV="staging")


def test_development_fills_required_values_and_lists_them():
    settings = load_settings({"APP_ENV": "development"})
    assert settings.app_env == "development"
    assert set(settings.dev_defaults_used) == {
        "ROBOT_URL",
        "ROBOT_CALLBACK_SECRET",
        "PUBLIC_URL",
        "API_TOKENS",
    }
    assert settings.robot_url and settings.public_url
    assert settings.robot_callback_secret and settings.api_tokens


def test_development_lists_only_the_defaults_it_used():
    settings = load_settings({"APP_ENV": "development", "ROBOT_URL": "http://robot:9000"})
    assert settings.robot_url == "http://robot:9000"
    assert "ROBOT_URL" not in settings.dev_defaults_used
    assert "PUBLIC_URL" in settings.dev_defaults_used


def test_secrets_include_tokens_and_url_passwords():
    settings = load(
        ROBOT_API_TOKEN="robot-token-s3cr3t",
        DATABASE_URL="postgres://app:db-pw-s3cr3t@db:5432/app",
        REDIS_URL="redis://:redis-pw-s3cr3t@cache:6379/0",
        CELERY_BROKER_URL="redis://user:broker-pw-s3cr3t@broker:6379/0",
    )
    assert set(settings.secrets()) >= {
        "token-one-s3cr3t",
        "token-two-s3cr3t",
        "robot-token-s3cr3t",
        "master-s3cr3t",
        "db-pw-s3cr3t",
        "redis-pw-s3cr3t",
        "broker-pw-s3cr3t",
    }
    assert "" not in settings.secrets()


def test_operations_settings_are_read():  # CONTRACT §2, §9
    settings = load(
        ROBOT_CALLBACK_SECRET_PREVIOUS=" old-one-s3cr3t , ,older-s3cr3t",
        RETENTION_DAYS="0.5",
        LOG_FORMAT="json",
        WORKER_METRICS_PORT="9101",
    )
    assert settings.robot_callback_secret_previous == ("old-one-s3cr3t", "older-s3cr3t")
    assert settings.callback_secrets == ("master-s3cr3t", "old-one-s3cr3t", "older-s3cr3t")
    assert {"old-one-s3cr3t", "older-s3cr3t"} <= set(settings.secrets())
    assert "s3cr3t" not in repr(settings)
    assert settings.retention_days == 0.5
    assert settings.log_format == "json"
    assert settings.worker_metrics_port == 9101
    defaults = load()
    assert defaults.retention_days is None  # kept forever
    assert defaults.log_format == "text"
    assert defaults.robot_callback_secret_previous == ()
    assert defaults.worker_metrics_port is None


@pytest.mark.parametrize(
    ("name", "value"),
    [("LOG_FORMAT", "xml"), ("LOG_FORMAT", "JSON"), ("RETENTION_DAYS", "-1"),
     ("RETENTION_DAYS", "soon"), ("WORKER_METRICS_PORT", "http")],
)  # fmt: skip
def test_invalid_operations_settings_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        load(**{name: value})


def test_repr_shows_no_secret():
    settings = load(
        ROBOT_API_TOKEN="robot-token-s3cr3t",
        DATABASE_URL="postgres://app:db-pw-s3cr3t@db:5432/app",
        REDIS_URL="redis://:redis-pw-s3cr3t@cache:6379/0",
        CELERY_BROKER_URL="redis://user:broker-pw-s3cr3t@broker:6379/0",
    )
    text = repr(settings) + str(settings)
    assert "s3cr3t" not in text
    assert "db:5432" in text  # still useful: only the secrets are hidden


# --- the process start-up: one line naming the variable, non-zero exit ---


@pytest.fixture
def clean_environ(monkeypatch):
    for name in [*config._PARSERS, "APP_ENV"]:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_start_with_a_missing_variable_exits_with_one_line(clean_environ, capsys):
    for name, value in REQUIRED.items():
        if name != "PUBLIC_URL":
            clean_environ.setenv(name, value)
    with pytest.raises(SystemExit) as caught:
        load_settings_or_exit()
    assert caught.value.code not in (0, None)
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "PUBLIC_URL" in err
    assert "s3cr3t" not in err


def test_start_in_development_says_which_defaults_it_used(clean_environ, capsys):
    clean_environ.setenv("APP_ENV", "development")
    settings = load_settings_or_exit()
    err = capsys.readouterr().err
    assert settings.dev_defaults_used
    for name in settings.dev_defaults_used:
        assert name in err


def test_sentinels_are_named_by_redis_sentinel_master_and_listed_in_redis_url():
    settings = load(
        REDIS_SENTINEL_MASTER="mymaster", REDIS_URL="sentinel://:pw@h1:26379/1;sentinel://h2:26379"
    )
    assert settings.redis_sentinel_master == "mymaster"
    assert "pw" in settings.secrets() and "pw" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [("REDIS_URL", "redis://h:6379/0"), ("CELERY_BROKER_URL", "sentinel://h1:1/db")],
)
def test_with_sentinels_a_url_that_lists_none_is_named(name, value):
    env = {"REDIS_SENTINEL_MASTER": "m", "REDIS_URL": "sentinel://h1:26379", name: value}
    with pytest.raises(ConfigError, match=name):
        load(**env)


# --- named tokens and roles (CONTRACT §12) ---


def test_a_bare_token_has_operate_and_is_named_by_its_digest():
    import hashlib

    (token,) = load(API_TOKENS="plain-s3cr3t").tokens
    digest = hashlib.sha256(b"plain-s3cr3t").hexdigest()
    assert (token.name, token.role, token.token) == (
        f"token-{digest[:8]}",
        "operate",
        "plain-s3cr3t",
    )


def test_named_tokens_carry_their_role():
    settings = load(API_TOKENS="shop:submit:shop-s3cr3t, grafana:read:mon-s3cr3t,ana:operate:a-s3")
    shown = [(t.name, t.role, t.token) for t in settings.tokens]
    assert shown == [
        ("shop", "submit", "shop-s3cr3t"),
        ("grafana", "read", "mon-s3cr3t"),
        ("ana", "operate", "a-s3"),
    ]
    # Every token is a secret, never its name: none is left out, and the entries' text is not.
    assert {"shop-s3cr3t", "mon-s3cr3t", "a-s3"} <= set(settings.secrets())
    assert "shop-s3cr3t" not in repr(settings) and "shop" not in repr(settings)


def test_a_name_may_be_forty_characters_with_digits_and_dashes():
    name = "a" + "-9" * 19 + "z0"
    assert len(name) == 41
    with pytest.raises(ConfigError):
        load(API_TOKENS=f"{name}:read:x-s3cr3t")
    assert load(API_TOKENS=f"{name[:40]}:read:x-s3cr3t").tokens[0].name == name[:40]


MALFORMED_TOKENS = {
    "two parts": ("shop:sec-r3t-value", "entry 1: the role must be read, submit or operate"),
    "unknown role": ("shop:admin:sec-r3t-value", "entry 1: the role must be"),
    "empty token": ("shop:read:", "entry 1: the token after name:role: is empty"),
    "empty name": (":read:sec-r3t-value", "entry 1: a name:role:token entry needs a name"),
    "upper case": ("Shop:read:sec-r3t-value", "entry 1: a name:role:token entry needs a name"),
    "leading digit": ("1shop:read:sec-r3t-value", "needs a name"),
    "underscore": ("my_shop:read:sec-r3t-value", "needs a name"),
    "repeated name": ("a:read:sec-r3t-value,a:operate:other-s3cr3t", "entry 2 repeats the name"),
    "bare twice": ("sec-r3t-value,sec-r3t-value", "entry 2 repeats the name of entry 1"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_TOKENS))
def test_a_malformed_entry_stops_the_start_naming_api_tokens_never_the_token(case, capsys):
    value, expected = MALFORMED_TOKENS[case]
    with pytest.raises(ConfigError) as raised:
        load(API_TOKENS=value)
    message = str(raised.value)
    assert message.startswith("API_TOKENS ") and expected in message
    assert "sec-r3t" not in message and "s3cr3t" not in message
    assert "\n" not in message
