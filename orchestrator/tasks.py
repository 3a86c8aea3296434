"""The job chain: mark → dispatch → settle → wait → finalize, and its failure handler.

Tasks are thin: ids and plain values in, one domain call, commit. Nothing is retried: a
retried dispatch would enter the same orders twice. Failures come in two kinds:

* permanent — a refused or ambiguous dispatch, a bug: the task raises, the chain stops and
  ``fail_job`` (its ``link_error``) marks the job failed;
* infrastructure — the database or Redis unreachable: the task stops without failing the
  job, and housekeeping settles it from the database once they are back.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from typing import Any

from celery import Celery, Task, current_app, shared_task
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from . import housekeeping, lifecycle, metrics, notifications, robot_client, tracing
from .config import Settings
from .db import session_scope
from .logs import job_context
from .models import utcnow
from .rendezvous import Rendezvous, get_redis

log = logging.getLogger(__name__)

INFRASTRUCTURE_ERRORS = (OperationalError, RedisError, BrokerError, ConnectionError)

# The tasks whose first argument is a job id: their log lines carry it (celery_app's signals).
JOB_TASKS = frozenset(
    {
        "orchestrator.mark_processing",
        "orchestrator.dispatch",
        "orchestrator.wait_for_report",
        "orchestrator.finalize",
    }
)


def _settings() -> Settings:
    return current_app.conf["orchestrator_settings"]


def _rendezvous(settings: Settings) -> Rendezvous:
    return Rendezvous(get_redis(settings.redis_url, settings.redis_sentinel_master))


def _stop_chain(task: Task) -> None:
    """End this job's chain after the current task returns.

    Celery continues a chain from ``request.chain`` once a task returns; emptying it stops
    the chain without an exception. (``raise Ignore()`` would do the same, but Celery then
    builds a billiard ``ExceptionInfo`` that copies every frame's code positions: ~2.5 ms and
    hundreds of KB of cyclic garbage per stop, the largest cost of a waiting job; bench/README.)
    """
    task.request.chain = None


def whole_seconds(countdown: float) -> int:
    """Round a countdown up to whole seconds (0 stays 0: no delay).

    RabbitMQ's native delayed delivery routes a delayed message by ``int(countdown)``: it
    would arrive up to a second early (the worker then holds it for the rest) and a countdown
    under one second fails to publish at all (``ValueError``). Rounding up once here keeps
    every broker on one path: never early, never below a second; the deadline's poll lands
    at most a second later, and the wake-up (pub/sub) does not depend on it.
    """
    return math.ceil(countdown) if countdown > 0 else 0


def job_chain(app: Celery, job_id: str, settings: Settings) -> Any:
    """Build the job's chain with its failure handler attached to every step."""
    sig = app.signature
    steps = (
        sig("orchestrator.mark_processing", args=(job_id,), immutable=True)
        | sig("orchestrator.dispatch", args=(job_id,), immutable=True)
        | sig(
            "orchestrator.wait_for_report",
            args=(job_id,),
            immutable=True,
            countdown=whole_seconds(settings.robot_settle_seconds),
        )
        | sig("orchestrator.finalize", args=(job_id,), immutable=True)
    )
    steps.link_error(sig("orchestrator.fail_job"))
    return steps


def start_job(app: Celery, job_id: str, settings: Settings) -> None:
    """Enqueue a committed job's chain."""
    job_chain(app, job_id, settings).apply_async()


def enqueue_delivery(app: Celery, job_id: str | None) -> None:
    """Enqueue the delivery of a stream's notifications (after the commit that wrote them)."""
    app.send_task("orchestrator.deliver_notifications", args=(job_id,))


def hand_off(
    app: Celery,
    settings: Settings,
    *,
    slot_freed: bool = True,
    robots: Iterable[str] | None = None,
) -> list[str]:
    """Start the parked jobs that the free slots let go now; return their ids (CONTRACT §7).

    Called after the commit of every transition that can free a slot or move the queue
    (a job finalized or cancelled, dispatching resumed or a robot opening:
    ``slot_freed=False``) and by every housekeeping run, the safety net for a process that
    died between such a commit and this call. Per robot (``robots``: the ones whose queue
    moved; None: every configured robot), each in its own transaction under its own lock.
    A chain sent twice is harmless: the dispatch claim is a compare-and-set. Without a
    limit a freed slot starts nothing (only a pause or closed hours park jobs, and the
    resume or the opening hands them off), so a finalize then costs no transaction.
    """
    names = settings.robot_names if robots is None else sorted(robots)
    job_ids: list[str] = []
    for name in names:
        robot = settings.robot(name)
        if robot is None or (slot_freed and robot.max_active_jobs is None):
            continue
        try:
            with session_scope(settings.database_url) as session:
                job_ids += lifecycle.next_waiting(session, settings, name)
        except SQLAlchemyError as exc:
            log.warning("hand-off skipped (%s); housekeeping hands off", type(exc).__name__)
    for job_id in job_ids:
        try:
            with tracing.job_span("hand-off", job_id, database_url=settings.database_url):
                start_job(app, job_id, settings)
        except Exception as exc:  # the broker: housekeeping re-kicks the job (claim_stalled)
            log.warning("job %s: its chain could not be enqueued (%s)", job_id, exc)
    if job_ids:
        log.info("hand-off: started %d waiting jobs", len(job_ids))
    return job_ids


def arm_opening(app: Celery, settings: Settings, robot: str) -> float | None:
    """Make sure a hand-off runs when a closed robot opens; return its time (Unix s) or None.

    One countdown per robot and opening, whoever asks (claims that park a job because the
    robot is closed, and every housekeeping run): a Redis ``SET NX`` de-duplicates them. The
    broker holds the countdown (``open_robot`` re-arms itself in steps no longer than the
    broker allows), so the first waiting job goes within seconds of the opening (§11).
    """
    config = settings.robot(robot)
    if config is None:
        return None
    opens = config.next_open(utcnow())
    if opens is None:
        return None
    opens_at = opens.timestamp()
    wait = max(opens_at - time.time(), 0.0)
    try:
        rendezvous = _rendezvous(settings)
        if not rendezvous.claim_opening(robot, int(opens_at), int(wait) + 3600):
            return opens_at  # armed already
        try:
            _send_opening(app, settings, robot, opens_at)
        except Exception:
            rendezvous.release_opening(robot, int(opens_at))
            raise
    except Exception as exc:  # Redis or the broker: housekeeping arms it again, and hands off
        log.warning("robot %s: its opening could not be armed (%s)", robot, exc)
        return None
    log.info("robot %s is closed; a hand-off is armed for %s", robot, opens.isoformat())
    return opens_at


def _send_opening(app: Celery, settings: Settings, robot: str, opens_at: float) -> None:
    wait = max(opens_at - time.time(), 0.0)
    app.send_task(
        "orchestrator.open_robot",
        args=(robot, opens_at),
        countdown=whole_seconds(min(wait, settings.wait_poll_max_seconds)),
    )


@shared_task(name="orchestrator.open_robot")
def open_robot(robot: str, opens_at: float) -> None:
    """Hand a robot's waiting jobs on at its opening; before it, wait again (re-armed)."""
    settings = _settings()
    if time.time() < opens_at:
        _send_opening(current_app, settings, robot, opens_at)
        return
    hand_off(current_app, settings, slot_freed=False, robots=[robot])


@shared_task(name="orchestrator.mark_processing", bind=True)
def mark_processing(self: Task, job_id: str) -> None:
    """Mark the job processing; stop this chain if the job is closed or already dispatched."""
    with session_scope(_settings().database_url) as session:
        proceed = lifecycle.mark_processing(session, job_id)
    if not proceed:
        log.info("job %s: closed or already dispatched; this chain stops", job_id)
        _stop_chain(self)


@shared_task(name="orchestrator.dispatch", bind=True)
def dispatch(self: Task, job_id: str) -> None:
    """Claim the job's one dispatch, commit the claim, then send it to the robot."""
    settings = _settings()
    with session_scope(settings.database_url) as session:
        ticket = lifecycle.claim_dispatch(session, job_id, settings)
    if ticket is None:
        log.info("job %s: not dispatched now (waiting, claimed before or closed)", job_id)
        for robot in lifecycle.robots_closed(session):
            arm_opening(current_app, settings, robot)
        _stop_chain(self)
        return
    try:
        robot_client.dispatch(ticket, settings)
    except robot_client.DispatchFailed as exc:
        result = "ambiguous" if exc.robot_may_have_it else "refused"
        metrics.count_dispatch(result)
        with session_scope(settings.database_url) as session:
            lifecycle.fail_dispatch(
                session, settings, job_id, str(exc), exc.robot_may_have_it, exc.status_code
            )
        hand_off(current_app, settings, robots=[ticket.robot])
        raise
    metrics.count_dispatch("accepted")
    try:
        with session_scope(settings.database_url) as session:
            lifecycle.record_dispatch_accepted(session, job_id, ticket.robot)
    except SQLAlchemyError:
        # The robot has the job: a missing note must not fail it.
        log.warning("job %s: accepted by the robot, but the note could not be saved", job_id)
    log.info("job %s dispatched (%d items)", job_id, len(ticket.items))


@shared_task(name="orchestrator.wait_for_report", bind=True)
def wait_for_report(
    self: Task, job_id: str, deadline_ts: float | None = None, token: str | None = None
) -> None:
    """Return once the job's report is in Redis or its deadline passed; else sleep again.

    Returning lets the chain go on to ``finalize``. Sleeping is a new message for this task
    with a countdown, carrying the rest of the chain and the errback, while this message's
    chain is dropped: a waiting job holds no worker slot. The poller token makes a
    redelivered or duplicate copy of a poll stop at once.
    """
    settings = _settings()
    rendezvous = _rendezvous(settings)
    try:
        if token is None:
            with session_scope(settings.database_url) as session:
                deadline = lifecycle.open_job_deadline(session, job_id)
            if deadline is None:  # closed already (the wake-up came first), or not dispatched
                _stop_chain(self)
                return
            deadline_ts = deadline.timestamp()
            token = rendezvous.claim_poller(job_id)
            reported = token is not None and rendezvous.has_report(job_id)
        else:
            token, reported = rendezvous.pass_poller(job_id, token)
        if token is None:
            log.info("job %s: another poll owns this job; this poll stops", job_id)
            _stop_chain(self)
            return
        assert deadline_ts is not None
        if reported or time.time() >= deadline_ts:
            return
        countdown = min(max(deadline_ts - time.time(), 0.0) + 0.05, settings.wait_poll_max_seconds)
        self.signature(
            (job_id, deadline_ts, token),
            countdown=whole_seconds(countdown),
            chain=self.request.chain,
            link_error=self.request.errbacks,
        ).apply_async()
    except INFRASTRUCTURE_ERRORS:
        log.warning(
            "job %s: Redis, broker or database unreachable; housekeeping takes over", job_id
        )
    _stop_chain(self)


@shared_task(name="orchestrator.finalize")
def finalize(job_id: str) -> str | None:
    """Settle the job from its report or its deadline; a finished job stays as it is."""
    return close_job(current_app, _settings(), job_id)


def close_job(
    app: Celery,
    settings: Settings,
    job_id: str,
    failure: lifecycle.Failure | None = None,
    *,
    then_hand_off: bool = True,
) -> str | None:
    """Settle the job (lifecycle.finalize), commit, drop its Redis keys, hand its slot on.

    The one way a task settles a job: the ``finalize`` task, the report listener's thread
    when a report wakes the job (no broker hop), the chain's errback and housekeeping (which
    hands off once per run instead). Returns the new status, None when nothing changed.
    """
    with session_scope(settings.database_url) as session:
        status = lifecycle.finalize(session, job_id, failure)
    moved = lifecycle.robots_moved(session)
    if status is not None:
        try:
            _rendezvous(settings).forget(job_id)
        except RedisError:
            log.warning("job %s: could not drop its Redis keys (they expire anyway)", job_id)
        if then_hand_off:
            hand_off(app, settings, robots=moved)
    return status


@shared_task(name="orchestrator.fail_job")
def fail_job(request: Any, exc: BaseException, traceback: Any) -> None:
    """Mark the chain's job failed with a reason a person can act on (the chain's errback)."""
    job_id = request.args[0] if request.args else None
    if not job_id:
        log.error("errback without a job id for task %s", request.id)
        return
    with job_context(job_id):
        _fail_job(request, job_id, exc)


def _fail_job(request: Any, job_id: str, exc: BaseException) -> None:
    if isinstance(exc, INFRASTRUCTURE_ERRORS):
        log.warning("job %s: %s hit %s; housekeeping will settle it", job_id, request.task, exc)
        return
    if isinstance(exc, robot_client.DispatchFailed):
        reason = str(exc)
        may_have_it: bool | None = exc.robot_may_have_it
        kind = "ambiguous" if may_have_it else "refused"
    else:
        step = (request.task or "a step").removeprefix("orchestrator.")
        reason = f"unexpected error in {step}: {type(exc).__name__}; see the worker log"
        may_have_it = None
        kind = "unexpected"
    close_job(current_app, _settings(), job_id, lifecycle.Failure(reason, may_have_it, kind))


@shared_task(name="orchestrator.deliver_notifications", bind=True)
def deliver_notifications(self: Task, job_id: str | None = None) -> None:
    """Send the due notifications of one job (None: those about no job), in order.

    A failed attempt schedules the next one as a new message of this task with a countdown
    (no Celery autoretry: the retry time is the notification's, stored in its row);
    housekeeping enqueues any due stream all the same, should that message be lost.
    """
    settings = _settings()
    if not settings.notify_url:
        return
    try:
        retry_in = notifications.deliver(settings, job_id)
        if retry_in is not None:
            # A little after the due time, never longer than the broker allows a countdown.
            countdown = min(retry_in + 0.05, settings.wait_poll_max_seconds)
            self.signature((job_id,), countdown=countdown).apply_async()
    except INFRASTRUCTURE_ERRORS:
        log.warning(
            "job %s: notifications wait: database or broker unreachable; housekeeping retries",
            job_id,
        )


def _housekeeping_span(what: str, job_id: str, settings: Settings) -> Any:
    """Housekeeping's work on one job, as a span of that job's trace (traces on)."""
    return tracing.job_span(f"housekeeping {what}", job_id, database_url=settings.database_url)


@shared_task(name="orchestrator.housekeeping")
def run_housekeeping() -> dict[str, int]:
    """Settle reported, overdue and silent jobs, end a timed pause, restart stalled jobs, hand
    free slots on, send due notifications and apply retention, from the database."""
    settings = _settings()
    app = current_app
    settled = 0
    with session_scope(settings.database_url) as session:
        due = housekeeping.jobs_to_settle(session)
    for job_id in due:
        with job_context(job_id), _housekeeping_span("settle", job_id, settings):
            closed = close_job(app, settings, job_id, then_hand_off=False) is not None
        if closed:
            settled += 1
            metrics.count_settled()
    silent = 0
    # Each robot's silence timeout; the robots no longer configured, the unprefixed one.
    for robot in (*settings.robots, None):
        silence = lifecycle.silence_failure(settings, robot)
        if silence is None or silence.silent_since is None:
            continue
        timeout = (robot or settings.unprefixed_robot("")).dispatch_timeout_seconds
        with session_scope(settings.database_url) as session:
            quiet = housekeeping.silent_jobs(
                session,
                silence.silent_since,
                timeout,
                robot=robot.name if robot is not None else None,
                not_in=settings.robot_names,
            )
        for job_id in quiet:
            with job_context(job_id), _housekeeping_span("settle silent", job_id, settings):
                if close_job(app, settings, job_id, silence, then_hand_off=False) is not None:
                    silent += 1
    with session_scope(settings.database_url) as session:
        unconfigured = lifecycle.fail_unconfigured(session, settings)
    for job_id in unconfigured:
        log.warning("job %s failed: its robot is no longer configured", job_id)
    with session_scope(settings.database_url) as session:
        resumed = lifecycle.resume_if_due(session, settings)
    for robot in settings.robots:
        if robot.hours is not None and not robot.is_open(utcnow()):
            arm_opening(app, settings, robot.name)
    with session_scope(settings.database_url) as session:
        stalled = housekeeping.claim_stalled(session, settings.rekick_after_seconds)
        purged = housekeeping.purge_idempotency_keys(session)
    metrics.count_restarted(len(stalled))
    for job_id in stalled:
        with job_context(job_id), _housekeeping_span("restart", job_id, settings):
            log.warning("job %s was never dispatched; starting its chain again", job_id)
            start_job(app, job_id, settings)
    handed = hand_off(app, settings, slot_freed=False)
    streams: list[str | None] = []
    if settings.notify_url:
        with session_scope(settings.database_url) as session:
            streams = notifications.due_streams(session)
        for stream in streams:
            enqueue_delivery(app, stream)
    deleted = 0
    if settings.retention_days is not None:
        pruned = housekeeping.prune_finished(
            settings.database_url,
            settings.retention_days,
            max_batches=housekeeping.PRUNE_BATCHES_PER_RUN,
        )
        deleted = pruned.get("jobs", 0)
        metrics.count_pruned(deleted)
    if settled or silent or stalled or handed or resumed or deleted or unconfigured:
        log.info(
            "housekeeping: settled %d jobs (%d silent, %d of robots no longer configured), "
            "restarted %d, handed off %d, deleted %d past retention%s",
            settled + silent + len(unconfigured),
            silent,
            len(unconfigured),
            len(stalled),
            len(handed),
            deleted,
            ", resumed dispatching" if resumed else "",
        )
    return {
        "settled": settled + silent + len(unconfigured),
        "silent": silent,
        "restarted": len(stalled),
        "handedOff": len(handed),
        "resumed": int(resumed),
        "purgedKeys": purged,
        "notificationStreams": len(streams),
        "deletedJobs": deleted,
    }
