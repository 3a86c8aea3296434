"""Parse request bodies strictly: only JSON that every database can store."""

from __future__ import annotations

import json
from typing import Any

from .errors import ApiError


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_strict(raw: bytes) -> Any:
    """Return the parsed body, or raise a 400 ApiError for anything that is not plain JSON.

    JSON between systems is UTF-8 (RFC 8259 §8.1): the bytes are decoded as UTF-8 (a leading
    byte order mark ignored), never guessed as UTF-16 or UTF-32 as ``json.loads`` does for bytes.
    """
    try:
        body = json.loads(raw.decode("utf-8-sig"), parse_constant=_reject_constant)
        # Lone surrogates parse, but no database can store them.
        json.dumps(body, ensure_ascii=False).encode()
    except (ValueError, RecursionError, UnicodeError):
        raise ApiError(400, "the body is not valid JSON") from None
    return body
