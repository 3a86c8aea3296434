"""Who may do what (CONTRACT §12): one rule table for the API and the dashboard.

Every route is public, or needs a role. A route that only reads (``GET``) needs ``read``
unless the table says more; a route that changes something must be in the table with its
role and the audit action it asks for: ``check_rules`` refuses to build an app with a
state-changing route that has no rule, and names it. A refused request gets 403
``forbidden`` and leaves one ``denied`` entry, its only write.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, g, request

from orchestrator import audit
from orchestrator.config import role_includes

from .errors import ApiError
from .state import orchestrator

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Rule:
    """The role a route needs, the audit action it asks for, and what it acts on.

    ``target`` names what a refused request's entry is about: a URL argument (``job_id``),
    else taken literally (``*``: every robot); None: the request's path.
    """

    role: str
    action: str = audit.READ
    target: str | None = None


READ = Rule("read")

# Routes anyone may call: the robot's signed callbacks, health, the API description, the
# dashboard's sign-in page and its static files.
PUBLIC_BLUEPRINTS = frozenset({"callbacks", "health"})
PUBLIC_ENDPOINTS = frozenset(
    {"static", "openapi", "dashboard_home", "dashboard.login", "dashboard.static"}
)

RULES: dict[str, Rule] = {
    # The job API (CONTRACT §3)
    "jobs.submit": Rule("submit", "job.submitted"),
    "jobs.resubmit": Rule("submit", "job.resubmitted", "job_id"),
    "jobs.cancel": Rule("operate", "job.cancelled", "job_id"),
    "dispatch.pause": Rule("operate", "dispatch.paused", "*"),
    "dispatch.resume": Rule("operate", "dispatch.resumed", "*"),
    "robots.pause": Rule("operate", "dispatch.paused", "name"),
    "robots.resume": Rule("operate", "dispatch.resumed", "name"),
    "notifications.redeliver": Rule("operate", "notification.redelivered", "notification_id"),
    "audit.list_entries": Rule("operate"),
    # The dashboard: the same actions through its forms, and the Activity pages.
    "dashboard.submit": Rule("submit", "job.submitted"),
    "dashboard.resubmit": Rule("submit", "job.resubmitted", "job_id"),
    "dashboard.cancel": Rule("operate", "job.cancelled", "job_id"),
    "dashboard.pause": Rule("operate", "dispatch.paused", "*"),
    "dashboard.resume": Rule("operate", "dispatch.resumed", "*"),
    "dashboard.pause_robot": Rule("operate", "dispatch.paused", "name"),
    "dashboard.resume_robot": Rule("operate", "dispatch.resumed", "name"),
    "dashboard.redeliver": Rule("operate", "notification.redelivered", "notification_id"),
    "dashboard.activity": Rule("operate"),
    # Signing out changes only the person's own session: any signed-in role.
    "dashboard.logout": Rule("read", "session.ended"),
}


class MissingRule(LookupError):
    """A route that changes something has no rule in RULES."""


def rule_for(endpoint: str, methods: frozenset[str] | set[str] | None) -> Rule | None:
    """Return the rule of a route; None when it is public. Raise MissingRule for a gap."""
    if endpoint in PUBLIC_ENDPOINTS or endpoint.partition(".")[0] in PUBLIC_BLUEPRINTS:
        return None
    if endpoint in RULES:
        return RULES[endpoint]
    if set(methods or ()) <= SAFE_METHODS:
        return READ
    raise MissingRule(
        f"route {endpoint!r} ({', '.join(sorted(set(methods or ()) - SAFE_METHODS))}) has no "
        "role rule: add it to webapp.access.RULES with the role it needs and its audit action"
    )


def check_rules(app: Flask) -> None:
    """Refuse an app with a state-changing route that has no rule (raise MissingRule)."""
    for url_rule in app.url_map.iter_rules():
        rule_for(url_rule.endpoint, url_rule.methods)


def current_rule() -> Rule | None:
    """Return the rule of the route this request reached (None: public or no route)."""
    if request.url_rule is None or request.endpoint is None:
        return None
    return rule_for(request.endpoint, request.url_rule.methods)


def check(actor: audit.Actor) -> bool:
    """Tell whether ``actor`` may make this request; if not, record the ``denied`` entry.

    The entry is committed in a transaction of its own: it is the refused request's only
    write. The caller answers 403.
    """
    g.actor = actor
    rule = current_rule()
    if rule is None or role_includes(actor.role, rule.role):
        return True
    if rule.target is None:
        target = request.path
    else:
        target = str((request.view_args or {}).get(rule.target, rule.target))
    details = {"method": request.method, "path": request.path, "needs": rule.role}
    with orchestrator().session() as session:
        audit.record(session, actor, rule.action, target, details, outcome=audit.DENIED)
        session.commit()
    return False


def guard_api() -> None:
    """The API's gate: a bearer of API_TOKENS (else 401) whose role allows it (else 403)."""
    from .auth import require_token

    token = require_token()
    if not check(audit.Actor(token.name, token.role, request.remote_addr)):
        raise ApiError(403, f"the token {token.name} ({token.role}) may not do this")


def request_actor() -> audit.Actor:
    """Return who makes this request, as the gate saw them."""
    actor: audit.Actor = g.actor
    return actor
