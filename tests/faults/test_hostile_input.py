"""Scenario 8: hostile input on the job API and the callback endpoint.

Schema-driven fuzzing (schemathesis, from the ``/openapi.json`` the app serves) and property
tests (hypothesis) against the real web process: never a 5xx, never a state change on a
rejected request. Then the named attacks: replays, another job's signature, timestamp skew,
bodies over the limit, deep or huge JSON, wrong content types, unicode and control characters
in every string field. No worker runs here, so only these requests can change the database.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from orchestrator.signing import job_callback_secret
from tests.integration.harness import API_TOKEN, MASTER_SECRET, orders

from .conftest import Rig, record, rig
from .tools import claim_dispatch, event_body, post_event, signed_headers

pytestmark = pytest.mark.faults

LIMIT = 64 * 1024
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
# 60 examples a test under the repeatable profile (tests/conftest.py), 480 under `make fuzz`.
FUZZ = settings(
    max_examples=settings.default.max_examples * 3 // 5,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Iterator[Rig]:
    with rig(
        tmp_path_factory.mktemp("hostile"),
        database="postgres",
        hooks=False,
        names=("web",),
        MAX_BODY_BYTES=str(LIMIT),
        MAX_BATCH_SIZE="50",
        RATE_LIMIT_API="100000/minute",
        RATE_LIMIT_CALLBACKS="100000/minute",
    ) as r:
        yield r


def state(r: Rig) -> tuple[Any, ...]:
    """Every trace a request can leave in the database."""
    return (
        tuple(r.db.rows("SELECT status, count(*) FROM jobs GROUP BY status ORDER BY status")),
        tuple(
            r.db.rows(
                "SELECT status, count(*), count(tracking_number), count(error) FROM items "
                "GROUP BY status ORDER BY status"
            )
        ),
        r.db.scalar("SELECT count(*) FROM events"),
        r.db.scalar("SELECT count(*) FROM idempotency_keys"),
        tuple(r.db.rows("SELECT report, count(*) FROM jobs GROUP BY report ORDER BY report")),
        tuple(r.db.rows("SELECT paused, paused_reason, paused_until FROM dispatch_control")),
    )


def job_on(r: Rig, count: int = 2) -> dict[str, Any]:
    """Submit a job and claim its dispatch as a worker would (no worker runs here): the robot's
    callbacks are for dispatched jobs (CONTRACT §5: 409 for a job never claimed)."""
    answer = r.system.http.post(
        f"{r.system.base}/api/jobs", json={"orders": orders(count)}, headers=AUTH, timeout=10
    )
    assert answer.status_code == 202, answer.text
    claim_dispatch(r.system.env, answer.json()["id"])
    return answer.json()


def assert_envelope(answer: requests.Response) -> None:
    assert answer.headers["Content-Type"].startswith("application/json"), answer.text[:200]
    error = answer.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert "Traceback" not in answer.text


# --- schema-driven fuzzing ---

OPERATIONS = [
    ("POST", "/api/jobs"),
    ("GET", "/api/jobs"),
    ("GET", "/api/jobs/{job_id}"),
    ("POST", "/api/jobs/{job_id}/cancel"),
    ("POST", "/api/jobs/{job_id}/resubmit"),
    ("POST", "/api/robot/jobs/{job_id}/events"),
    ("GET", "/healthz"),
    ("GET", "/api/notifications"),
    ("POST", "/api/notifications/{notification_id}/redeliver"),
    ("GET", "/api/dispatch"),
    ("POST", "/api/dispatch/pause"),
    ("POST", "/api/dispatch/resume"),
]
CALLBACK = "/api/robot/jobs/{job_id}/events"
RESUBMIT = "/api/jobs/{job_id}/resubmit"


@pytest.fixture(scope="module")
def openapi(hostile: Rig) -> Any:
    """The document the app serves, loaded by schemathesis, with the API token for its auth."""
    config = schemathesis.Config.from_dict(
        {
            "auth": {"openapi": {"bearerAuth": {"bearer": API_TOKEN}}},
            # The list route ignores query parameters it does not know, on purpose.
            "generation": {"allow-extra-parameters": False},
            # gunicorn refuses an over-long request line (414) before the app sees it.
            "checks": {
                "negative_data_rejection": {
                    "expected-statuses": [400, 401, 403, 404, 405, 409, 413, 414, 415, 422, 429]
                }
            },
        }
    )
    return schemathesis.openapi.from_url(f"{hostile.system.base}/openapi.json", config=config)


def _send_signed(case: schemathesis.Case, base: str, job_id: str) -> requests.Response:
    """Send a generated callback with a valid signature over exactly the bytes sent."""
    kwargs = case.as_transport_kwargs(base_url=base)
    body = kwargs.pop("json", None)
    raw = kwargs.pop("data", None)
    if raw is None:
        raw = b"" if body is None else json.dumps(body).encode()
    elif isinstance(raw, str):
        raw = raw.encode()
    headers = {**kwargs.pop("headers", {}), **signed_headers(job_id, raw)}
    kwargs.pop("auth", None)
    return requests.request(data=raw, headers=headers, timeout=30, **kwargs)


# Negative cases need something that can be invalid: a body, a query or a header.
FUZZ_CASES = [
    (method, path, mode)
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode == GenerationMode.POSITIVE
    or path in ("/api/jobs", RESUBMIT, "/api/notifications", CALLBACK, "/api/dispatch/pause")
]


# Marked as hypothesis's own tests are (its @given is inside): `make fuzz` selects them all.
@pytest.mark.hypothesis
@pytest.mark.parametrize(
    ("method", "path", "mode"), FUZZ_CASES, ids=[f"{m} {p} {g.value}" for m, p, g in FUZZ_CASES]
)
def test_schemathesis_finds_no_server_error_no_schema_violation_no_change_on_rejection(
    hostile: Rig, openapi: Any, method: str, path: str, mode: GenerationMode
) -> None:
    r = hostile
    base = r.system.base
    operation = openapi[path][method]
    fixed: dict[str, Any] = {}
    if "{job_id}" in path:
        # Half the cases aim at a job that exists; the rest at whatever is generated.
        fixed = {"path_parameters": {"job_id": job_on(r)["id"]}}
    authed = path.startswith(("/api/jobs", "/api/notifications", "/api/dispatch"))
    auth = {"headers": dict(AUTH)} if authed else {}
    strategy = operation.as_strategy(mode, **auth, **fixed) | operation.as_strategy(mode, **auth)
    seen: dict[int, int] = {}

    @FUZZ
    @given(case=strategy, sign=st.booleans())
    def fuzz(case: schemathesis.Case, sign: bool) -> None:
        before = state(r)
        excluded = [positive_data_acceptance]
        if path == CALLBACK and sign:
            job_id = unquote(case.path_parameters["job_id"])  # generated already %-encoded
            answer: Any = _send_signed(case, base, job_id)
            # Signed afresh: whatever was wrong with the generated headers is gone.
            excluded.append(negative_data_rejection)
        else:
            answer = case.call(base_url=base)
        seen[answer.status_code] = seen.get(answer.status_code, 0) + 1
        # Valid-looking data may still be refused (unknown job ids, duplicate order ids).
        case.validate_response(answer, excluded_checks=excluded)
        assert answer.status_code < 500
        if answer.status_code >= 400:
            assert state(r) == before, f"{case.method} {case.formatted_path} changed state"

    fuzz()
    record(
        f"8 schemathesis {mode.value} {method} {path}",
        requests=sum(seen.values()),
        answers="/".join(f"{code}x{n}" for code, n in sorted(seen.items())),
        server_errors=0,
    )


# --- property tests ---

TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",))
    | st.sampled_from(["\x00", "\x1f", "\x7f", "\u2028", "\u202e", "\u200b", "\ufeff", "😀", "ñ"]),
    max_size=40,
)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)
ORDERISH = st.fixed_dictionaries(
    {},
    optional={"orderId": JSON | TEXT, "pedidoInput": JSON, "extra": JSON},
)
SUBMIT_BODIES = JSON | st.fixed_dictionaries(
    {"orders": st.lists(ORDERISH | JSON, max_size=4) | JSON}, optional={"more": JSON}
)
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
        "application/json\u00e9",
    ]
)


@given(body=SUBMIT_BODIES, raw=st.none() | st.binary(max_size=200), content_type=CONTENT_TYPES)
@FUZZ
def test_submit_never_5xx_and_a_refusal_changes_nothing(
    hostile: Rig, body: Any, raw: bytes | None, content_type: str
) -> None:
    r = hostile
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {**AUTH, "Content-Type": content_type.encode("utf-8")}
    before = state(r)

    answer = requests.post(f"{r.system.base}/api/jobs", data=data, headers=headers, timeout=10)

    assert answer.status_code in (202, 400, 413, 415, 422), answer.text[:300]
    if answer.status_code == 202:
        assert answer.json()["status"] == "pending"
    else:
        assert_envelope(answer)
        assert state(r) == before


@pytest.fixture(scope="module")
def target(hostile: Rig) -> dict[str, Any]:
    """One job whose callbacks the property test attacks."""
    return job_on(hostile, 3)


ITEM_RESULT = st.fixed_dictionaries(
    {},
    optional={
        "itemId": TEXT | JSON,
        "status": st.sampled_from(["success", "error", "unknown", "", "SUCCESS"]) | JSON,
        "trackingNumber": TEXT | JSON,
        "error": TEXT | JSON,
    },
)


@given(
    event_type=st.sampled_from(
        [
            "robot.item.started",
            "robot.item.completed",
            "robot.batch.completed",
            "robot.batch.failed",
            "robot.unknown",
        ]
    )
    | TEXT
    | JSON,
    data=ITEM_RESULT | st.fixed_dictionaries({"items": st.lists(ITEM_RESULT, max_size=3)}) | JSON,
    real_item=st.integers(min_value=-1, max_value=2),
    raw=st.none() | st.binary(max_size=100),
)
# Signed bytes that are not UTF-8: the signature holds over the raw body, then 400.
@example(event_type="robot.item.started", data={}, real_item=0, raw=b"\x80")
@example(
    event_type="robot.heartbeat",
    data={},
    real_item=0,
    raw=json.dumps({"type": "robot.heartbeat", "data": {}}).encode("utf-16"),
)
@FUZZ
def test_signed_hostile_callbacks_never_5xx_and_a_refusal_changes_nothing(
    hostile: Rig, target: dict[str, Any], event_type: Any, data: Any, real_item: int, raw: Any
) -> None:
    r = hostile
    job_id = target["id"]
    if isinstance(data, dict) and real_item >= 0 and "itemId" in data:
        data = {**data, "itemId": target["items"][real_item]["id"]}
    body = raw if raw is not None else json.dumps({"type": event_type, "data": data}).encode()
    before = state(r)

    answer = post_event(r.system.base, job_id, body, signed_headers(job_id, body))

    allowed = {200, 400, 409, 413, 422}
    try:
        body.decode()
    except UnicodeDecodeError:
        # The signature is over the raw bytes and holds; bytes that are not UTF-8 are not JSON
        # (CONTRACT §5), whatever another encoding would make of them.
        allowed = {400}
    assert answer.status_code in allowed, answer.text[:300]
    if answer.status_code != 200:
        assert_envelope(answer)
        assert state(r) == before


# --- named attacks on the callback endpoint ---


def test_replays_are_answered_200_and_applied_once(hostile: Rig) -> None:
    r = hostile
    job = job_on(r)
    item = job["items"][0]
    webhook_id = f"msg_{uuid.uuid4().hex}"
    body = event_body(
        "robot.item.completed", {"itemId": item["id"], "status": "success", "trackingNumber": "A"}
    )
    first = post_event(r.system.base, job["id"], body, signed_headers(job["id"], body, webhook_id))
    after_first = state(r)
    replay = post_event(r.system.base, job["id"], body, signed_headers(job["id"], body, webhook_id))
    # The same webhook-id with another body, properly signed: still "answered before".
    other = event_body(
        "robot.item.completed", {"itemId": item["id"], "status": "error", "error": "B"}
    )
    swapped = post_event(
        r.system.base, job["id"], other, signed_headers(job["id"], other, webhook_id)
    )

    assert (first.status_code, first.json()["status"]) == (200, "applied")
    assert (replay.status_code, replay.json()["status"]) == (200, "duplicate")
    assert (swapped.status_code, swapped.json()["status"]) == (200, "duplicate")
    assert state(r) == after_first
    assert r.system.job(job["id"])["items"][0]["trackingNumber"] == "A"


def test_signatures_that_do_not_hold_are_401_and_change_nothing(hostile: Rig) -> None:
    r = hostile
    job, other = job_on(r), job_on(r)
    body = event_body("robot.batch.completed", {"items": []})
    good = signed_headers(job["id"], body)
    attempts = {
        "another job's secret": signed_headers(
            job["id"], body, secret=job_callback_secret(MASTER_SECRET, other["id"])
        ),
        "a guessed master secret": signed_headers(
            job["id"], body, secret=job_callback_secret("guess", job["id"])
        ),
        "no signature": {k: v for k, v in good.items() if k != "webhook-signature"},
        "no timestamp": {k: v for k, v in good.items() if k != "webhook-timestamp"},
        "no id": {k: v for k, v in good.items() if k != "webhook-id"},
        "malformed v1,a,b": {**good, "webhook-signature": "v1,a,b"},
        "not base64": {**good, "webhook-signature": "v1,!!!!"},
        "unknown version": {
            **good,
            "webhook-signature": good["webhook-signature"].replace("v1", "v9"),
        },
        "timestamp not a number": {**good, "webhook-timestamp": "soon"},
        "body changed after signing": good,
    }
    before = state(r)
    answers = {}
    for name, headers in attempts.items():
        sent = body.replace("[]", "[ ]") if name == "body changed after signing" else body
        answers[name] = post_event(r.system.base, job["id"], sent, headers)

    assert {name: a.status_code for name, a in answers.items()} == dict.fromkeys(attempts, 401)
    for answer in answers.values():
        assert_envelope(answer)
    assert state(r) == before
    assert r.system.job(job["id"])["status"] == "processing"  # as job_on left it


@pytest.mark.parametrize(
    ("skew", "status"), [(-310, 401), (-280, 200), (280, 200), (310, 401), (-86400, 401)]
)
def test_timestamp_skew_beyond_five_minutes_is_refused(
    hostile: Rig, skew: int, status: int
) -> None:
    r = hostile
    job = job_on(r)
    body = event_body("robot.item.started", {"itemId": job["items"][0]["id"]})
    headers = signed_headers(job["id"], body, timestamp=time.time() + skew)
    before = state(r)

    answer = post_event(r.system.base, job["id"], body, headers)

    assert answer.status_code == status
    if status == 401:
        assert state(r) == before


def test_a_valid_signature_for_a_job_that_does_not_exist_is_404(hostile: Rig) -> None:
    r = hostile
    ghost = str(uuid.uuid4())
    body = event_body("robot.batch.completed", {"items": []})
    for job_id in (ghost, "not-a-uuid", "x" * 300, "ñ-😀", "a b", "\x00", "a\x00b"):
        answer = post_event(r.system.base, job_id, body, signed_headers(job_id, body))
        assert answer.status_code == 404, (job_id, answer.text)


# --- sizes and shapes ---


@pytest.mark.parametrize("size", [LIMIT + 1, 3 * LIMIT, 4 * LIMIT + 1, 10 * LIMIT])
def test_bodies_over_the_limit_are_413(hostile: Rig, size: int) -> None:
    r = hostile
    job = job_on(r)
    padding = "x" * size
    before = state(r)
    api_body = json.dumps({"orders": [{"orderId": "A", "pedidoInput": {"pad": padding}}]})
    api = requests.post(
        f"{r.system.base}/api/jobs",
        data=api_body,
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=30,
    )
    event = event_body("robot.batch.failed", {"error": "x", "pad": padding})
    signed = post_event(r.system.base, job["id"], event, signed_headers(job["id"], event))

    assert api.status_code == 413
    assert signed.status_code == 413
    assert_envelope(api)
    assert_envelope(signed)
    assert state(r) == before


@pytest.mark.parametrize("depth", [100_000, 5_000, 1_200])
def test_deeply_nested_json_is_refused_not_crashed(hostile: Rig, depth: int) -> None:
    r = hostile
    job = job_on(r)
    nested = '{"a":' * depth + "1" + "}" * depth
    before = state(r)
    api = requests.post(
        f"{r.system.base}/api/jobs",
        data=f'{{"orders":[{{"orderId":"D","pedidoInput":{nested}}}]}}',
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=30,
    )
    event = f'{{"type":"robot.batch.failed","data":{{"error":"x","deep":{nested}}}}}'
    signed = post_event(r.system.base, job["id"], event, signed_headers(job["id"], event))

    assert api.status_code in (400, 413), api.text[:200]
    assert signed.status_code in (400, 413), signed.text[:200]
    assert state(r) == before


def test_moderately_nested_pedido_input_is_stored_and_read_back(hostile: Rig) -> None:
    r = hostile
    nested: Any = "leaf"
    for _ in range(200):
        nested = {"a": [nested]}
    answer = r.system.http.post(
        f"{r.system.base}/api/jobs",
        json={"orders": [{"orderId": "N", "pedidoInput": nested}]},
        headers=AUTH,
        timeout=10,
    )
    assert answer.status_code == 202
    assert r.system.job(answer.json()["id"])["items"][0]["orderId"] == "N"


BIG = {"orders": orders(51)}


@pytest.mark.parametrize(
    "body",
    [
        BIG,  # over MAX_BATCH_SIZE
        {"orders": [{"orderId": "x" * 101, "pedidoInput": {}}]},
        {"orders": [1] * 20_000},
        {"orders": [{"orderId": "A", "pedidoInput": {}}] * 2},  # duplicate orderId
        {"orders": []},
        {"orders": [{"orderId": "A", "pedidoInput": []}]},
        {"orders": [{"orderId": "A", "pedidoInput": {}, "extra": 1}]},
        {"orders": "everything"},
        [],
        "orders",
        None,
    ],
    # The same ids in every process (pytest-xdist compares them): orders() has a random part.
    ids=lambda body: json.dumps(body)[:40] if body != BIG else "over MAX_BATCH_SIZE",
)
def test_huge_or_misshapen_submit_bodies_are_422(hostile: Rig, body: Any) -> None:
    r = hostile
    before = state(r)
    answer = r.system.http.post(
        f"{r.system.base}/api/jobs",
        data=json.dumps(body),
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 422, answer.text[:300]
    assert_envelope(answer)
    assert answer.json()["error"]["details"]
    assert state(r) == before


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "text/json", "application/xml"],
)
def test_wrong_content_type_is_415(hostile: Rig, content_type: str | None) -> None:
    r = hostile
    headers = dict(AUTH)
    if content_type:
        headers["Content-Type"] = content_type
    before = state(r)
    answer = requests.post(
        f"{r.system.base}/api/jobs",
        data=json.dumps({"orders": orders(1)}),
        headers=headers,
        timeout=10,
    )
    assert answer.status_code == 415
    assert_envelope(answer)
    assert state(r) == before


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/api/jobs", {"GET", "POST"}),
        ("DELETE", "/api/jobs/x", {"GET"}),
        ("GET", "/api/robot/jobs/x/events", {"POST"}),
    ],
)
def test_a_wrong_method_is_405_with_allow(
    hostile: Rig, method: str, path: str, allowed: set[str]
) -> None:
    answer = requests.request(method, f"{hostile.system.base}{path}", headers=AUTH, timeout=10)
    assert answer.status_code == 405
    assert_envelope(answer)
    assert allowed <= {m.strip() for m in answer.headers["Allow"].split(",")}


# --- unicode and control characters in every string field ---

# Refused in stored text: C0 and C1 controls, line separators, bidirectional overrides.
CONTROL = ["\x00", "\x01", "\x1b[31m", "\x7f", "line\nbreak", "tab\there", "\x85c1", "\u202eevil"]
CONTROL += ["\u2028sep", "\u2066isolate"]
UNICODE = ["ñandú", "😀📦", "zero\u200bwidth", "\ufeffbom", "日本語"]


@pytest.mark.parametrize("value", CONTROL + UNICODE)
def test_every_string_field_of_a_submit(hostile: Rig, value: str) -> None:
    r = hostile
    control = value in CONTROL
    cases = {
        "orderId": {"orders": [{"orderId": value, "pedidoInput": {}}]},
        "pedidoInput value": {"orders": [{"orderId": "P", "pedidoInput": {"v": value}}]},
        "pedidoInput key": {"orders": [{"orderId": "K", "pedidoInput": {value: 1}}]},
    }
    for name, body in cases.items():
        before = state(r)
        answer = r.system.http.post(
            f"{r.system.base}/api/jobs", json=body, headers=AUTH, timeout=10
        )
        if name == "orderId" and control:
            assert answer.status_code == 422, (name, answer.text)
            assert state(r) == before
        else:  # pedidoInput is the client's JSON, passed on untouched
            assert answer.status_code == 202, (name, answer.text)
            item = r.system.job(answer.json()["id"])["items"][0]
            assert item["orderId"] == body["orders"][0]["orderId"]


@pytest.mark.parametrize("value", CONTROL + UNICODE)
def test_every_string_field_of_a_query_path_or_header(hostile: Rig, value: str) -> None:
    r = hostile
    raw = value.encode()
    before = state(r)
    answers = {
        "status": r.system.http.get(
            f"{r.system.base}/api/jobs", params={"status": value}, headers=AUTH, timeout=10
        ),
        "limit": r.system.http.get(
            f"{r.system.base}/api/jobs", params={"limit": value}, headers=AUTH, timeout=10
        ),
        "cursor": r.system.http.get(
            f"{r.system.base}/api/jobs", params={"cursor": value}, headers=AUTH, timeout=10
        ),
        "job id": r.system.http.get(
            f"{r.system.base}/api/jobs/{requests.utils.quote(value)}", headers=AUTH, timeout=10
        ),
        "cancel id": r.system.http.post(
            f"{r.system.base}/api/jobs/{requests.utils.quote(value)}/cancel",
            headers=AUTH,
            timeout=10,
        ),
    }
    for name, answer in answers.items():
        assert answer.status_code in (404, 422), (name, answer.status_code, answer.text[:200])
        assert_envelope(answer)
    assert state(r) == before
    # Headers travel as bytes: a server may refuse control characters outright (400).
    for header in ("Idempotency-Key", "Authorization"):
        sent = {**AUTH, header: raw} if header != "Authorization" else {header: b"Bearer " + raw}
        try:
            answer = requests.post(
                f"{r.system.base}/api/jobs", json={"orders": orders(1)}, headers=sent, timeout=10
            )
        except requests.exceptions.InvalidHeader:
            continue  # the client itself will not send it
        assert answer.status_code < 500, (header, answer.status_code, answer.text[:200])


@pytest.mark.parametrize("value", CONTROL + UNICODE)
def test_every_string_field_of_a_callback(hostile: Rig, value: str) -> None:
    r = hostile
    control = value in CONTROL
    job = job_on(r, 3)
    first, second, third = (item["id"] for item in job["items"])
    events = {
        "trackingNumber": (
            "robot.item.completed",
            {"itemId": first, "status": "success", "trackingNumber": value},
        ),
        "item error": (
            "robot.item.completed",
            {"itemId": second, "status": "error", "error": value},
        ),
        "itemId": ("robot.item.started", {"itemId": value}),
        "type": (value, {"itemId": third}),
        "batch error": ("robot.batch.failed", {"error": value}),
    }
    for name, (event_type, data) in events.items():
        body = event_body(event_type, data)
        before = state(r)
        answer = post_event(r.system.base, job["id"], body, signed_headers(job["id"], body))
        if name in ("itemId", "type") or control:
            assert answer.status_code == 422, (name, answer.text)
            assert state(r) == before
        else:
            assert answer.status_code == 200, (name, answer.text)
    # webhook-id is a header: bytes on the wire, part of what is signed.
    body = event_body("robot.item.started", {"itemId": third})
    headers = signed_headers(job["id"], body, f"msg-{value}")
    headers["webhook-id"] = headers["webhook-id"].encode()  # type: ignore[assignment]
    try:
        answer = post_event(r.system.base, job["id"], body, headers)
    except requests.exceptions.InvalidHeader:
        return
    assert answer.status_code < 500, answer.text[:200]
