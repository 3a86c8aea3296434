"""Build the Celery app from ``celeryconfig`` and the settings, with the report listener."""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import urlsplit

from celery import Celery, bootsteps
from celery.signals import worker_process_init
from celery.worker.consumer import Consumer
from redis.exceptions import RedisError

from . import housekeeping
from .config import Settings, load_settings_or_exit
from .db import dispose_all, session_scope
from .lifecycle import JobNotFound
from .rendezvous import Rendezvous, get_redis
from .tasks import INFRASTRUCTURE_ERRORS, close_job

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
    """Load the settings from the environment (exit with one line if wrong); build the app."""
    return create_celery(load_settings_or_exit())


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # A forked pool process must not share its parent's database sockets.
    dispose_all()


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
        """Close the reported job here; hand it to a ``finalize`` task if that fails."""
        try:
            status = close_job(settings, job_id)
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
