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
from typing import Any

from celery import Celery, Task, current_app, shared_task
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from . import housekeeping, lifecycle, robot_client
from .config import Settings
from .db import session_scope
from .rendezvous import Rendezvous, get_redis

log = logging.getLogger(__name__)

INFRASTRUCTURE_ERRORS = (OperationalError, RedisError, BrokerError, ConnectionError)


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
        log.info("job %s: dispatch already claimed or job closed; this chain stops", job_id)
        _stop_chain(self)
        return
    try:
        robot_client.dispatch(ticket, settings)
    except robot_client.DispatchFailed as exc:
        result = "ambiguous" if exc.robot_may_have_it else "refused"
        with session_scope(settings.database_url) as session:
            lifecycle.record_dispatch_result(session, job_id, result)
            lifecycle.finalize(
                session,
                job_id,
                lifecycle.Failure(str(exc), robot_may_have_it=exc.robot_may_have_it),
            )
        raise
    try:
        with session_scope(settings.database_url) as session:
            lifecycle.record_dispatch_result(session, job_id, "accepted")
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
    return close_job(_settings(), job_id)


def close_job(settings: Settings, job_id: str) -> str | None:
    """Settle the job from its report or its deadline, then drop its Redis keys.

    The ``finalize`` task's work, also done by the report listener's thread when a report
    wakes the job (no broker hop). Returns the new status, None when nothing changed.
    """
    with session_scope(settings.database_url) as session:
        status = lifecycle.finalize(session, job_id)
    if status is not None:
        try:
            _rendezvous(settings).forget(job_id)
        except RedisError:
            log.warning("job %s: could not drop its Redis keys (they expire anyway)", job_id)
    return status


@shared_task(name="orchestrator.fail_job")
def fail_job(request: Any, exc: BaseException, traceback: Any) -> None:
    """Mark the chain's job failed with a reason a person can act on (the chain's errback)."""
    job_id = request.args[0] if request.args else None
    if not job_id:
        log.error("errback without a job id for task %s", request.id)
        return
    if isinstance(exc, INFRASTRUCTURE_ERRORS):
        log.warning("job %s: %s hit %s; housekeeping will settle it", job_id, request.task, exc)
        return
    if isinstance(exc, robot_client.DispatchFailed):
        reason = str(exc)
        may_have_it: bool | None = exc.robot_may_have_it
    else:
        step = (request.task or "a step").removeprefix("orchestrator.")
        reason = f"unexpected error in {step}: {type(exc).__name__}; see the worker log"
        may_have_it = None
    with session_scope(_settings().database_url) as session:
        lifecycle.finalize(session, job_id, lifecycle.Failure(reason, may_have_it))


@shared_task(name="orchestrator.housekeeping")
def run_housekeeping() -> dict[str, int]:
    """Settle reported and overdue jobs and restart stalled ones, from the database."""
    settings = _settings()
    settled = 0
    with session_scope(settings.database_url) as session:
        due = housekeeping.jobs_to_settle(session)
    for job_id in due:
        with session_scope(settings.database_url) as session:
            if lifecycle.finalize(session, job_id) is not None:
                settled += 1
    with session_scope(settings.database_url) as session:
        stalled = housekeeping.claim_stalled(session, settings.rekick_after_seconds)
        purged = housekeeping.purge_idempotency_keys(session)
    for job_id in stalled:
        log.warning("job %s was never dispatched; starting its chain again", job_id)
        start_job(current_app, job_id, settings)
    if settled or stalled:
        log.info("housekeeping: settled %d jobs, restarted %d", settled, len(stalled))
    return {"settled": settled, "restarted": len(stalled), "purgedKeys": purged}
