"""Figures the tests measure (the fault suite's), printed at the end of the run.

Kept in the process that runs the test; under pytest-xdist each worker hands its figures to
the controller at the end (tests/conftest.py), which prints them all and writes them as JSON
to ``$FAULTS_FIGURES`` when set: docs/reliability.md quotes them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FIGURES: list[dict[str, Any]] = []


def record(scenario: str, **figures: Any) -> None:
    """Keep a measured figure for the end-of-run summary and docs/reliability.md."""
    FIGURES.append({"scenario": scenario, **figures})


def report(terminalreporter: Any) -> None:
    """Print every figure kept (and write them to ``$FAULTS_FIGURES`` when set)."""
    if not FIGURES:
        return
    terminalreporter.section("fault suite: measured figures")
    for row in FIGURES:
        rest = ", ".join(f"{k}={v}" for k, v in row.items() if k != "scenario")
        terminalreporter.write_line(f"{row['scenario']}: {rest}")
    target = os.environ.get("FAULTS_FIGURES")
    if target:
        Path(target).write_text(json.dumps(FIGURES, indent=2) + "\n")
