"""Per-job callback secrets (Standard Webhooks) derived from the master secret."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Collection, Mapping, Sequence
from functools import lru_cache

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def job_callback_secret(master_secret: str, job_id: str) -> str:
    """Return the ``whsec_`` secret of one job: it signs for that job only."""
    digest = hmac.new(
        master_secret.encode(), f"robot-callback:{job_id}".encode(), hashlib.sha256
    ).digest()
    return "whsec_" + base64.b64encode(digest).decode()


@lru_cache(maxsize=4096)
def _job_webhook(master_secret: str, job_id: str) -> Webhook:
    """The verifier of one job's callbacks, kept for the job's next ones (a job sends one
    per item). Bounded: forged job ids only push older entries out."""
    return Webhook(job_callback_secret(master_secret, job_id))


# A fixed label: the fingerprint names a master secret without revealing it.
_FINGERPRINT_LABEL = b"orchestrator callback master secret fingerprint"


@lru_cache(maxsize=64)
def secret_fingerprint(master_secret: str) -> str:
    """Name a master secret without revealing it: 16 hex digits of an HMAC under a label.

    Recorded with each job at its dispatch claim (``jobs.callback_key``); an index into
    the list of secrets would change when ROBOT_CALLBACK_SECRET_PREVIOUS is reordered.
    """
    return hmac.new(master_secret.encode(), _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:16]


class SignatureError(Exception):
    """The callback is not signed with this job's secret, or its timestamp is off."""


def verify_callback(
    master_secrets: Sequence[str], job_id: str, body: bytes, headers: Mapping[str, str]
) -> frozenset[str]:
    """Verify a robot callback for ``job_id``; return the fingerprints of the master secrets
    whose job secret signed it, or raise SignatureError when none did.

    ``master_secrets`` is the current master secret first, then the previous ones still
    listed (CONTRACT §9). Which of them may sign for the job depends on the job
    (``signs_for_job``), read from the database only once a signature held. The verifier
    cache is keyed by master secret and job, so a rotation never reuses a verifier of
    another secret. The signature is over ``body`` exactly as received, whatever its bytes
    (standardwebhooks ≥ 1.3 verifies bytes that are not UTF-8 too): whether they are JSON is
    the caller's next check.
    """
    if isinstance(master_secrets, str):
        raise TypeError("master_secrets is a sequence of secrets, not one string")
    wanted = {
        name: headers.get(name, "")
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    }
    if not all(wanted.values()):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    problem = "invalid signature"
    verified = set()
    for master_secret in master_secrets:
        try:
            _job_webhook(master_secret, job_id).verify(body, wanted, json_parse=False)
        # The library raises ValueError/binascii.Error, not its own error, for malformed headers.
        except (WebhookVerificationError, ValueError, binascii.Error) as exc:
            problem = str(exc) or problem
        else:
            verified.add(secret_fingerprint(master_secret))
    if not verified:
        raise SignatureError(problem)
    return frozenset(verified)


def signs_for_job(
    verified: Collection[str], current_secret: str, job_key: str | None, claimed: bool
) -> bool:
    """Tell whether a callback signed under the ``verified`` master secrets holds for a job.

    A job verifies only with the master secret its dispatch was claimed under (``job_key``,
    its fingerprint): a retired value never signs for a job dispatched after it was
    retired. A job not claimed yet can have received no secret: only the current value
    signs for it (and the callback is then refused as never dispatched). A job claimed
    before fingerprints were recorded accepts the current and every previous value listed.
    """
    if job_key is not None:
        return job_key in verified
    if not claimed:
        return secret_fingerprint(current_secret) in verified
    return bool(verified)
