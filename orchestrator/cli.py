"""The ``orchestrator`` command: a client of the job API, plus the demo, the system and the db.

``submit``, ``status``, ``list``, ``cancel``, ``resubmit``, ``queue``, ``robots``, ``pause`` and
``resume`` talk to the HTTP API only (so they work against a remote deployment):
``--url``/``--token``, or ORCHESTRATOR_URL / ORCHESTRATOR_TOKEN. Every failure is one line on
stderr and a non-zero exit: 1 when the server or the job said no, 2 for a bad file or bad usage.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit, urlunsplit

import click
import requests

from . import event_stream
from .batchfile import api_errors, parse_batch
from .robots import DEFAULT_ROBOT

FINAL = ("completed", "failed", "cancelled")
STATUSES = ("pending", "processing", "completed", "failed", "cancelled")
DEFAULT_URL = "http://127.0.0.1:5000"


class Failure(click.ClickException):
    """A failure shown as ``error: …`` lines on stderr."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        for line in self.message.splitlines():
            click.echo(f"error: {line}", err=True)


class Api:
    """The job API over HTTP, with every failure turned into one readable line."""

    def __init__(self, url: str, token: str | None, timeout: float = 30) -> None:
        if not token:
            raise Failure("no API token: pass --token or set ORCHESTRATOR_TOKEN", 2)
        self.url = url.rstrip("/")
        self.shown_url = _without_credentials(self.url)  # for messages
        self.timeout = timeout
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        """Send one request; return (status, JSON body); raise Failure if it makes no sense."""
        try:
            answer = self.http.request(
                method, f"{self.url}{path}", timeout=self.timeout, allow_redirects=False, **kwargs
            )
        except requests.ConnectionError as exc:
            reason = _reason(exc)
            raise Failure(f"cannot reach the orchestrator at {self.shown_url} ({reason})") from None
        except requests.Timeout:
            raise Failure(f"the orchestrator at {self.shown_url} did not answer in time") from None
        except requests.RequestException as exc:
            raise Failure(f"request to {self.shown_url} failed: {type(exc).__name__}") from None
        try:
            body = answer.json()
        except ValueError:
            raise Failure(
                f"unexpected answer from {self.shown_url}{path} (HTTP {answer.status_code}, "
                "not JSON): is this the orchestrator's URL?"
            ) from None
        if answer.status_code == 401:
            raise Failure(
                "the server refused the API token (401): check --token or ORCHESTRATOR_TOKEN"
            )
        if answer.status_code >= 500:
            raise Failure(f"the server failed (HTTP {answer.status_code}): {_message(body)}")
        return answer.status_code, body if isinstance(body, dict) else {}

    def follow(self, job_id: str) -> Iterator[dict[str, Any]]:
        """Yield the job from its live stream each time it changes, until it is final."""
        try:
            yield from event_stream.follow_job(self.http, self.url, job_id)
        except event_stream.StreamRefused as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            if exc.status == 401:
                raise Failure(
                    "the server refused the API token (401): check --token or ORCHESTRATOR_TOKEN"
                ) from None
            if exc.status == 404:
                raise Failure(f"no job {job_id} at {self.shown_url}") from None
            message = _message(body)
            raise Failure(f"cannot follow job {job_id} (HTTP {exc.status}): {message}") from None
        except requests.ConnectionError as exc:
            reason = _reason(exc)
            raise Failure(f"lost the orchestrator at {self.shown_url} ({reason})") from None
        except requests.RequestException as exc:
            raise Failure(f"following job {job_id} failed: {type(exc).__name__}") from None


def _without_credentials(url: str) -> str:
    """Return the URL with any user and password in it replaced by ``***``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def _reason(exc: requests.ConnectionError) -> str:
    text = str(exc)
    for needle, reason in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "unknown host name"),
        ("Temporary failure in name resolution", "host name not resolved"),
        ("timed out", "connection timed out"),
        ("SSL", "TLS handshake failed"),
    ):
        if needle in text:
            return reason
    return type(exc).__name__


def _message(body: dict[str, Any]) -> str:
    error = body.get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return "no details"


def _details(body: dict[str, Any]) -> dict[str, Any]:
    error = body.get("error")
    details = error.get("details") if isinstance(error, dict) else None
    return details if isinstance(details, dict) else {}


def api_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --url and --token and hand the command an ``api`` built from them."""

    @click.option(
        "--url",
        envvar="ORCHESTRATOR_URL",
        default=DEFAULT_URL,
        show_default=True,
        help="Base URL of the web app [env ORCHESTRATOR_URL].",
    )
    @click.option(
        "--token",
        envvar="ORCHESTRATOR_TOKEN",
        help="One of the server's API_TOKENS [env ORCHESTRATOR_TOKEN].",
    )
    @functools.wraps(command)
    def wrapper(url: str, token: str | None, **kwargs: Any) -> Any:
        return command(api=Api(url, token), **kwargs)

    return wrapper


@click.group()
def main() -> None:
    """Robot-job orchestrator: submit and follow batches, run the demo or the whole system."""


# --- the job API ---


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path, allow_dash=True))
@click.option("--wait", is_flag=True, help="Show progress until the job is final.")
@click.option("--idempotency-key", help="Make a retried submit return the first job.")
@click.option(
    "--priority",
    type=click.IntRange(-100, 100),
    help="Place in the robot's queue: higher goes first (-100..100, server default 0).",
)
@click.option("--robot", help="The robot that must process the job (required with several).")
@api_options
def submit(
    api: Api,
    file: Path,
    wait: bool,
    idempotency_key: str | None,
    priority: int | None,
    robot: str | None,
) -> None:
    """Submit the orders in FILE (.csv or .json; - reads stdin) as one job."""
    name = "stdin" if str(file) == "-" else file.name
    try:
        data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as exc:
        raise Failure(f"cannot read {file}: {exc.strerror}", 2) from None
    batch = parse_batch(data, None if name == "stdin" else name)
    if batch.errors:
        raise Failure("\n".join(f"{name}: {e}" for e in batch.errors[:20]), 2)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    payload: dict[str, Any] = {"orders": batch.orders}
    if priority is not None:
        payload["priority"] = priority
    if robot is not None:
        payload["robot"] = robot
    status, body = api.call("POST", "/api/jobs", json=payload, headers=headers)
    if status == 422:
        lines = api_errors(batch, _details(body)) or [_message(body)]
        raise Failure("\n".join(f"{name}: {line}" for line in lines[:20]), 2)
    if status == 413:
        raise Failure(f"{name}: larger than the server accepts (its MAX_BODY_BYTES)", 2)
    if status not in (200, 202):
        raise Failure(f"the server refused the job (HTTP {status}): {_message(body)}")
    repeat = " (the same Idempotency-Key made it before)" if status == 200 else ""
    place = _place(body)
    click.echo(f"job {body['id']} {body['status']}: {len(batch.orders)} orders{place}{repeat}")
    if wait:
        _finish(_wait(api, body), exit_on_failure=True)


def _field_lines(details: dict[str, Any], fields: tuple[str, ...]) -> list[str]:
    """Return one line per refused field among ``fields`` (e.g. an unknown robot)."""
    lines = []
    for field in fields:
        why = details.get(field)
        if why:
            lines.append(f"{field}: {'; '.join(map(str, why)) if isinstance(why, list) else why}")
    return lines


def _robot_of(job: dict[str, Any]) -> str:
    """Name the job's robot, unless it is the one robot of a single-robot deployment."""
    robot = job.get("robot")
    return f", robot {robot}" if robot and robot != DEFAULT_ROBOT else ""


def _place(job: dict[str, Any]) -> str:
    """Describe a job's robot, priority and place in its robot's queue, as the server shows them."""
    parts = [_robot_of(job).removeprefix(", ")] if _robot_of(job) else []
    if job.get("priority"):
        parts.append(f"priority {job['priority']}")
    if job.get("queuePosition") is not None:
        parts.append(f"queue position {job['queuePosition']}")
    return f", {', '.join(parts)}" if parts else ""


def _wait(api: Api, job: dict[str, Any]) -> dict[str, Any]:
    """Follow the job's live stream until it is final, with a progress bar of its items."""
    total = job["counts"]["total"]
    shown = 0
    with click.progressbar(length=total, label="items", show_pos=True, width=30) as bar:
        for job in api.follow(job["id"]):  # noqa: B020 (the last one is the answer)
            counts = job["counts"]
            done = counts["success"] + counts["error"] + counts["unknown"]
            if done > shown:
                bar.update(done - shown)
                shown = done
    return job


def _read(api: Api, job_id: str) -> dict[str, Any]:
    status, body = api.call("GET", f"/api/jobs/{job_id}")
    if status == 404:
        raise Failure(f"no job {job_id} at {api.shown_url}")
    if status != 200:
        raise Failure(f"cannot read job {job_id} (HTTP {status}): {_message(body)}")
    return body


def _finish(job: dict[str, Any], exit_on_failure: bool) -> None:
    _show_job(job)
    if exit_on_failure and job["status"] in ("failed", "cancelled"):
        raise SystemExit(1)


def _show_job(job: dict[str, Any]) -> None:
    counts = job["counts"]
    click.echo(f"job {job['id']}: {job['status']}")
    if job.get("error"):
        click.echo(f"  error: {job['error']}")
    click.echo(
        f"  {counts['total']} items: {counts['success']} success, {counts['error']} error, "
        f"{counts['unknown']} unknown, {counts['pending'] + counts['processing']} open"
    )
    if _place(job):
        click.echo(f"  {_place(job).removeprefix(', ')}")
    for name in ("resubmitOf", "createdAt", "dispatchedAt", "deadline", "finishedAt"):
        if job.get(name):
            click.echo(f"  {name:<13}{job[name]}")
    items = job.get("items") or []
    if items:
        width = max([8, *(len(i["orderId"]) for i in items)])
        click.echo(f"\n  {'order':<{width}}  {'status':<10}  tracking number / error")
        for item in items:
            detail = item["trackingNumber"] or item["error"] or ""
            click.echo(f"  {item['orderId']:<{width}}  {item['status']:<10}  {detail}")
    if counts["unknown"]:
        click.echo(
            "\n  unknown: the robot may have entered these orders; check the courier's portal "
            "before submitting them again."
        )


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@click.option("--follow", is_flag=True, help="Print each change until the job is final.")
@api_options
def status(api: Api, job_id: str, as_json: bool, follow: bool) -> None:
    """Show a job: its status, counts, items with tracking numbers or errors."""
    if not follow:
        job = _read(api, job_id)
    else:
        for job in api.follow(job_id):
            if as_json:
                click.echo(json.dumps(job))
            else:
                counts = job["counts"]
                done = counts["success"] + counts["error"] + counts["unknown"]
                click.echo(f"{job['status']}: {done} of {counts['total']} items done")
        if as_json:
            return
    if as_json:
        click.echo(json.dumps(job, indent=2))
    else:
        _show_job(job)


@main.command("list")
@click.option("--status", "status_", type=click.Choice(STATUSES), help="Only jobs in this state.")
@click.option("--robot", help="Only jobs of this robot.")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@api_options
def list_jobs(api: Api, status_: str | None, robot: str | None, limit: int) -> None:
    """List jobs, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if status_:
        params["status"] = status_
    if robot:
        params["robot"] = robot
    status, body = api.call("GET", "/api/jobs", params=params)
    if status == 422:
        raise Failure("\n".join(_field_lines(_details(body), ("robot",)) or [_message(body)]), 2)
    if status != 200:
        raise Failure(f"cannot list jobs (HTTP {status}): {_message(body)}")
    jobs = body.get("jobs", [])
    if not jobs:
        which = [f"status {status_}"] * bool(status_) + [f"robot {robot}"] * bool(robot)
        click.echo("no jobs" + (f" with {' and '.join(which)}" if which else ""))
        return
    width = max([5, *(len(job.get("robot") or "") for job in jobs)])
    click.echo(
        f"{'job':<36}  {'status':<10}  {'robot':<{width}}  {'created':<25}  items  ok  err  unk"
    )
    for job in jobs:
        c = job["counts"]
        click.echo(
            f"{job['id']:<36}  {job['status']:<10}  {job.get('robot') or '':<{width}}  "
            f"{job['createdAt']:<25}  "
            f"{c['total']:>5}  {c['success']:>2}  {c['error']:>3}  {c['unknown']:>3}"
        )
    if body.get("nextCursor"):
        click.echo(f"(more jobs: raise --limit, up to 200; showing the newest {len(jobs)})")


@main.command()
@click.argument("job_id")
@api_options
def cancel(api: Api, job_id: str) -> None:
    """Cancel an open job (the robot is not told; its later reports are recorded as late)."""
    status, body = api.call("POST", f"/api/jobs/{job_id}/cancel")
    if status == 404:
        raise Failure(f"no job {job_id} at {api.shown_url}")
    if status == 409:
        raise Failure(_message(body))
    if status != 200:
        raise Failure(f"cannot cancel job {job_id} (HTTP {status}): {_message(body)}")
    _show_job(body)


@main.command()
@click.argument("job_id")
@click.option(
    "--item",
    "item_ids",
    multiple=True,
    metavar="ITEM_ID",
    help="An item to resubmit (repeat it); default: every item in error.",
)
@click.option(
    "--confirm-unknown",
    is_flag=True,
    help="I checked the courier's portal: the unknown items named were not entered.",
)
@click.option("--idempotency-key", help="Make a retried resubmit return the first new job.")
@click.option("--robot", help="Send the orders to this robot (default: the job's own robot).")
@click.option("--wait", is_flag=True, help="Show progress until the new job is final.")
@api_options
def resubmit(
    api: Api,
    job_id: str,
    item_ids: tuple[str, ...],
    confirm_unknown: bool,
    idempotency_key: str | None,
    robot: str | None,
    wait: bool,
) -> None:
    """Submit again the error items of finished job JOB_ID (or the --item ones) as a new job."""
    body: dict[str, Any] = {}
    if item_ids:
        body["itemIds"] = list(item_ids)
    if confirm_unknown:
        body["confirmUnknown"] = True
    if robot is not None:
        body["robot"] = robot
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    path = f"/api/jobs/{job_id}/resubmit"
    status, body = api.call("POST", path, json=body, headers=headers)
    if status == 404:
        raise Failure(f"no job {job_id} at {api.url}")
    if status == 409:
        raise Failure(_message(body))
    if status == 422:
        details = _details(body).get("itemIds")
        lines = [_message(body), *_field_lines(_details(body), ("robot", "priority"))]
        if isinstance(details, dict):
            lines += [f"item {item}: {'; '.join(map(str, why))}" for item, why in details.items()]
        elif isinstance(details, list):
            lines += [str(why) for why in details]
        raise Failure("\n".join(lines[:21]))
    if status not in (200, 202):
        raise Failure(f"cannot resubmit job {job_id} (HTTP {status}): {_message(body)}")
    repeat = " (the same Idempotency-Key made it before)" if status == 200 else ""
    count = body["counts"]["total"]
    click.echo(
        f"job {body['id']} {body['status']}: {count} orders, resubmitted from {job_id}"
        f"{_robot_of(body)}{repeat}"
    )
    if wait:
        _finish(_wait(api, body), exit_on_failure=True)


# --- dispatch control (CONTRACT §3, §7) ---


def _dispatch_call(api: Api, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """Call a dispatch-control route; return its state or raise the server's refusal."""
    return _dispatch_call_answer(*api.call(method, path, **kwargs))


def _dispatch_call_answer(status: int, body: dict[str, Any]) -> dict[str, Any]:
    if status == 422:
        details = _details(body)
        lines = [
            f"{field}: {'; '.join(map(str, why)) if isinstance(why, list) else why}"
            for field, why in details.items()
        ] or [_message(body)]
        raise Failure("\n".join(lines), 2)
    if status != 200:
        raise Failure(f"the server refused (HTTP {status}): {_message(body)}")
    return body


def _show_dispatch(state: dict[str, Any]) -> None:
    """Print the dispatch state: paused or not and why, capacity, queue length."""
    if state.get("name"):
        click.echo(f"robot {state['name']}")
        _show_hours(state)
    if state.get("paused"):
        if state.get("pausedBy") == "failures":
            how = f"paused by itself after {state.get('failuresInARow')} failed dispatches in a row"
        else:
            how = "paused"
        click.echo(f"dispatching: {how}")
        click.echo(f"  reason: {state.get('pausedReason')}")
        until = state.get("pausedUntil")
        click.echo(
            f"  until:  {until} (then it resumes by itself)"
            if until
            else "  until:  resumed by hand (orchestrator resume)"
        )
    else:
        click.echo("dispatching: running")
    limit = state.get("maxActiveJobs")
    active = state.get("activeJobs")
    click.echo(
        f"active jobs: {active} of {limit}"
        if limit is not None
        else f"active jobs: {active} (no limit)"
    )
    click.echo(f"waiting jobs: {state.get('queuedJobs')}")
    if not state.get("paused") and state.get("failuresInARow"):
        click.echo(f"failed dispatches in a row: {state['failuresInARow']}")


def _show_hours(robot: dict[str, Any]) -> None:
    if robot.get("hours"):
        now = "open now" if robot.get("open") else f"closed; opens at {robot.get('nextOpenAt')}"
        click.echo(f"hours: {robot['hours']} ({robot.get('timezone')}), {now}")
    else:
        click.echo("hours: any time")


def _robot_path(robot: str | None, action: str) -> str:
    """The route of a dispatch action: one robot's (CONTRACT §3 Robots), or every robot's."""
    if robot is None:
        return f"/api/dispatch/{action}"
    return f"/api/robots/{quote(robot, safe='')}/{action}"


def _robot_call(api: Api, robot: str | None, action: str, **kwargs: Any) -> dict[str, Any]:
    status, body = api.call("POST", _robot_path(robot, action), **kwargs)
    if status == 404 and robot is not None:
        raise Failure(f"no robot {robot} at {api.shown_url} (see: orchestrator robots)", 2)
    return _dispatch_call_answer(status, body)


QUEUE_PAGES = 50  # pages of 200: the queue command reads at most 10,000 waiting jobs


def _waiting_jobs(api: Api) -> tuple[list[dict[str, Any]], bool]:
    """Return the pending jobs in dispatch order, and whether there were more than it read."""
    jobs: list[dict[str, Any]] = []
    params: dict[str, Any] = {"status": "pending", "limit": 200}
    for _ in range(QUEUE_PAGES):
        status, body = api.call("GET", "/api/jobs", params=params)
        if status != 200:
            raise Failure(f"cannot list the waiting jobs (HTTP {status}): {_message(body)}")
        jobs.extend(body.get("jobs", []))
        if not body.get("nextCursor"):
            break
        params["cursor"] = body["nextCursor"]
    else:
        return _in_queue_order(jobs), True
    return _in_queue_order(jobs), False


def _in_queue_order(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    far = float("inf")
    return sorted(jobs, key=lambda j: (j.get("queuePosition") or far, j["createdAt"]))


@main.command()
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=20,
    show_default=True,
    help="Show the first LIMIT waiting jobs.",
)
@api_options
def queue(api: Api, limit: int) -> None:
    """Show the dispatch state and the jobs waiting for the robot, in dispatch order."""
    _show_dispatch(_dispatch_call(api, "GET", "/api/dispatch"))
    jobs, more = _waiting_jobs(api)
    if not jobs:
        click.echo("\nno job is waiting")
        return
    click.echo(f"\n{'pos':>4}  {'priority':>8}  {'job':<36}  {'items':>5}  created")
    for job in jobs[:limit]:
        position = job.get("queuePosition")
        click.echo(
            f"{'-' if position is None else position:>4}  {job.get('priority', 0):>8}  "
            f"{job['id']:<36}  {job['counts']['total']:>5}  {job['createdAt']}"
        )
    if len(jobs) > limit or more:
        total = f"{len(jobs)}+" if more else str(len(jobs))
        click.echo(f"(showing the first {min(limit, len(jobs))} of {total} waiting jobs)")


_robot_option = click.option(
    "--robot", help="Only this robot (CONTRACT §11); default: every robot at once."
)


@main.command()
@click.option("--reason", required=True, help="Why, for the people who see the pause (1-500).")
@click.option("--until", help="Resume by itself at this ISO 8601 time, e.g. 2030-01-01T06:00:00Z.")
@_robot_option
@api_options
def pause(api: Api, reason: str, until: str | None, robot: str | None) -> None:
    """Pause dispatching: active jobs go on, new jobs are accepted and wait."""
    body: dict[str, Any] = {"reason": reason}
    if until is not None:
        body["until"] = until
    _show_dispatch(_robot_call(api, robot, "pause", json=body))


@main.command()
@_robot_option
@api_options
def resume(api: Api, robot: str | None) -> None:
    """Resume dispatching: waiting jobs go to the robot again."""
    _show_dispatch(_robot_call(api, robot, "resume"))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@api_options
def robots(api: Api, as_json: bool) -> None:
    """Show each robot: dispatching or paused, its capacity, its queue and its hours."""
    status, body = api.call("GET", "/api/robots")
    if status != 200:
        raise Failure(f"cannot read the robots (HTTP {status}): {_message(body)}")
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    rows = body.get("robots", [])
    width = max([5, *(len(robot["name"]) for robot in rows)])
    click.echo(f"{'robot':<{width}}  {'dispatching':<22}  {'active':>9}  {'waiting':>7}  hours")
    for robot in rows:
        if robot.get("paused"):
            state = "paused (failures)" if robot.get("pausedBy") == "failures" else "paused"
        else:
            state = "running"
        limit = robot.get("maxActiveJobs")
        active = f"{robot['activeJobs']}/{limit if limit is not None else '-'}"
        if robot.get("hours"):
            opens = "open" if robot.get("open") else f"closed, opens {robot.get('nextOpenAt')}"
            hours = f"{robot['hours']} ({robot.get('timezone')}): {opens}"
        else:
            hours = "any time"
        click.echo(
            f"{robot['name']:<{width}}  {state:<22}  {active:>9}  {robot['queuedJobs']:>7}  {hours}"
        )
        if robot.get("paused"):
            until = robot.get("pausedUntil")
            click.echo(
                f"{'':<{width}}  reason: {robot.get('pausedReason')}"
                + (f" (until {until})" if until else "")
            )


@main.command("audit")
@click.option("--actor", help="Only entries by this name (exact).")
@click.option("--action", help="Only this action, e.g. job.cancelled or read (exact).")
@click.option("--target", help="Only entries about this job, robot (* for all) or name (exact).")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
@api_options
def audit_log(
    api: Api, actor: str | None, action: str | None, target: str | None, limit: int
) -> None:
    """Show the audit log, newest first: who changed what, and what was refused (operate)."""
    params: dict[str, Any] = {"limit": limit}
    for name, value in (("actor", actor), ("action", action), ("target", target)):
        if value:
            params[name] = value
    status, body = api.call("GET", "/api/audit", params=params)
    if status == 403:
        raise Failure(f"the audit log needs a token with the operate role: {_message(body)}")
    if status != 200:
        raise Failure(f"cannot read the audit log (HTTP {status}): {_message(body)}")
    entries = body.get("entries", [])
    if not entries:
        click.echo("no audit entries" + (" match" if len(params) > 1 else ""))
        return
    click.echo(f"{'at':<32}  {'actor':<20}  {'action':<24}  {'outcome':<7}  target")
    for entry in entries:
        click.echo(
            f"{entry['at']:<32}  {entry['actor']:<20}  {entry['action']:<24}  "
            f"{entry['outcome']:<7}  {entry['target']}"
        )
    if body.get("nextCursor"):
        click.echo(f"(more entries: raise --limit, up to 200; showing the newest {len(entries)})")


# --- processes on this machine ---


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Migrate the database to the newest revision (the release process)."""
    from .config import load_settings_or_exit
    from .migrate import upgrade

    settings = load_settings_or_exit()
    upgrade(settings.database_url, revision)
    click.echo(f"database migrated to {revision}")


@db.command("prune")
@click.option(
    "--older-than",
    "days",
    type=click.FloatRange(min=0),
    required=True,
    help="Delete jobs final for longer than this many days (a float).",
)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
def db_prune(days: float, dry_run: bool) -> None:
    """Delete finished jobs and everything recorded about them (what retention does)."""
    from .config import load_settings_or_exit
    from .housekeeping import prune_finished

    settings = load_settings_or_exit()
    removed = prune_finished(settings.database_url, days, dry_run=dry_run)
    batches = removed.pop("batches")
    verb = "would delete" if dry_run else "deleted"
    rows = ", ".join(f"{count} {table}" for table, count in removed.items())
    tail = "" if dry_run else f" in {batches} batch{'es' if batches != 1 else ''}"
    click.echo(f"{verb} {rows} (jobs final for more than {days:g} days){tail}")


@db.command("prune-audit")
@click.option(
    "--older-than",
    "days",
    type=click.FloatRange(min=0),
    required=True,
    help="Delete audit entries older than this many days (a float).",
)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
def db_prune_audit(days: float, dry_run: bool) -> None:
    """Delete old audit entries (retention never does: this is the only way they go)."""
    from .audit import prune
    from .config import load_settings_or_exit

    settings = load_settings_or_exit()
    count = prune(settings.database_url, days, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {count} audit entries older than {days:g} days")


_redis_option = click.option(
    "--redis",
    "redis_mode",
    type=click.Choice(["auto", "embedded"]),
    default="auto",
    show_default=True,
    envvar="DEMO_REDIS",
    help="auto: REDIS_URL, else local Redis, else a private redis-server, else embedded; "
    "embedded: always the (slow) embedded Redis [env DEMO_REDIS].",
)


@main.command()
@_redis_option
def demo(redis_mode: str) -> NoReturn:
    """Start the whole system, push a 25-order batch through the simulator, stop (make demo)."""
    from .local.demo import run_demo

    sys.exit(run_demo(redis_mode))


@main.command()
@_redis_option
def run(redis_mode: str) -> NoReturn:
    """Run the whole system with Flower until Ctrl-C or SIGTERM (make run)."""
    from .local.demo import run_forever

    sys.exit(run_forever(redis_mode))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def simulator(ctx: click.Context) -> None:
    """Run the robot simulator (options as ``robot-simulator --help``)."""
    from .local.robot_simulator import main as simulator_main

    sys.exit(simulator_main(ctx.args))


if __name__ == "__main__":
    main()
