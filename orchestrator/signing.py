"""Per-job callback secrets (Standard Webhooks) derived from the master secret."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
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


class SignatureError(Exception):
    """The callback is not signed with this job's secret, or its timestamp is off."""


def verify_callback(
    master_secrets: Sequence[str], job_id: str, body: bytes, headers: Mapping[str, str]
) -> None:
    """Verify a robot callback for ``job_id``; raise SignatureError when it does not hold.

    ``master_secrets`` is the current master secret first, then the previous ones still
    accepted (CONTRACT §9, rotation): the callback holds when it is signed with the job's
    secret derived from any of them. The verifier cache is keyed by master secret and job,
    so a rotation never reuses a verifier of another secret. The signature is over ``body``
    exactly as received, whatever its bytes (standardwebhooks ≥ 1.3 verifies bytes that are not
    UTF-8 too): whether they are JSON is the caller's next check.
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
    for master_secret in master_secrets:
        try:
            _job_webhook(master_secret, job_id).verify(body, wanted, json_parse=False)
            return
        # The library raises ValueError/binascii.Error, not its own error, for malformed headers.
        except (WebhookVerificationError, ValueError, binascii.Error) as exc:
            problem = str(exc) or problem
    raise SignatureError(problem)
