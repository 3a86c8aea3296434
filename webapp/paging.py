"""The opaque cursor of every newest-first list of the API (jobs, notifications, audit)."""

from __future__ import annotations

from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

from .errors import ApiError
from .state import orchestrator


def _serializer(salt: str) -> URLSafeSerializer:
    return URLSafeSerializer(orchestrator().settings.robot_callback_secret, salt=salt)


def dump_cursor(salt: str, position: Any) -> str:
    """Return the signed cursor of a position in the list named by ``salt``."""
    return str(_serializer(salt).dumps(position))


def load_cursor(salt: str, cursor: str, read: Any = lambda value: value) -> Any:
    """Return the position a cursor names, through ``read``; 422 for one not issued here."""
    try:
        return read(_serializer(salt).loads(cursor))
    except (BadSignature, ValueError, TypeError):
        raise ApiError(
            422, "the cursor was not issued by this server", details={"cursor": ["invalid"]}
        ) from None
