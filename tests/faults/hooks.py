"""Fault hooks for tests/faults, loaded into a worker with ``--include tests.faults.hooks``.

Every dispatch attempt appends its job id to ``$FAULT_HOOK_DIR/attempts.log``: a count of
attempts made by any worker, whatever the robot saw (a refused connection included). An order
whose ``pedidoInput`` has ``"_fault": "hold_before_send"`` or ``"hold_after_send"`` makes the
dispatch write ``$FAULT_HOOK_DIR/held-<job id>`` at that point and then hang (bounded), so that
a test can kill the worker exactly there. While ``$FAULT_HOOK_DIR/hold-hand-off`` exists, every
hand-off (``tasks.hand_off``, after a finalize's commit) writes ``held-hand-off`` and hangs
(bounded) instead: a test kills the worker between a finalize's commit and its hand-off.
Never loaded in production.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from orchestrator import robot_client, tasks

HOLD_SECONDS = 120  # the test kills the worker long before; bounded all the same

_real_dispatch = robot_client.dispatch
_real_hand_off = tasks.hand_off


def _directory() -> Path:
    return Path(os.environ["FAULT_HOOK_DIR"])


def _fault(ticket: Any) -> str | None:
    for item in ticket.items:
        fault = item["pedidoInput"].get("_fault")
        if isinstance(fault, str):
            return fault
    return None


def _hold(job_id: str, where: str) -> None:
    (_directory() / f"held-{job_id}").write_text(where)
    time.sleep(HOLD_SECONDS)


def dispatch(ticket: Any, settings: Any, session: Any = None) -> Any:
    with (_directory() / "attempts.log").open("a") as attempts:
        attempts.write(f"{ticket.job_id}\n")
    fault = _fault(ticket)
    if fault == "hold_before_send":
        _hold(ticket.job_id, "before")
    answer = _real_dispatch(ticket, settings, session)
    if fault == "hold_after_send":
        _hold(ticket.job_id, "after")
    return answer


def hand_off(app: Any, settings: Any, **options: Any) -> Any:
    if (_directory() / "hold-hand-off").exists():
        (_directory() / "held-hand-off").write_text(str(os.getpid()))
        time.sleep(HOLD_SECONDS)
    return _real_hand_off(app, settings, **options)


robot_client.dispatch = dispatch
tasks.hand_off = hand_off
