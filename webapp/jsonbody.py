"""Parse request bodies strictly: only JSON that every database can store."""

from __future__ import annotations

import json
from typing import Any

from .errors import ApiError


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_strict(raw: bytes) -> Any:
    """Return the parsed body, or raise a 400 ApiError for anything that is not plain JSON."""
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
        # Lone surrogates parse, but no database can store them.
        json.dumps(body, ensure_ascii=False).encode()
    except (ValueError, RecursionError, UnicodeError):
        raise ApiError(400, "the body is not valid JSON") from None
    return body
