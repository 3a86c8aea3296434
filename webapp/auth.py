"""Bearer-token authentication of the job API, compared in constant time."""

from __future__ import annotations

import hmac

from flask import current_app, g, request

from .errors import ApiError


def token_matches(presented: str, accepted: tuple[str, ...]) -> bool:
    """Compare against every accepted token, without an early exit."""
    found = False
    for token in accepted:
        found |= hmac.compare_digest(presented.encode(), token.encode())
    return found


def require_token() -> None:
    """Abort with 401 unless the request carries one of API_TOKENS; remember which one."""
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    accepted = current_app.extensions["orchestrator"].settings.api_tokens
    if scheme.lower() != "bearer" or not presented or not token_matches(presented, accepted):
        raise ApiError(401, "a valid 'Authorization: Bearer <token>' header is required")
    g.api_token = presented
