"""Build the Celery app from ``celeryconfig`` and the settings, with the report listener."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery, bootsteps
from celery.signals import worker_process_init
from celery.worker.consumer import Consumer
from redis.exceptions import RedisError

from .config import Settings, load_settings_or_exit
from .db import dispose_all
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
        broker_transport_options={"visibility_timeout": settings.broker_visibility_timeout},
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
        client = get_redis(settings.redis_url)
        rendezvous = Rendezvous(client)
        while not self._stop.is_set():
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(rendezvous.channel)
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
                self._stop.wait(1.0)

    @staticmethod
    def _wake(app: Celery, settings: Settings, job_id: str) -> None:
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
