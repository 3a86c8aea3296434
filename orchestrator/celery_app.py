"""Build the Celery app from ``celeryconfig`` and the settings, with the report listener."""

from __future__ import annotations

import logging
import os
import threading
from contextvars import Token
from typing import Any
from urllib.parse import urlsplit

from celery import Celery, bootsteps, current_app
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    beat_init,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
)
from celery.worker.consumer import Consumer
from redis.exceptions import RedisError

from . import housekeeping, live, logs, metrics, notifications, tasks, tracing
from .config import Settings, load_settings_or_exit
from .db import dispose_all, session_scope
from .lifecycle import JobNotFound
from .rendezvous import Rendezvous, get_redis
from .tasks import INFRASTRUCTURE_ERRORS, JOB_TASKS, close_job

log = logging.getLogger(__name__)


def create_celery(settings: Settings) -> Celery:
    """Return a Celery app for these settings."""
    app = Celery("orchestrator")
    app.config_from_object("celeryconfig")
    app.conf.update(
        broker_url=settings.broker_url,
        **broker_conf(settings),
        beat_schedule={
            "housekeeping": {
                "task": "orchestrator.housekeeping",
                "schedule": settings.housekeeping_interval_seconds,
                "options": {"expires": settings.housekeeping_interval_seconds},
            }
        },
        orchestrator_settings=settings,
    )
    app.steps["worker"].add(ReportListener)
    # The outbox enqueues each stream's delivery after the commit that wrote it; looked up
    # by name at each call, so that tests can record it instead.
    notifications.init_outbox(settings, lambda job_id: tasks.enqueue_delivery(app, job_id))
    # Every process that changes jobs announces them after each commit (CONTRACT §13).
    live.init_announcer(settings)
    app.steps["worker"].add(MetricsEndpoint)
    return app


RABBITMQ_SCHEMES = ("amqp", "amqps", "pyamqp")


def is_rabbitmq(broker_url: str) -> bool:
    """Tell whether the broker URL names RabbitMQ (AMQP) rather than Redis."""
    return urlsplit(broker_url).scheme in RABBITMQ_SCHEMES


def broker_conf(settings: Settings) -> dict[str, Any]:
    """Return the Celery settings that depend on the broker, chosen from its URL alone.

    RabbitMQ: native delayed delivery, so that a waiting job's countdown lives in the broker's
    ``celery_delayed_*`` queues instead of unacknowledged in a worker, where the server's
    ``consumer_timeout`` would close the channel and stop the worker. It needs quorum queues,
    a topic exchange (a direct one silently falls back to holding the ETA in the worker) and
    publisher confirms; every process that sends tasks builds its app here, so the web app,
    beat and the worker declare the queue alike. Redis: the visibility timeout that every
    countdown stays well below (``wait_poll_max_seconds``), and the master's name when the
    URL lists Sentinels.
    """
    if is_rabbitmq(settings.broker_url):
        return {
            "task_default_queue_type": "quorum",
            "task_default_exchange_type": "topic",
            "broker_native_delayed_delivery_queue_type": "quorum",
            "worker_detect_quorum_queues": True,
            "broker_transport_options": {"confirm_publish": True},
        }
    options: dict[str, Any] = {"visibility_timeout": settings.broker_visibility_timeout}
    if settings.redis_sentinel_master and settings.broker_url.startswith("sentinel://"):
        # kombu's sentinel transport: the URL lists the Sentinels, this names the master.
        options["master_name"] = settings.redis_sentinel_master
    return {"broker_transport_options": options}


def celery_from_environment() -> Celery:
    """Load the settings from the environment (exit with one line if wrong); build the app.

    The entry of the worker, beat and Flower processes: their logging starts here too.
    """
    settings = load_settings_or_exit()
    logs.configure_root(settings.log_format)
    return create_celery(settings)


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # A forked pool process must not share its parent's database sockets.
    dispose_all()
    # Traces (an OTLP endpoint set): set up here, in the child, as the instrumentation says.
    tracing.init_tracing("worker")


@beat_init.connect
def _beat_tracing(**_: Any) -> None:
    tracing.init_tracing("beat")


@worker_process_shutdown.connect
def _pool_process_gone(pid: int | None = None, **_: Any) -> None:
    metrics.mark_process_dead(pid or os.getpid())


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_format(logger: logging.Logger, **_: Any) -> None:
    # Celery (worker_hijack_root_logger) made these handlers: give them LOG_FORMAT and jobId.
    settings: Settings | None = current_app.conf.get("orchestrator_settings")
    logs.apply_format(logger.handlers, settings.log_format if settings else "text")


# The job context of the task running in this thread, by task id (prerun → postrun).
_task_jobs: dict[str, Token[str | None]] = {}


@task_prerun.connect
def _job_of_task(task_id: str, task: Any, args: tuple[Any, ...] = (), **_: Any) -> None:
    if task.name in JOB_TASKS and args:
        _task_jobs[task_id] = logs.bind_job(str(args[0]))


@task_postrun.connect
def _end_job_of_task(task_id: str, **_: Any) -> None:
    token = _task_jobs.pop(task_id, None)
    if token is not None:
        logs.unbind_job(token)


class ResilientConsumer(Consumer):
    """The worker's consumer, surviving a broker that lost its connection (or its data).

    Celery 5.7.0 closes the broken broker connection after collecting it; with unacked messages
    held (every waiting job's countdown) kombu's Redis channel then tries to restore them through
    a transport whose client is already gone, and the AttributeError stops the whole worker
    ("Unrecoverable error"). The connection is dropped all the same: reconnect as Celery intends.
    Unrestored messages come back after the visibility timeout, or are gone with a Redis that
    lost its data; housekeeping settles those jobs from the database either way.
    """

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError as error:
            log.warning("broker connection lost; closing it failed (%r); reconnecting", error)
            self.connection = None


class ReportListener(bootsteps.StartStopStep):
    """Wake a waiting job as soon as its report is announced on the pub/sub channel.

    The waiting chain only polls as a safety net; this listener closes the job the moment
    the callback publishes, in its own thread (``tasks.close_job``, the ``finalize`` task's
    work, without the broker hop). If that fails (database unreachable, anything unexpected)
    it sends the ``finalize`` task instead; housekeeping settles whatever is left. One
    listener per worker; a Redis key lets only one of them act on each announcement.
    """

    # Start once the pool's processes are forked: none inherits this thread's state.
    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        # The worker's main process closes jobs here: its traces too, set up now that the pool
        # is forked (a process forked later inherits them; the SDK restarts its thread there).
        tracing.init_tracing("worker")
        self._thread = threading.Thread(
            target=self._run, args=(worker.app,), name="report-listener", daemon=True
        )
        self._thread.start()

    def stop(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)

    def _run(self, app: Celery) -> None:
        settings: Settings = app.conf["orchestrator_settings"]
        client = get_redis(settings.redis_url, settings.redis_sentinel_master)
        rendezvous = Rendezvous(client)
        away = False
        while not self._stop.is_set():
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(rendezvous.channel)
                if away:
                    # Subscribed first, then look: a report recorded before now is in the
                    # database, one announced after reaches this subscription. (Not at the
                    # worker's start: housekeeping covers that, and the main process must
                    # not import the database driver while the pool forks: a child would
                    # inherit the module's import lock held and hang.)
                    self._settle_missed(app, settings)
                    away = False
                try:
                    while not self._stop.is_set():
                        message = pubsub.get_message(timeout=1.0)
                        if message and message["type"] == "message":
                            job_id = message["data"].decode()
                            if rendezvous.claim_wake(job_id):
                                self._wake(app, settings, job_id)
                finally:
                    pubsub.close()
            except (RedisError, OSError) as exc:
                log.warning("report listener lost Redis (%s); retrying", type(exc).__name__)
                away = True
                self._stop.wait(1.0)

    def _settle_missed(self, app: Celery, settings: Settings) -> None:
        """Settle the reported jobs whose announcement may have been lost while unsubscribed.

        Pub/sub keeps nothing for a listener that is away (a Redis failover, a restart, a
        worker that was not running): the database's recorded reports are the record.
        """
        try:
            with session_scope(settings.database_url) as session:
                due = housekeeping.jobs_to_settle(session)
        except Exception as exc:  # housekeeping settles them in any case
            log.warning("report listener: could not look for missed reports (%s)", exc)
            return
        if due:
            log.info("report listener: settling %d jobs reported while it was away", len(due))
        for job_id in due:
            self._wake(app, settings, job_id)

    @staticmethod
    def _wake(app: Celery, settings: Settings, job_id: str) -> None:
        with (
            logs.job_context(job_id),
            tracing.job_span("report listener wake-up", job_id, database_url=settings.database_url),
        ):
            ReportListener._close_or_hand_over(app, settings, job_id)

    @staticmethod
    def _close_or_hand_over(app: Celery, settings: Settings, job_id: str) -> None:
        """Close the reported job here; hand it to a ``finalize`` task if that fails."""
        try:
            status = close_job(app, settings, job_id)
            if status is not None:
                log.info("job %s: closed by the report listener on its wake-up", job_id)
            return
        except JobNotFound:
            log.warning("job %s: a report was announced for a job that does not exist", job_id)
            return
        except Exception as exc:  # the listener must outlive any one job
            log.warning(
                "job %s: the wake-up could not close it here (%s); sending finalize",
                job_id,
                type(exc).__name__,
                exc_info=not isinstance(exc, INFRASTRUCTURE_ERRORS),
            )
        try:
            app.send_task("orchestrator.finalize", args=(job_id,))
        except Exception as exc:
            log.warning("job %s: finalize not sent (%s); housekeeping settles it", job_id, exc)


class MetricsEndpoint(bootsteps.StartStopStep):
    """Serve the worker's counters on ``WORKER_METRICS_PORT`` (unset: no endpoint).

    The worker's main process (the report listener's wake-ups) and its pool's processes all
    count into one multiprocess directory, chosen here, before the pool forks and before the
    first of our metrics is made; the endpoint sums them.
    """

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        settings: Settings = worker.app.conf["orchestrator_settings"]
        self.port = settings.worker_metrics_port
        self._server: Any = None
        if self.port is not None:
            metrics.use_multiprocess_dir("worker")

    def start(self, worker: Any) -> None:
        if self.port is not None:
            self._server, _thread = metrics.serve_worker_metrics(self.port)
            log.info("worker metrics on port %d", self.port)

    def stop(self, worker: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
