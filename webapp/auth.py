"""Bearer-token authentication of the job API, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from flask import current_app, g, request

from orchestrator.config import ApiToken

from .errors import ApiError


def find_token(presented: str, accepted: Iterable[ApiToken]) -> ApiToken | None:
    """Return the entry whose token was presented; every entry is compared, no early exit."""
    found = None
    for entry in accepted:
        if hmac.compare_digest(presented.encode(), entry.token.encode()):
            found = entry
    return found


def require_token() -> ApiToken:
    """Abort with 401 unless the request carries one of API_TOKENS; return and remember it."""
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    accepted = current_app.extensions["orchestrator"].settings.tokens
    entry = find_token(presented, accepted) if presented else None
    if scheme.lower() != "bearer" or entry is None:
        raise ApiError(401, "a valid 'Authorization: Bearer <token>' header is required")
    g.api_token = presented  # idempotency keys are scoped by its digest
    return entry
