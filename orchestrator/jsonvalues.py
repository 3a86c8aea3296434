"""The one rule for JSON read from clients and the robot: numbers must fit a double.

``1e400`` parses in Python as ``inf`` (and a 400-digit integer as an int no double holds):
SQLite would store ``Infinity`` (not JSON, later sent to the robot) and PostgreSQL refuses it
(a 500). Every parser of client or robot JSON (the job API, the callbacks, the batch files of
the CLI and the dashboard) goes through ``loads``; values handed over already parsed (the
library's ``submit_job``) are checked with ``out_of_range``, the same rule.
"""

from __future__ import annotations

import json
import math
from typing import Any


class NumberOutOfRange(ValueError):
    """The JSON holds numbers that do not fit a double; ``paths`` names where."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__(f"a number does not fit a double (64-bit float) at {', '.join(paths)}")
        self.paths = paths


def fits_a_double(number: float) -> bool:
    """Tell whether a JSON number is one a double can hold (finite, at most ~1.8e308)."""
    if isinstance(number, int):
        try:
            float(number)
        except OverflowError:
            return False
        return True
    return math.isfinite(number)


def out_of_range(value: Any, path: str = "") -> list[str]:
    """Return the paths (``orders.0.pedidoInput.x``) of numbers in ``value`` no double holds."""
    found: list[str] = []
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((f"{where}.{key}" if where else str(key), v) for key, v in node.items())
        elif isinstance(node, list):
            stack.extend((f"{where}.{i}" if where else str(i), v) for i, v in enumerate(node))
        elif (
            isinstance(node, int | float) and not isinstance(node, bool) and not fits_a_double(node)
        ):
            found.append(where or "(the body)")
    return sorted(found)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(raw: bytes | str) -> Any:
    """Parse JSON; raise NumberOutOfRange for numbers no double holds, ValueError (or
    RecursionError) for anything that is not JSON (``NaN`` and ``Infinity`` included)."""
    suspicious = False

    def number(text: str) -> float:
        nonlocal suspicious
        value = float(text)
        suspicious = suspicious or math.isinf(value)
        return value

    def integer(text: str) -> int:
        nonlocal suspicious
        suspicious = suspicious or len(text.lstrip("-")) > 308  # 1.8e308 has 309 digits
        return int(text)

    document = json.loads(
        raw, parse_constant=_reject_constant, parse_float=number, parse_int=integer
    )
    if suspicious:
        paths = out_of_range(document)
        if paths:
            raise NumberOutOfRange(paths)
    return document
