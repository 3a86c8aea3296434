"""Parse request bodies strictly: only JSON that every database can store."""

from __future__ import annotations

import json
from typing import Any

from orchestrator import jsonvalues

from .errors import ApiError


def loads_strict(raw: bytes) -> Any:
    """Return the parsed body, or raise a 400 ApiError for anything that is not plain JSON
    and a 422 for a number no double holds (CONTRACT §3: ``1e400``).

    JSON between systems is UTF-8 (RFC 8259 §8.1): the bytes are decoded as UTF-8 (a leading
    byte order mark ignored), never guessed as UTF-16 or UTF-32 as ``json.loads`` does for bytes.
    """
    try:
        body = jsonvalues.loads(raw.decode("utf-8-sig"))
        # Lone surrogates parse, but no database can store them.
        json.dumps(body, ensure_ascii=False).encode()
    except jsonvalues.NumberOutOfRange as exc:
        raise ApiError(
            422,
            "a number in the body does not fit a double (64-bit float)",
            details={path: ["a number that does not fit a double"] for path in exc.paths},
        ) from None
    except (ValueError, RecursionError, UnicodeError):
        raise ApiError(400, "the body is not valid JSON") from None
    return body
