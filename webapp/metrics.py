"""``GET /metrics``: Prometheus text for a bearer of one of API_TOKENS (CONTRACT §3)."""

from __future__ import annotations

from flask import Blueprint, Response

from orchestrator.metrics import web_exposition

from .access import guard_api
from .state import orchestrator

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics_page() -> Response:
    guard_api()
    settings = orchestrator().settings
    body, content_type = web_exposition(settings.database_url, settings)
    return Response(body, content_type=content_type)
