"""Fault injection loaded into a test worker with ``--include tests.integration.hooks``.

An order whose ``pedidoInput`` has ``"_explode": "before_claim"`` or ``"after_claim"`` makes
the dispatch step raise an unexpected error at that point. Never loaded in production.
"""

from __future__ import annotations

from typing import Any

from celery import current_app
from sqlalchemy import select

from orchestrator import lifecycle, robot_client
from orchestrator.db import session_scope
from orchestrator.models import Item

_claim = lifecycle.claim_dispatch
_dispatch = robot_client.dispatch


def _marker(job_id: str) -> str | None:
    settings = current_app.conf["orchestrator_settings"]
    with session_scope(settings.database_url) as session:
        pedido = session.scalar(
            select(Item.pedido_input).where(Item.job_id == job_id).order_by(Item.position)
        )
    return (pedido or {}).get("_explode")


def claim_dispatch(session: Any, job_id: str, settings: Any) -> Any:
    if _marker(job_id) == "before_claim":
        raise RuntimeError("injected fault before the dispatch claim")
    return _claim(session, job_id, settings)


def dispatch(ticket: Any, settings: Any, session: Any = None) -> Any:
    if ticket.items and ticket.items[0]["pedidoInput"].get("_explode") == "after_claim":
        raise RuntimeError("injected fault after the dispatch claim")
    return _dispatch(ticket, settings, session)


lifecycle.claim_dispatch = claim_dispatch
robot_client.dispatch = dispatch
