"""The dashboard's pages: job list, job page with its timeline, submit form, cancel, resubmit,
notifications, login, the robot's capacity and queue with the pause control, and the pause
banner on every page."""

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
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from orchestrator import audit, dispatch_control, lifecycle, notifications, queries
from orchestrator.batchfile import Batch, api_errors, parse_batch
from orchestrator.config import role_includes
from orchestrator.models import OPEN_JOB_STATUSES, Event, Job, JobStatus, utcnow
from orchestrator.submission import (
    IdempotencyConflict,
    IdempotencyInProgress,
    IdempotencyJobDeleted,
    JobNotFinal,
    ResubmitRefused,
    UnknownRobot,
    resubmit_job,
    submit_job,
)
from orchestrator.text import has_unsafe_characters

from .. import access, bind_url_job, live
from ..schemas import PauseSchema, SubmitSchema
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
_submit_schema = SubmitSchema()
_pause_schema = PauseSchema()
QUEUE_SHOWN = 100


@bp.before_request
def _guard() -> ResponseReturnValue | None:
    """CSRF on every form post; a signed-in person for everything but login and static files,
    whose role allows the page or form (webapp.access: 403 and a ``denied`` entry if not)."""
    if request.method == "POST":
        login.check_csrf()
    if request.endpoint in access.PUBLIC_ENDPOINTS:
        return None
    actor = login.signed_in_actor()
    if actor is not None:
        if not access.check(actor):
            abort(403, f"{actor.name} ({actor.role}) may not do this")
        bind_url_job()  # signed in: the job its URL names may mark its log lines
        return None
    if request.endpoint and request.endpoint.startswith("dashboard.live_"):
        abort(401)  # the page's script reloads, which leads to the login page
    return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))


def _actor() -> audit.Actor:
    """Return the signed-in person, as the guard let them in."""
    actor = login.signed_in_actor()
    assert actor is not None  # the guard let no stranger through
    return actor


@bp.app_template_global()
def may(role: str) -> bool:
    """Tell a page whether the signed-in person's role includes ``role`` (its controls)."""
    actor = login.signed_in_actor()
    return actor is not None and role_includes(actor.role, role)


@bp.app_template_global()
def csrf_token() -> str:
    return login.csrf_token()


@bp.context_processor
def _globals() -> dict[str, Any]:
    robots = orchestrator().settings.robot_names
    return {
        "user": login.signed_in_user(),
        "statuses": JOB_STATUSES,
        "banner_state": _banner_state,
        "banner_robots": _banner_robots,
        "robot_names": robots,
        "several": len(robots) > 1,
    }


def _banner_state() -> dispatch_control.DispatchState | None:
    """Return the dispatch state for the pause banner (read only by pages that show it).

    None, and no banner, for a stranger or when the database cannot be read.
    """
    if not login.signed_in_user():
        return None
    try:
        return orchestrator().dispatch_state()
    except SQLAlchemyError:  # the page itself says what failed; the banner is left out
        log.warning("dashboard: the dispatch state could not be read", exc_info=True)
        return None


def _banner_robots() -> list[dispatch_control.RobotState]:
    """Return the paused robots, for the banner when some robots but not all are paused."""
    if not login.signed_in_user():
        return []
    try:
        return [robot for robot in orchestrator().robot_states() if robot.paused]
    except SQLAlchemyError:
        log.warning("dashboard: the robots' states could not be read", exc_info=True)
        return []


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
            _record_session("session.started", _actor(), found[0])
            return redirect(_safe_next(request.args.get("next")), 303)
        login.count_failure(user)
        stranger = audit.Actor("anonymous", "none", request.remote_addr)
        _record_session("session.refused", stranger, _name_tried(user), audit.DENIED)
        error, status = "Wrong token, or wrong user and password.", 401
    return _login_page(error, status)


def _login_page(error: str | None, status: int) -> tuple[str, int]:
    password_login = bool(current_app.config.get("DASHBOARD_PASSWORD"))
    page = render_template("dashboard/login.html", error=error, password_login=password_login)
    return page, status


def _name_tried(user: str) -> str:
    """The name a sign-in tried, for its entry; never a secret typed into the name field."""
    name = user[:64]
    secrets_ = orchestrator().settings.secrets()
    if any(secret in name for secret in secrets_):
        return "(a secret, not recorded)"
    return name


def _record_session(action: str, actor: audit.Actor, target: str, outcome: str = "ok") -> None:
    """Write a sign-in, sign-out or refused sign-in entry (CONTRACT §12)."""
    with orchestrator().session() as session:
        audit.record(session, actor, action, target, outcome=outcome)
        session.commit()


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    actor = _actor()
    login.sign_out()
    _record_session("session.ended", actor, actor.name)
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
    settings = orchestrator().settings
    robot = request.args.get("robot") or None
    if robot is not None and settings.robot(robot) is None:
        abort(404, f"there is no robot {robot!r}")
    with orchestrator().session() as session:
        by_status = select(Job.status, func.count()).group_by(Job.status)
        if robot is not None:
            by_status = by_status.where(Job.robot == robot)
        totals = {status: count for status, count in session.execute(by_status)}
        jobs, more = queries.page_of_jobs(session, status, PAGE_SIZE, after, robot=robot)
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
        "robot": robot,
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


def _newest_jobs() -> list[dict[str, Any]]:
    """The newest page of jobs in brief: what the list's event stream compares."""
    with orchestrator().session() as session:
        jobs, _ = queries.page_of_jobs(session, None, PAGE_SIZE, None)
        counts = queries.item_counts(session, [job.id for job in jobs])
        return [{"id": job.id, "status": job.status, "counts": counts[job.id]} for job in jobs]


@bp.get("/live/events")
def live_jobs_events() -> ResponseReturnValue:
    """Server-sent events ``jobs`` each time a job changes: the list page then fetches itself.

    Woken by every job's announcement; it sends only when the newest page of jobs differs.
    Jobs further down (older pages) are seen at their next refresh by hand.
    """
    response = live.stream_response(
        current_app._get_current_object(),  # type: ignore[attr-defined]
        orchestrator(),
        live.ANY_JOB,
        request.environ,
        None,
        _newest_jobs,
        name="jobs",
        final=live.never_final,
    )
    assert response is not None
    return response


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
        resubmitted_as = list(
            session.scalars(
                select(Job.id).where(Job.resubmit_of == job_id).order_by(Job.created_at, Job.id)
            )
        )

        notes, _ = notifications.page_of_notifications(session, None, 50, None, job_id=job_id)
        entries, _ = audit.page_of_entries(session, 50, target=job_id)
    now = utcnow()
    order_ids = {item.id: item.order_id for item in items}
    return {
        "notifications": notes,
        "job": job,
        "items": items,
        "counts": counts,
        "timeline": job_timeline(job, events, order_ids, now, reversed(entries)),
        "open": job.status in OPEN_JOB_STATUSES,
        "now": now,
        "resubmitted_as": resubmitted_as,
        # Each resubmit form carries its own idempotency key: a double click makes one job.
        "resubmit_keys": {"errors": uuid.uuid4().hex, "selected": uuid.uuid4().hex},
    }


@bp.get("/jobs/<job_id>")
def job_page(job_id: str) -> ResponseReturnValue:
    return render_template("dashboard/job.html", **_job_context(job_id))


@bp.get("/live/jobs/<job_id>")
def live_job(job_id: str) -> ResponseReturnValue:
    return render_template("dashboard/_job_live.html", **_job_context(job_id))


@bp.get("/live/jobs/<job_id>/events")
def live_job_events(job_id: str) -> ResponseReturnValue:
    """The job's live stream (CONTRACT §13) for a signed-in person: the page then fetches itself."""
    response = live.job_stream(orchestrator(), job_id)
    if response is None:
        abort(404, f"there is no job {job_id}")
    return response


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str) -> ResponseReturnValue:
    try:
        orchestrator().cancel_job(job_id, _actor())
    except lifecycle.JobNotFound:
        abort(404, f"there is no job {job_id}")
    except lifecycle.TransitionRefused as exc:
        flash(f"The job is already {exc.status}; nothing was cancelled.", "error")
    else:
        flash("Job cancelled. The robot is not told: check the items marked unknown.")
    return redirect(url_for("dashboard.job_page", job_id=job_id), 303)


@bp.post("/jobs/<job_id>/resubmit")
def resubmit(job_id: str) -> ResponseReturnValue:
    """A new job from the error items, or from the items ticked (unknown ones once confirmed)."""
    state = orchestrator()
    submission = request.form.get("submission", "")
    if not _SUBMISSION_ID.match(submission):
        submission = uuid.uuid4().hex
    selected = request.form.get("choice") == "selected"
    item_ids = request.form.getlist("item") if selected else None
    back = redirect(url_for("dashboard.job_page", job_id=job_id), 303)
    try:
        result = resubmit_job(
            state.settings,
            state.celery,
            job_id,
            item_ids,
            request.form.get("confirm_unknown") == "yes",
            token=f"dashboard:{login.signed_in_user()}",
            idempotency_key=f"dashboard-resubmit:{submission}",
            robot=request.form.get("robot") or None,
            actor=_actor(),
        )
    except lifecycle.JobNotFound:
        abort(404, f"there is no job {job_id}")
    except JobNotFinal as exc:
        flash(f"The job is still {exc.status}: only a finished job can be resubmitted.", "error")
        return back
    except ResubmitRefused as exc:
        flash(_refusal(exc, selected), "error")
        return back
    except IdempotencyConflict:
        flash("This form was already used for other items; choose again.", "error")
        return back
    except IdempotencyInProgress:
        flash("This resubmit is still being created; wait a moment.", "error")
        return back
    except UnknownRobot as exc:
        flash(f"Nothing was resubmitted. {_choose_one(exc)}", "error")
        return back
    except IdempotencyJobDeleted:
        flash("This form's job was deleted since (retention); choose again.", "error")
        return back
    if result.created:
        count = len(result.job.items)
        to = f" for robot {result.job.robot}" if len(state.settings.robots) > 1 else ""
        flash(f"Resubmitted {_orders(count)} of job {job_id[:8]} as this new job{to}.")
    else:
        flash("This form was submitted before: here is the job it created.")
    return redirect(url_for("dashboard.job_page", job_id=result.job.id), 303)


def _refusal(exc: ResubmitRefused, selected: bool) -> str:
    if exc.code == "nothing_to_resubmit":
        return "Tick at least one item to resubmit." if selected else f"{exc.message}."
    reasons = exc.details.get("itemIds")
    if isinstance(reasons, dict):
        return f"Nothing was resubmitted: {'; '.join(w for why in reasons.values() for w in why)}."
    return f"Nothing was resubmitted: {exc.message}."


# --- notifications (CONTRACT §8) ---


@bp.get("/notifications")
def notifications_page() -> ResponseReturnValue:
    with orchestrator().session() as session:
        totals = notifications.status_counts(session)
        pending, _ = notifications.page_of_notifications(session, "pending", PAGE_SIZE, None)
        failed, _ = notifications.page_of_notifications(session, "failed", PAGE_SIZE, None)
        enabled = notifications.enabled(session)
    return render_template(
        "dashboard/notifications.html",
        totals=totals,
        pending=pending,
        failed=failed,
        enabled=enabled,
        now=utcnow(),
    )


@bp.post("/notifications/<notification_id>/redeliver")
def redeliver(notification_id: str) -> ResponseReturnValue:
    with orchestrator().session() as session:
        try:
            notifications.redeliver(session, notification_id, actor=_actor())
        except notifications.NotificationNotFound:
            abort(404, f"there is no notification {notification_id}")
        if not notifications.enabled(session):
            flash("Notifications are off (NOTIFY_URL is not set): nothing was sent.", "error")
        else:
            session.commit()  # the delivery is enqueued after this commit
            flash(f"Notification {notification_id} will be sent again, with the same id.")
    back = request.form.get("back", "")
    if not _SAFE_BACK.match(back):
        back = url_for("dashboard.notifications_page")
    return redirect(back, 303)


_SAFE_BACK = re.compile(r"^/dashboard/(notifications|jobs/[0-9a-f-]{36})$")


# --- the audit log (CONTRACT §12), for operate ---

AUDIT_ACTIONS = [
    "job.submitted",
    "job.resubmitted",
    "job.cancelled",
    "dispatch.paused",
    "dispatch.resumed",
    "notification.redelivered",
    "session.started",
    "session.ended",
    "session.refused",
    "read",
]


@bp.get("/activity")
def activity() -> ResponseReturnValue:
    filters = {
        name: request.args.get(name, "").strip()[:255] or None
        for name in ("actor", "action", "target")
    }
    before = None
    if request.args.get("before"):
        try:
            before = int(_cursor_serializer().loads(request.args["before"]))
        except (BadSignature, ValueError, TypeError):
            abort(404, "that page of the activity does not exist")
    with orchestrator().session() as session:
        entries, more = audit.page_of_entries(session, PAGE_SIZE, before, **filters)
    older = _cursor_serializer().dumps(entries[-1].id) if more and entries else None
    return render_template(
        "dashboard/activity.html",
        entries=entries,
        filters=filters,
        older=older,
        actions=AUDIT_ACTIONS,
    )


# --- the robots: state, hours, capacity, queue, pause and resume (CONTRACT §7, §11) ---


@bp.app_template_global()
def robot_suffix(name: str, several: bool) -> str:
    """The suffix of a robot's element ids: none with one robot, ``-<name>`` with several."""
    return f"-{name}" if several else ""


def _robots_context() -> dict[str, Any]:
    state = orchestrator()
    now = utcnow()
    names = state.settings.robot_names
    several = len(names) > 1
    shown = []
    with state.session() as session:
        for name, robot in zip(
            names, dispatch_control.robot_states(session, state.settings), strict=True
        ):
            shown.append(
                {
                    "name": name,
                    "state": robot,
                    "waiting": dispatch_control.queue(session, robot=name, limit=QUEUE_SHOWN),
                    "hours": robot.hours,
                    "timezone": robot.timezone,
                    "open": robot.open,
                    "next_open": robot.next_open_at,
                    # One robot keeps the page's own routes; several: each robot's.
                    "pause_url": url_for("dashboard.pause_robot", name=name)
                    if several
                    else url_for("dashboard.pause"),
                    "resume_url": url_for("dashboard.resume_robot", name=name)
                    if several
                    else url_for("dashboard.resume"),
                }
            )
    return {"robots": shown, "several": several, "now": now}


def _dispatch_page(
    problems: list[str] | None = None,
    form: dict[str, str] | None = None,
    form_robot: str | None = None,
) -> Any:
    context = _robots_context()
    if not context["several"]:  # one robot: its form is the page's only one
        form_robot = context["robots"][0]["name"]
    page = render_template(
        "dashboard/dispatch.html",
        problems=problems or [],
        form=form or {},
        form_robot=form_robot,
        **context,
    )
    return page, 422 if problems else 200


@bp.get("/dispatch")
def dispatch_page() -> ResponseReturnValue:
    return _dispatch_page()


@bp.get("/live/dispatch")
def live_dispatch() -> ResponseReturnValue:
    return render_template("dashboard/_dispatch_live.html", **_robots_context())


@bp.get("/live/banner")
def live_banner() -> ResponseReturnValue:
    return render_template("dashboard/_banner.html")


def _as_utc_text(value: str) -> str:
    """Read a datetime-local value (no offset) as UTC; keep one that has an offset."""
    if value and re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?", value):
        return f"{value}+00:00"
    return value


def _known_robot(name: str) -> str:
    if orchestrator().settings.robot(name) is None:
        abort(404, f"there is no robot {name}")
    return name


def _pause(robot: str | None) -> ResponseReturnValue:
    """Pause one robot, or every robot (``None``), from the page's form."""
    form = {
        "reason": request.form.get("reason", "").strip(),
        "until": request.form.get("until", ""),
    }
    body: dict[str, Any] = {"reason": form["reason"]}
    if form["until"].strip():
        body["until"] = _as_utc_text(form["until"].strip())
    try:
        data = _pause_schema.load(body)
    except ValidationError as err:
        names = {"reason": "Reason", "until": "End time"}
        problems = [
            f"{names.get(field, field)}: {'; '.join(map(str, why))}"
            for field, why in err.messages_dict.items()
        ]
        return _dispatch_page(problems, form, robot or "all")
    orchestrator().pause_dispatch(data["reason"], data.get("until"), _actor(), robot=robot)
    until = data.get("until")
    ends = f" until {_when(until)}" if until else " until someone resumes it"
    which = (
        f"Dispatching to {robot}"
        if robot and len(orchestrator().settings.robots) > 1
        else ("Dispatching")
    )
    flash(f"{which} paused{ends}. Active jobs go on; new jobs wait.")
    return redirect(url_for("dashboard.dispatch_page"), 303)


def _resume(robot: str | None) -> ResponseReturnValue:
    orchestrator().resume_dispatch(_actor(), robot=robot)
    several = len(orchestrator().settings.robots) > 1
    which = f"Dispatching to {robot}" if robot and several else "Dispatching"
    flash(f"{which} resumed: waiting jobs go to the robot as slots free up.")
    return redirect(url_for("dashboard.dispatch_page"), 303)


@bp.post("/dispatch/pause")
def pause() -> ResponseReturnValue:
    return _pause(None)


@bp.post("/dispatch/resume")
def resume() -> ResponseReturnValue:
    return _resume(None)


@bp.post("/robots/<name>/pause")
def pause_robot(name: str) -> ResponseReturnValue:
    return _pause(_known_robot(name))


@bp.post("/robots/<name>/resume")
def resume_robot(name: str) -> ResponseReturnValue:
    return _resume(_known_robot(name))


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
    robot = request.form.get("robot") or None
    if data and text.strip():
        return _submit_form(submission, text, ["Upload a file or paste text, not both."], robot)
    if not data and not text.strip():
        return _submit_form(submission, text, ["Choose a file or paste the orders."], robot)
    filename = upload.filename if data and upload is not None else None
    batch = parse_batch(data or text, filename)
    problems = [str(error) for error in batch.errors]
    limit = orchestrator().settings.max_batch_size
    if not problems and len(batch.orders) > limit:
        problems = [f"a job takes at most {limit} orders; this batch has {len(batch.orders)}"]
    if not problems:
        problems, orders = _validate(batch)
    if problems:
        return _submit_form(submission, text, problems, robot)
    return _create(submission, text, orders, robot)


def _validate(batch: Batch) -> tuple[list[str], list[dict[str, Any]]]:
    """Run the job API's own checks; name each problem by its line."""
    try:
        data = _submit_schema.load({"orders": batch.orders})
    except ValidationError as err:
        return api_errors(batch, err.messages_dict), []
    return [], data["orders"]


def _create(
    submission: str, text: str, orders: list[dict[str, Any]], robot: str | None
) -> ResponseReturnValue:
    state = orchestrator()
    try:
        result = submit_job(
            state.settings,
            state.celery,
            orders,
            token=f"dashboard:{login.signed_in_user()}",
            idempotency_key=f"dashboard-form:{submission}",
            robot=robot,
            actor=_actor(),
        )
    except IdempotencyConflict:
        problems = ["This form was already used for other orders; it is reset: submit again."]
        return _submit_form(uuid.uuid4().hex, text, problems, robot)
    except IdempotencyInProgress:
        return _submit_form(submission, text, ["This batch is still being created; wait."], robot)
    except UnknownRobot as exc:
        return _submit_form(submission, text, [_choose_one(exc)], robot)
    except IdempotencyJobDeleted:
        problems = ["This form's job was deleted since (retention); it is reset: submit again."]
        return _submit_form(uuid.uuid4().hex, text, problems, robot)
    if result.created:
        to = f" for robot {result.job.robot}" if len(state.settings.robots) > 1 else ""
        flash(f"Job submitted{to}: {_orders(len(orders))}.")
    else:
        flash("This form was submitted before: here is the job it created.")
    return redirect(url_for("dashboard.job_page", job_id=result.job.id), 303)


def _choose_one(exc: UnknownRobot) -> str:
    return f"Robot: choose one of {', '.join(exc.robots)}."


def _orders(count: int) -> str:
    return f"{count} order" if count == 1 else f"{count} orders"


def _submit_form(
    submission: str,
    text: str = "",
    problems: list[str] | None = None,
    robot: str | None = None,
) -> Any:
    page = render_template(
        "dashboard/submit.html",
        submission=submission,
        text=text,
        chosen_robot=robot,
        problems=problems or [],
        limit=orchestrator().settings.max_batch_size,
    )
    return page, 422 if problems else 200
