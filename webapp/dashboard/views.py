"""The dashboard's pages: job list, job page with its timeline, submit form, cancel, login."""

from __future__ import annotations

import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from itsdangerous import BadSignature, URLSafeSerializer
from marshmallow import ValidationError
from sqlalchemy import func, select
from werkzeug.exceptions import HTTPException

from orchestrator import lifecycle, queries
from orchestrator.batchfile import Batch, api_errors, parse_batch
from orchestrator.models import OPEN_JOB_STATUSES, Event, Job, JobStatus, utcnow
from orchestrator.submission import IdempotencyConflict, IdempotencyInProgress, submit_job
from orchestrator.text import has_unsafe_characters

from ..schemas import SubmitSchema
from ..state import orchestrator
from . import login
from .timeline import job_timeline

log = logging.getLogger(__name__)

bp = Blueprint(
    "dashboard",
    __name__,
    url_prefix="/dashboard",
    template_folder="templates",
    static_folder="static",
)

PAGE_SIZE = 50
JOB_STATUSES = [status.value for status in JobStatus]
_SUBMISSION_ID = re.compile(r"^[0-9a-f]{32}$")
_OPEN_ENDPOINTS = ("dashboard.login", "dashboard.static")
_submit_schema = SubmitSchema()


@bp.before_request
def _guard() -> ResponseReturnValue | None:
    """CSRF on every form post; a signed-in person for everything but login and static files."""
    if request.method == "POST":
        login.check_csrf()
    if request.endpoint in _OPEN_ENDPOINTS or login.signed_in_user():
        return None
    if request.endpoint and request.endpoint.startswith("dashboard.live_"):
        abort(401)  # the page's script reloads, which leads to the login page
    return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))


@bp.app_template_global()
def csrf_token() -> str:
    return login.csrf_token()


@bp.context_processor
def _globals() -> dict[str, Any]:
    return {"user": login.signed_in_user(), "statuses": JOB_STATUSES}


@bp.app_template_filter("when")
def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


@bp.app_template_filter("clock")
def _clock(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3] if value else "—"


@bp.errorhandler(HTTPException)
def _http_error(err: HTTPException) -> ResponseReturnValue:
    status = err.code or 500
    message = err.description or err.name
    if status == 413:
        message = "the upload is larger than the server accepts (MAX_BODY_BYTES)"
    return render_template("dashboard/error.html", status=status, message=message), status


# The dashboard's outer edge: any other exception is logged and shown as an HTML page.
@bp.errorhandler(Exception)
def _unexpected(err: Exception) -> ResponseReturnValue:
    log.exception("dashboard error")
    message = "something went wrong on the server; see its log"
    return render_template("dashboard/error.html", status=500, message=message), 500


# --- sign in and out ---


def _safe_next(target: str | None) -> str:
    """Return ``target`` if it is a page of the dashboard, else the job list."""
    parts = urlsplit(target or "")
    if (
        target
        and not has_unsafe_characters(target)  # a CR or LF would split the Location header
        and "\\" not in target
        and not parts.scheme
        and not parts.netloc
        and parts.path.startswith("/dashboard")
    ):
        return target
    return url_for("dashboard.index")


@bp.route("/login", methods=["GET", "POST"], endpoint="login")
def login_view() -> ResponseReturnValue:
    error = None
    status = 200
    if request.method == "POST":
        user = request.form.get("user", "").strip()
        wait = login.seconds_to_wait(user)
        if wait:
            page, _ = _login_page(
                f"Too many failed sign-ins from this address; try again in {wait} s.", 429
            )
            return page, 429, {"Retry-After": str(wait)}
        found = login.check_login(user, request.form.get("password", ""))
        if found is not None:
            try:
                login.sign_in(*found)
            except login.SessionStoreUnavailable:
                return _login_page("Signing in needs Redis, which does not answer; retry.", 503)
            login.forget_failures(user)
            return redirect(_safe_next(request.args.get("next")), 303)
        login.count_failure(user)
        error, status = "Wrong token, or wrong user and password.", 401
    return _login_page(error, status)


def _login_page(error: str | None, status: int) -> tuple[str, int]:
    password_login = bool(current_app.config.get("DASHBOARD_PASSWORD"))
    page = render_template("dashboard/login.html", error=error, password_login=password_login)
    return page, status


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    login.sign_out()
    flash("Signed out.")
    return redirect(url_for("dashboard.login"), 303)


# --- the job list ---


def _cursor_serializer() -> URLSafeSerializer:
    return URLSafeSerializer(orchestrator().settings.robot_callback_secret, "dashboard-cursor")


def _list_context() -> dict[str, Any]:
    status = request.args.get("status") or None
    if status not in (None, *JOB_STATUSES):
        abort(404, f"there is no job status {status!r}")
    after = None
    before = request.args.get("before")
    if before:
        try:
            created, job_id = _cursor_serializer().loads(before)
            after = (datetime.fromisoformat(created), str(job_id))
        except (BadSignature, ValueError, TypeError):
            abort(404, "that page of the job list does not exist")
    with orchestrator().session() as session:
        rows = session.execute(select(Job.status, func.count()).group_by(Job.status))
        totals = {status: count for status, count in rows}
        jobs, more = queries.page_of_jobs(session, status, PAGE_SIZE, after)
        counts = queries.item_counts(session, [job.id for job in jobs])
    older = None
    if more and jobs:
        older = _cursor_serializer().dumps([jobs[-1].created_at.isoformat(), jobs[-1].id])
    return {
        "jobs": jobs,
        "counts": counts,
        "totals": totals,
        "all_jobs": sum(totals.values()),
        "status": status,
        "older": older,
        "before": before,
        "now": utcnow(),
    }


@bp.get("/")
def index() -> ResponseReturnValue:
    return render_template("dashboard/jobs.html", **_list_context())


@bp.get("/live/jobs")
def live_jobs() -> ResponseReturnValue:
    return render_template("dashboard/_jobs_live.html", **_list_context())


# --- one job ---


def _job_context(job_id: str) -> dict[str, Any]:
    with orchestrator().session() as session:
        try:
            job = lifecycle.get_job(session, job_id)
        except lifecycle.JobNotFound:
            abort(404, f"there is no job {job_id}")
        items = queries.job_items(session, job_id)
        counts = queries.item_counts(session, [job_id])[job_id]
        events = list(
            session.scalars(
                select(Event).where(Event.job_id == job_id).order_by(Event.received_at, Event.id)
            )
        )
    now = utcnow()
    order_ids = {item.id: item.order_id for item in items}
    return {
        "job": job,
        "items": items,
        "counts": counts,
        "timeline": job_timeline(job, events, order_ids, now),
        "open": job.status in OPEN_JOB_STATUSES,
        "now": now,
    }


@bp.get("/jobs/<job_id>")
def job_page(job_id: str) -> ResponseReturnValue:
    return render_template("dashboard/job.html", **_job_context(job_id))


@bp.get("/live/jobs/<job_id>")
def live_job(job_id: str) -> ResponseReturnValue:
    return render_template("dashboard/_job_live.html", **_job_context(job_id))


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str) -> ResponseReturnValue:
    try:
        orchestrator().cancel_job(job_id)
    except lifecycle.JobNotFound:
        abort(404, f"there is no job {job_id}")
    except lifecycle.TransitionRefused as exc:
        flash(f"The job is already {exc.status}; nothing was cancelled.", "error")
    else:
        flash("Job cancelled. The robot is not told: check the items marked unknown.")
    return redirect(url_for("dashboard.job_page", job_id=job_id), 303)


# --- submit a batch ---


@bp.route("/submit", methods=["GET", "POST"])
def submit() -> ResponseReturnValue:
    submission = request.form.get("submission", "")
    if not _SUBMISSION_ID.match(submission):
        submission = uuid.uuid4().hex
    if request.method == "GET":
        return _submit_form(submission)
    upload = request.files.get("file")
    data: bytes | str = upload.read() if upload is not None and upload.filename else b""
    text = request.form.get("text", "")
    if data and text.strip():
        return _submit_form(submission, text, ["Upload a file or paste text, not both."])
    if not data and not text.strip():
        return _submit_form(submission, text, ["Choose a file or paste the orders."])
    filename = upload.filename if data and upload is not None else None
    batch = parse_batch(data or text, filename)
    problems = [str(error) for error in batch.errors]
    limit = orchestrator().settings.max_batch_size
    if not problems and len(batch.orders) > limit:
        problems = [f"a job takes at most {limit} orders; this batch has {len(batch.orders)}"]
    if not problems:
        problems, orders = _validate(batch)
    if problems:
        return _submit_form(submission, text, problems)
    return _create(submission, text, orders)


def _validate(batch: Batch) -> tuple[list[str], list[dict[str, Any]]]:
    """Run the job API's own checks; name each problem by its line."""
    try:
        data = _submit_schema.load({"orders": batch.orders})
    except ValidationError as err:
        return api_errors(batch, err.messages_dict), []
    return [], data["orders"]


def _create(submission: str, text: str, orders: list[dict[str, Any]]) -> ResponseReturnValue:
    state = orchestrator()
    try:
        result = submit_job(
            state.settings,
            state.celery,
            orders,
            token=f"dashboard:{login.signed_in_user()}",
            idempotency_key=f"dashboard-form:{submission}",
        )
    except IdempotencyConflict:
        problems = ["This form was already used for other orders; it is reset: submit again."]
        return _submit_form(uuid.uuid4().hex, text, problems)
    except IdempotencyInProgress:
        return _submit_form(submission, text, ["This batch is still being created; wait."])
    if result.created:
        flash(f"Job submitted: {_orders(len(orders))}.")
    else:
        flash("This form was submitted before: here is the job it created.")
    return redirect(url_for("dashboard.job_page", job_id=result.job.id), 303)


def _orders(count: int) -> str:
    return f"{count} order" if count == 1 else f"{count} orders"


def _submit_form(submission: str, text: str = "", problems: list[str] | None = None) -> Any:
    page = render_template(
        "dashboard/submit.html",
        submission=submission,
        text=text,
        problems=problems or [],
        limit=orchestrator().settings.max_batch_size,
    )
    return page, 422 if problems else 200
