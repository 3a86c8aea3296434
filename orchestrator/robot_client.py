"""The one dispatch request to the robot, and the two ways it can fail (CONTRACT §4)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from .config import Settings
from .lifecycle import DispatchTicket
from .signing import job_callback_secret

log = logging.getLogger(__name__)

# Answers that prove the robot never took the job; 502-504 may hide a robot that did.
AMBIGUOUS_STATUSES = frozenset({502, 503, 504})


class DispatchFailed(Exception):
    """The dispatch did not lead to an accepted job. Never retried."""

    robot_may_have_it: bool = False

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        # The robot's HTTP answer, when there was one: a 4xx is the robot refusing this one
        # job and does not count toward the pause after failures (CONTRACT §7).
        self.status_code = status_code


class DispatchRefused(DispatchFailed):
    """The robot certainly did not receive or take the job: its items are safe to resend."""

    robot_may_have_it = False


class DispatchAmbiguous(DispatchFailed):
    """The robot may have received the job: its items must be checked in the portal."""

    robot_may_have_it = True


@dataclass(frozen=True)
class DispatchAccepted:
    status_code: int


def build_payload(ticket: DispatchTicket, settings: Settings) -> dict[str, object]:
    """Return the JSON body of the dispatch request."""
    return {
        "jobId": ticket.job_id,
        "callbackUrl": f"{settings.public_url}/api/robot/jobs/{ticket.job_id}/events",
        "callbackSecret": job_callback_secret(settings.robot_callback_secret, ticket.job_id),
        "deadline": ticket.deadline.isoformat().replace("+00:00", "Z"),
        "items": ticket.items,
    }


def dispatch(
    ticket: DispatchTicket, settings: Settings, session: requests.Session | None = None
) -> DispatchAccepted:
    """Send the job to the robot once; raise DispatchRefused or DispatchAmbiguous on failure."""
    robot = settings.robot_or_fallback(ticket.robot)  # the job's robot (CONTRACT §11)
    headers = {"Content-Type": "application/json", "Idempotency-Key": ticket.job_id}
    if robot.api_token:
        headers["Authorization"] = f"Bearer {robot.api_token}"
    body = json.dumps(build_payload(ticket, settings), separators=(",", ":"))
    timeout = robot.dispatch_timeout_seconds
    http = session or requests.Session()
    url = f"{robot.url}/api/v1/jobs"
    where = _host(robot.url)
    try:
        # A followed 307/308 would send the body again: a second dispatch.
        response = http.post(
            url, data=body, headers=headers, timeout=(timeout, timeout), allow_redirects=False
        )
    except requests.ConnectTimeout:
        raise DispatchRefused(f"the robot at {where} did not accept a connection in time") from None
    except requests.exceptions.SSLError:
        raise DispatchRefused(f"TLS to the robot at {where} failed") from None
    except requests.ConnectionError as exc:
        if _never_sent(exc):
            raise DispatchRefused(f"could not connect to the robot at {where}") from None
        raise DispatchAmbiguous(
            "the connection to the robot broke after the job was sent; "
            "check the portal before resubmitting"
        ) from None
    except requests.Timeout:
        raise DispatchAmbiguous(
            f"the robot did not answer within {timeout:g} s; check the portal before resubmitting"
        ) from None
    except requests.RequestException as exc:
        raise DispatchRefused(
            f"the dispatch request could not be made: {type(exc).__name__}"
        ) from None
    finally:
        if session is None:
            http.close()
    code = response.status_code
    if 200 <= code < 300:
        return DispatchAccepted(code)
    if code in AMBIGUOUS_STATUSES:
        raise DispatchAmbiguous(
            f"the robot's gateway answered HTTP {code}; the job may have been passed on, "
            "check the portal before resubmitting",
            status_code=code,
        )
    raise DispatchRefused(f"the robot refused the job with HTTP {code}", status_code=code)


def _host(url: str) -> str:
    """Return host[:port] of a URL: enough to act on, never a credential in it."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def _never_sent(exc: requests.ConnectionError) -> bool:
    """Tell whether a connection error happened before the request could be sent."""
    text = repr(exc)
    markers = (
        "NewConnectionError",
        "NameResolutionError",
        "Connection refused",
        "Failed to establish a new connection",
        "getaddrinfo failed",
        "Name or service not known",
    )
    return any(marker in text for marker in markers)
