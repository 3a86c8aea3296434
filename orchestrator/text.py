"""Which characters no stored text (order ids, tracking numbers, errors) may hold.

C0 and C1 control characters, DEL, the line and paragraph separators (U+2028, U+2029) and the
bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): each of them
can break a log line, or make an order id or tracking number read differently on screen
("Trojan Source" spoofing). Every check of stored text uses this one rule.
"""

from __future__ import annotations

import re

UNSAFE_CHARACTERS = "\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069"
_UNSAFE = re.compile(f"[{UNSAFE_CHARACTERS}]")


def has_unsafe_characters(value: str) -> bool:
    """Tell whether the text holds a control, separator or bidirectional-override character."""
    return _UNSAFE.search(value) is not None
