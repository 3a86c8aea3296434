"""Rate limits, secure headers and /openapi.json on the Flask app (fakeredis)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime

import pytest
import redis
from standardwebhooks import Webhook

from orchestrator import lifecycle, logs
from orchestrator.config import ConfigError, load_settings
from orchestrator.db import session_scope
from orchestrator.signing import job_callback_secret
from webapp import create_app, security
from webapp.security import Limit, parse_limit

from ..conftest import API_TOKEN, REDIS_URL


@pytest.mark.parametrize(
    ("raw", "limit"),
    [
        ("600/minute", Limit(600, 60)),
        ("5 per second", Limit(5, 1)),
        ("100/hours", Limit(100, 3600)),
        ("7/30", Limit(7, 30)),
        ("off", None),
    ],
)
def test_limits_parse(raw: str, limit: Limit | None) -> None:
    assert parse_limit("RATE_LIMIT_API", raw) == limit


@pytest.mark.parametrize("raw", ["lots", "10/fortnight", "0/minute", "-1/minute", "5/0"])
def test_bad_limits_name_the_variable(raw: str) -> None:
    with pytest.raises(ValueError, match="RATE_LIMIT_API"):
        parse_limit("RATE_LIMIT_API", raw)


@pytest.fixture
def limited_app(monkeypatch, sqlite_url, make_settings, fake_redis, started):
    monkeypatch.setenv("RATE_LIMIT_API", "3/hour")
    monkeypatch.setenv("RATE_LIMIT_CALLBACKS", "2/hour")
    return create_app(
        make_settings(database_url=sqlite_url, redis_url=REDIS_URL, api_tokens=(API_TOKEN, "b"))
    )


def test_api_limit_is_per_token_and_answers_429_in_the_envelope(limited_app) -> None:
    client = limited_app.test_client()
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    assert [client.get("/api/jobs", headers=auth).status_code for _ in range(3)] == [200] * 3

    refused = client.get("/api/jobs", headers=auth)

    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "too_many_requests"
    assert int(refused.headers["Retry-After"]) >= 1
    assert client.get("/api/jobs", headers={"Authorization": "Bearer b"}).status_code == 200


def _signed(app, job_id: str, body: str) -> dict[str, str]:
    secret = job_callback_secret(
        app.extensions["orchestrator"].settings.robot_callback_secret, job_id
    )
    msg_id, now = f"msg_{uuid.uuid4().hex}", datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body),
        "Content-Type": "application/json",
    }


def _job(client) -> dict:
    """A job whose dispatch is claimed (as a worker would): the robot's callbacks are for it."""
    answer = client.post(
        "/api/jobs",
        json={"orders": [{"orderId": "A", "pedidoInput": {}}]},
        headers={"Authorization": "Bearer b"},
    )
    assert answer.status_code == 202, answer.text
    settings = client.application.extensions["orchestrator"].settings
    with session_scope(settings.database_url) as session:
        assert lifecycle.claim_dispatch(session, answer.get_json()["id"], settings) is not None
    return answer.get_json()


def test_bad_signatures_have_their_own_bucket_and_signed_callbacks_go_on(limited_app) -> None:
    client = limited_app.test_client()
    job = _job(client)
    unsigned = [
        client.post(f"/api/robot/jobs/{job['id']}/events", data=b"{}").status_code for _ in range(3)
    ]
    assert unsigned == [401, 401, 429]
    body = json.dumps({"type": "robot.item.started", "data": {"itemId": job["items"][0]["id"]}})
    signed = client.post(
        f"/api/robot/jobs/{job['id']}/events",
        data=body,
        headers=_signed(limited_app, job["id"], body),
    )
    assert signed.status_code == 200, signed.text


def test_signed_callbacks_are_counted_per_job(limited_app) -> None:
    client = limited_app.test_client()
    first, second = _job(client), _job(client)

    def send(job: dict) -> int:
        body = json.dumps({"type": "robot.item.started", "data": {"itemId": job["items"][0]["id"]}})
        return client.post(
            f"/api/robot/jobs/{job['id']}/events",
            data=body,
            headers=_signed(limited_app, job["id"], body),
        ).status_code

    assert [send(first) for _ in range(3)] == [200, 200, 429]
    assert send(second) == 200  # another job has its own allowance
    refused = client.post(
        f"/api/robot/jobs/{first['id']}/events",
        data="{}",
        headers=_signed(limited_app, first["id"], "{}"),
    )
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.get_json()["error"]["code"] == "too_many_requests"


@pytest.mark.parametrize("hops", [0, 1])
def test_trusted_proxy_hops_take_the_client_address_from_x_forwarded_for(
    monkeypatch, sqlite_url, make_settings, fake_redis, hops
) -> None:
    monkeypatch.setenv("RATE_LIMIT_API", "3/hour")
    app = create_app(
        make_settings(database_url=sqlite_url, redis_url=REDIS_URL, trusted_proxy_hops=hops)
    )
    client = app.test_client()

    def guess(address: str) -> int:
        headers = {"Authorization": "Bearer guess", "X-Forwarded-For": address}
        return client.get("/api/jobs", headers=headers).status_code

    assert [guess("198.51.100.7") for _ in range(4)] == [401, 401, 401, 429]
    # Behind one trusted proxy, another client has its own bucket; without, it is ignored.
    assert guess("203.0.113.5") == (401 if hops else 429)


def test_trusted_proxy_hops_is_read_from_the_environment() -> None:
    settings = load_settings({"APP_ENV": "development", "TRUSTED_PROXY_HOPS": "2"})
    assert settings.trusted_proxy_hops == 2
    assert load_settings({"APP_ENV": "development"}).trusted_proxy_hops == 0
    with pytest.raises(ConfigError, match="TRUSTED_PROXY_HOPS"):
        load_settings({"APP_ENV": "development", "TRUSTED_PROXY_HOPS": "-1"})


def test_only_the_public_urls_host_is_answered(client) -> None:
    evil = client.get("/dashboard", headers={"Host": "evil.example"})
    assert evil.status_code == 400
    assert evil.get_json()["error"]["code"] == "untrusted_host"
    assert "Location" not in evil.headers
    ours = client.get("/dashboard", headers={"Host": "127.0.0.1:5000"})  # PUBLIC_URL's host
    assert ours.status_code == 308
    assert ours.headers["Location"] in ("http://127.0.0.1:5000/dashboard/", "/dashboard/")
    assert client.get("/api/jobs", headers={"Host": "evil.example"}).status_code == 400
    # The health probe answers whatever Host a load balancer's probe sends.
    assert client.get("/healthz", headers={"Host": "10.1.2.3:5000"}).status_code == 200


def test_dashboard_pages_are_never_cached(client) -> None:
    for path in ("/dashboard/login", "/dashboard/", "/dashboard/jobs/x"):
        assert client.get(path).headers["Cache-Control"] == "no-store", path
    static = client.get("/dashboard/static/dashboard.css")
    assert static.status_code == 200
    assert static.headers.get("Cache-Control") != "no-store"
    static.close()


def test_a_bad_limit_keeps_the_default(monkeypatch, sqlite_url, make_settings, fake_redis) -> None:
    monkeypatch.setenv("RATE_LIMIT_API", "plenty")
    app = create_app(make_settings(database_url=sqlite_url, redis_url=REDIS_URL))
    assert app.extensions["rate_limits"]["api"] == parse_limit("x", security.DEFAULT_API_LIMIT)


def test_limits_fail_open_without_redis(limited_app, fake_redis, monkeypatch) -> None:
    def down(*_, **__):
        raise redis.ConnectionError("Redis is gone")

    monkeypatch.setattr(fake_redis, "pipeline", down)
    client = limited_app.test_client()
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    assert [client.get("/api/jobs", headers=auth).status_code for _ in range(5)] == [200] * 5


def test_secure_headers_and_no_store_on_the_api(client, auth) -> None:
    for path in ("/healthz", "/api/jobs", "/openapi.json", "/no-such-page"):
        headers = client.get(path, headers=auth).headers
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert "Strict-Transport-Security" not in headers
    assert client.get("/api/jobs", headers=auth).headers["Cache-Control"] == "no-store"
    behind_tls = client.get("/healthz", headers={"X-Forwarded-Proto": "https"})
    assert behind_tls.headers["Strict-Transport-Security"].startswith("max-age=")


def test_openapi_document_names_every_route_and_the_batch_limit(client, app) -> None:
    document = client.get("/openapi.json").get_json()

    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        "/api/robots",
        "/api/robots/{name}",
        "/api/robots/{name}/pause",
        "/api/robots/{name}/resume",
        "/api/jobs",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/cancel",
        "/api/jobs/{job_id}/stream",
        "/api/jobs/{job_id}/resubmit",
        "/api/dispatch",
        "/api/dispatch/pause",
        "/api/dispatch/resume",
        "/api/audit",
        "/api/robot/jobs/{job_id}/events",
        "/api/notifications",
        "/api/notifications/{notification_id}/redeliver",
        "/metrics",
        "/healthz",
    }
    submit = document["components"]["schemas"]["SubmitRequest"]["properties"]["orders"]
    assert submit["maxItems"] == app.extensions["orchestrator"].settings.max_batch_size
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    for path in document["paths"]:
        assert re.sub(r"{(\w+)}", r"<\1>", path) in routes


def _batched_counter(monkeypatch, fake_redis, app):
    """A WindowCounter whose Redis syncs are counted, with time standing still."""
    syncs = []
    real_pipeline = fake_redis.pipeline

    def counting_pipeline(*args, **kwargs):
        syncs.append(1)
        return real_pipeline(*args, **kwargs)

    monkeypatch.setattr(fake_redis, "pipeline", counting_pipeline)
    counter = security.WindowCounter()
    return counter, syncs


def test_large_limits_sync_with_redis_in_batches(app, monkeypatch, fake_redis) -> None:
    limit = Limit(12000, 60)
    with app.app_context():
        counter, syncs = _batched_counter(monkeypatch, fake_redis, app)
        counts = [counter.hit("k", limit, now=100.0) for _ in range(100)]

    assert counts == list(range(1, 101))  # every request counted, in order
    assert len(syncs) == 5  # the first (new window), then every SYNC_EVERY = 20 ...
    assert int(fake_redis.get("k")) == 81  # ... so Redis holds all but the last 19


def test_large_limits_are_exact_in_their_last_ten_percent(app, monkeypatch, fake_redis) -> None:
    limit = Limit(2000, 60)
    with app.app_context():
        counter, syncs = _batched_counter(monkeypatch, fake_redis, app)
        counter.hit("k", limit, now=100.0)
        fake_redis.set("k", 1795)  # the other processes' requests
        counts = [counter.hit("k", limit, now=100.0) for _ in range(19)]
        near = [counter.hit("k", limit, now=100.0) for _ in range(210)]

    assert counts[-1] == 1 + 19  # not synced yet: it still believes its own count
    assert near[0] == 1795 + 20  # the 20th request synced and learned the shared count
    over = [n for n in near if n > limit.count]
    assert over and over[0] == limit.count + 1  # counted one by one near the limit
    assert len(syncs) > 150


def test_small_limits_are_counted_exactly_every_request(app, monkeypatch, fake_redis) -> None:
    limit = Limit(15, 3600)
    with app.app_context():
        counter, syncs = _batched_counter(monkeypatch, fake_redis, app)
        counts = [counter.hit("k", limit, now=100.0) for _ in range(5)]
    assert counts == [1, 2, 3, 4, 5]
    assert len(syncs) == 5


def test_the_counter_forgets_past_windows(app, monkeypatch, fake_redis) -> None:
    limit = Limit(15, 1)
    with app.app_context():
        counter, _ = _batched_counter(monkeypatch, fake_redis, app)
        for window in range(10_050):
            counter.hit(f"k:{window}", limit, now=float(window))
        assert counter.hit("k:10049", limit, now=10049.0) == 2  # the live window still counts

    assert len(counter._synced_at) < 10_000
    assert len(counter._known) < 10_000 and len(counter._pending) < 10_000


def test_metrics_shares_the_api_limit_of_its_address(limited_app) -> None:
    """Token guessing on /metrics is throttled with the API's (CONTRACT §3: it takes the
    same tokens)."""
    client = limited_app.test_client()
    bad = {"Authorization": "Bearer guess"}
    assert [client.get("/api/jobs", headers=bad).status_code for _ in range(3)] == [401] * 3
    refused = client.get("/metrics", headers=bad)
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "too_many_requests"
    good = {"Authorization": f"Bearer {API_TOKEN}"}
    assert [client.get("/metrics", headers=good).status_code for _ in range(3)] == [200] * 3
    assert client.get("/metrics", headers=good).status_code == 429  # per token, as /api/*


def test_a_job_id_marks_log_lines_only_once_the_request_is_authenticated(
    limited_app, monkeypatch
) -> None:
    """The URL's id is what a stranger typed until a token or a signature holds for it."""
    bound: list[str | None] = []
    real = logs.bind_job

    def recording(job_id):
        bound.append(job_id)
        return real(job_id)

    monkeypatch.setattr(logs, "bind_job", recording)
    client = limited_app.test_client()
    forged = "ab\u2028%22injected%22:1"
    stranger = client.get(f"/api/jobs/{forged}", headers={"Authorization": "Bearer guess"})
    assert stranger.status_code == 401
    job = _job(client)
    unsigned = client.post(
        f"/api/robot/jobs/{job['id']}/events",
        data="{}",
        headers=_signed(limited_app, "another-job", "{}"),
    )
    assert unsigned.status_code == 401
    assert bound == []

    signed = client.post(
        f"/api/robot/jobs/{job['id']}/events",
        data="{}",
        headers=_signed(limited_app, job["id"], "{}"),
    )
    assert signed.status_code == 422  # not an event; but the signature held for this id
    known = client.get(f"/api/jobs/{job['id']}", headers={"Authorization": "Bearer b"})
    assert known.status_code == 200
    assert bound == [job["id"], job["id"]]


def test_a_named_token_has_its_own_limit_bucket(monkeypatch, sqlite_url, make_settings, fake_redis):
    monkeypatch.setenv("RATE_LIMIT_API", "2/hour")
    tokens = ("shop:submit:shop-t0ken", "grafana:read:mon-t0ken")
    app = create_app(make_settings(database_url=sqlite_url, redis_url=REDIS_URL, api_tokens=tokens))
    client = app.test_client()
    shop = {"Authorization": "Bearer shop-t0ken"}
    assert [client.get("/api/jobs", headers=shop).status_code for _ in range(3)] == [200, 200, 429]
    # Counted by token, not by the address the two share.
    assert client.get("/api/jobs", headers={"Authorization": "Bearer mon-t0ken"}).status_code == 200
