"""Per-job callback secrets and their verification (CONTRACT §4, §5)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook
from werkzeug.datastructures import Headers

from orchestrator.signing import SignatureError, job_callback_secret, verify_callback

MASTER = "master-s3cr3t"
JOB = "6f1c2a4e-8d8b-4b8e-9d55-0a1c2f3e4d5b"
BODY = b'{"type": "robot.batch.failed", "data": {"error": "portal down"}}'


def signed(
    body: bytes = BODY,
    job_id: str = JOB,
    master: str = MASTER,
    when: datetime | None = None,
    webhook_id: str = "msg_1",
) -> dict[str, str]:
    when = when or datetime.now(UTC)
    secret = job_callback_secret(master, job_id)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, when, body),
    }


def test_secret_is_a_standard_webhooks_secret():
    secret = job_callback_secret(MASTER, JOB)
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert secret == job_callback_secret(MASTER, JOB)
    assert MASTER not in secret


def test_secret_differs_per_job_and_per_master():
    secrets = {
        job_callback_secret(MASTER, JOB),
        job_callback_secret(MASTER, JOB + "x"),
        job_callback_secret(MASTER, "another-job"),
        job_callback_secret(MASTER + "x", JOB),
        job_callback_secret("another-master", JOB),
    }
    assert len(secrets) == 5


def test_valid_signature_verifies():
    verify_callback((MASTER,), JOB, BODY, signed())


@pytest.mark.parametrize(
    "body",
    [b"\x80", b"\xff\xfe{\x00}\x00", b"caf\xe9", b"\x00"],
    ids=["x80", "utf-16", "latin-1", "nul"],
)
def test_a_signature_over_any_bytes_verifies_even_when_they_are_not_utf8(body):
    """CONTRACT §5: the HMAC is over the raw body; whether it is JSON is judged after."""
    verify_callback((MASTER,), JOB, body, signed(body=body))
    with pytest.raises(SignatureError):
        verify_callback((MASTER,), JOB, body + b"\x80", signed(body=body))


def test_case_insensitive_headers_as_flask_gives_them_verify():
    headers = Headers({name.title(): value for name, value in signed().items()})
    verify_callback((MASTER,), JOB, BODY, headers)


def test_one_valid_signature_among_several_verifies():
    headers = signed()
    headers["webhook-signature"] = "v1,AAAA " + headers["webhook-signature"]
    verify_callback((MASTER,), JOB, BODY, headers)


def test_timestamp_four_minutes_off_verifies():
    verify_callback((MASTER,), JOB, BODY, signed(when=datetime.now(UTC) - timedelta(minutes=4)))


@pytest.mark.parametrize(
    "headers",
    [
        signed(job_id="another-job"),
        signed(master="another-master"),
        signed(body=BODY + b" "),
        signed(webhook_id="msg_2") | {"webhook-id": "msg_1"},
    ],
    ids=["other-job", "other-master", "other-body", "other-webhook-id"],
)
def test_signature_for_something_else_is_refused(headers):
    with pytest.raises(SignatureError):
        verify_callback((MASTER,), JOB, BODY, headers)


def test_kept_verifiers_still_tell_jobs_and_masters_apart():
    # Each job's verifier is kept for its next callbacks: warm them all, then cross them.
    other = "another-job"
    verify_callback((MASTER,), JOB, BODY, signed())
    verify_callback((MASTER,), other, BODY, signed(job_id=other))
    verify_callback(("another-master",), JOB, BODY, signed(master="another-master"))
    for job_id, master, headers in [
        (JOB, MASTER, signed(job_id=other)),
        (other, MASTER, signed()),
        (JOB, "another-master", signed()),
        (JOB, MASTER, signed(master="another-master")),
    ]:
        with pytest.raises(SignatureError):
            verify_callback((master,), job_id, BODY, headers)


@pytest.mark.parametrize("offset", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_stale_or_future_timestamp_is_refused(offset):
    headers = signed(when=datetime.now(UTC) + offset)
    with pytest.raises(SignatureError):
        verify_callback((MASTER,), JOB, BODY, headers)


def test_tampered_body_is_refused():
    with pytest.raises(SignatureError):
        verify_callback((MASTER,), JOB, BODY.replace(b"portal down", b"all fine!!"), signed())


MALFORMED = {
    "v1,a,b": {"webhook-signature": "v1,a,b"},
    "not-base64": {"webhook-signature": "v1,!!!*"},
    "bad-padding": {"webhook-signature": "v1,abc"},
    "no-version": {"webhook-signature": "garbage"},
    "other-version": {"webhook-signature": "v2,AAAA"},
    "empty-signature": {"webhook-signature": ""},
    "timestamp-text": {"webhook-timestamp": "now"},
    "timestamp-float": {"webhook-timestamp": "1.5e9"},
    "timestamp-huge": {"webhook-timestamp": "9" * 40},
    "empty-id": {"webhook-id": ""},
}


@pytest.mark.parametrize("override", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_headers_raise_signature_error_never_value_error(override):
    headers = signed() | override
    with pytest.raises(SignatureError):
        verify_callback((MASTER,), JOB, BODY, headers)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_refused(missing):
    headers = {k: v for k, v in signed().items() if k != missing}
    with pytest.raises(SignatureError):
        verify_callback((MASTER,), JOB, BODY, headers)


def test_signature_error_does_not_reveal_the_secret():
    secret = job_callback_secret(MASTER, JOB)
    with pytest.raises(SignatureError) as caught:
        verify_callback((MASTER,), JOB, BODY, signed(master="another-master"))
    text = str(caught.value)
    assert MASTER not in text
    assert secret not in text and secret.removeprefix("whsec_") not in text


# --- rotation (CONTRACT §9) ---


def test_a_callback_signed_under_a_previous_master_verifies_while_it_is_listed():
    old_signature = signed(master="old-master")
    verify_callback(("new-master", "older", "old-master"), JOB, BODY, old_signature)
    verify_callback(("new-master", "old-master"), JOB, BODY, signed(master="new-master"))


def test_without_the_previous_master_the_old_signature_fails():
    old_signature = signed(master="old-master")
    verify_callback(("new-master", "old-master"), JOB, BODY, old_signature)  # cached verifier
    with pytest.raises(SignatureError):
        verify_callback(("new-master",), JOB, BODY, old_signature)


def test_a_previous_master_signs_for_its_own_jobs_only():
    with pytest.raises(SignatureError):
        verify_callback(("new-master", "old-master"), JOB, BODY, signed(master="unrelated"))
    with pytest.raises(SignatureError):
        verify_callback(
            ("new-master", "old-master"),
            JOB,
            BODY,
            signed(master="old-master", job_id="another-job"),
        )


def test_one_string_is_not_taken_for_a_list_of_secrets():
    with pytest.raises(TypeError):
        verify_callback(MASTER, JOB, BODY, signed())  # type: ignore[arg-type]
