"""Prometheus metrics: counters the processes keep, gauges read from the database at scrape time.

prometheus_client decides when it is imported whether it runs in multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``), so nothing here imports it before a metric is first used or a
registry is built: the web and worker processes point it at their directory first
(``use_multiprocess_dir``), and their child processes (gunicorn's workers, Celery's pool)
write their counts there too; a scrape sums them (``MultiProcessCollector``).

The web process counts callbacks; the worker process counts dispatches, failures, wake-ups
and housekeeping, and serves them on ``WORKER_METRICS_PORT``. Counts that follow a database
change are counted after its commit (``after_commit``), never for a rolled-back one.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from functools import cache
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from .db import connect
from .models import OPEN_JOB_STATUSES, Job, JobStatus

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

CALLBACK_OUTCOMES = ("applied", "duplicate", "late", "conflict", "rejected")
DISPATCH_RESULTS = ("accepted", "refused", "ambiguous")
FAILURE_KINDS = ("deadline", "refused", "ambiguous", "robot_reported", "silence", "unexpected")
# Report → final: the wake-up closes a job in milliseconds; housekeeping's net in seconds.
WAKE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)


def use_multiprocess_dir(role: str) -> str:
    """Point prometheus_client at one directory for this process and its children; empty it.

    An operator's ``PROMETHEUS_MULTIPROC_DIR`` is used (and emptied of old counts); else a
    private directory is made, removed again when this process exits. Call it before this
    module's first metric is made.
    """
    path = os.environ.get(MULTIPROC_ENV, "")
    if path:
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.remove(os.path.join(path, name))
    else:
        path = tempfile.mkdtemp(prefix=f"orchestrator-{role}-metrics-")
        os.environ[MULTIPROC_ENV] = path
        owner = os.getpid()

        def _remove() -> None:
            if os.getpid() == owner:  # forked children inherit atexit hooks
                shutil.rmtree(path, ignore_errors=True)

        atexit.register(_remove)
    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        # Imported already, so it chose single-process values: the celery command loads
        # Flower's plugin, which imports it, before any of our code runs. Metrics made from
        # now on (ours are made on first use) take the multiprocess kind; this is the hook
        # prometheus_client keeps for exactly that (``values.ValueClass``, read per metric).
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]
    return path


def mark_process_dead(pid: int) -> None:
    """Drop a finished child process's live gauges (gunicorn child_exit, Celery's pool)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


# --- what the processes count ---


@dataclass(frozen=True)
class _WebMetrics:
    callbacks: Any


@dataclass(frozen=True)
class _WorkerMetrics:
    # Lead, with capacity: a hand-off histogram (a freed slot → the next dispatch's claim);
    # with notifications: orchestrator_notification_attempts_total{result}.
    dispatches: Any
    failures: Any
    wake_latency: Any
    settled: Any
    restarted: Any
    pruned: Any


@cache
def _web() -> _WebMetrics:
    from prometheus_client import Counter

    callbacks = Counter(
        "orchestrator_callbacks",
        "Robot callbacks answered, by outcome (rejected: every 4xx but a result conflict)",
        ["outcome"],
        registry=None,
    )
    for outcome in CALLBACK_OUTCOMES:
        callbacks.labels(outcome)
    return _WebMetrics(callbacks)


@cache
def _worker() -> _WorkerMetrics:
    from prometheus_client import Counter, Histogram

    m = _WorkerMetrics(
        dispatches=Counter(
            "orchestrator_dispatches",
            "Dispatch requests sent to the robot, by result",
            ["result"],
            registry=None,
        ),
        failures=Counter(
            "orchestrator_jobs_failed",
            "Jobs that ended failed, by reason",
            ["reason"],
            registry=None,
        ),
        wake_latency=Histogram(
            "orchestrator_report_to_final_seconds",
            "Time from a recorded batch report to the job's final state",
            buckets=WAKE_BUCKETS,
            registry=None,
        ),
        settled=Counter(
            "orchestrator_housekeeping_settled_jobs",
            "Jobs settled by housekeeping rather than by their chain (non-zero: the fast path "
            "lost them)",
            registry=None,
        ),
        restarted=Counter(
            "orchestrator_housekeeping_restarted_jobs",
            "Undispatched jobs whose chain housekeeping started again",
            registry=None,
        ),
        pruned=Counter(
            "orchestrator_retention_deleted_jobs",
            "Final jobs deleted by retention",
            registry=None,
        ),
    )
    for result in DISPATCH_RESULTS:
        m.dispatches.labels(result)
    for kind in FAILURE_KINDS:
        m.failures.labels(kind)
    return m


def count_callback(outcome: str) -> None:
    _web().callbacks.labels(outcome).inc()


def count_dispatch(result: str) -> None:
    _worker().dispatches.labels(result).inc()


def count_closed(failure_kind: str | None, report_to_final: float | None) -> None:
    """Count a job that just became final: its failure's kind, its report's wake latency."""
    m = _worker()
    if failure_kind is not None:
        m.failures.labels(failure_kind).inc()
    if report_to_final is not None:
        m.wake_latency.observe(max(report_to_final, 0.0))


def count_settled() -> None:
    _worker().settled.inc()


def count_restarted(jobs: int) -> None:
    _worker().restarted.inc(jobs)


def count_pruned(jobs: int) -> None:
    _worker().pruned.inc(jobs)


_AFTER_COMMIT = "orchestrator.metrics.after_commit"


def after_commit(session: Session, count: Callable[..., None], *args: Any) -> None:
    """Call ``count(*args)`` once this session's transaction commits; never on a rollback."""
    session.info.setdefault(_AFTER_COMMIT, []).append((count, args))


@event.listens_for(Session, "after_commit")
def _counts_after_commit(session: Session) -> None:
    for count, args in session.info.pop(_AFTER_COMMIT, ()):
        count(*args)


@event.listens_for(Session, "after_rollback")
def _no_counts_after_rollback(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT, None)


# --- what the database says, at scrape time ---


@dataclass(frozen=True)
class JobCounts:
    by_status: dict[str, int]
    active: int
    queued: int

    # Per robot (CONTRACT §3): (active, queued) of every robot that has open jobs.
    by_robot: dict[str, tuple[int, int]] = dataclass_field(default_factory=dict)


_dispatched = Job.dispatched_at.is_not(None)
_COUNTS = select(Job.status, _dispatched.label("dispatched"), Job.robot, func.count()).group_by(
    Job.status, _dispatched, Job.robot
)


def _job_counts(conn: Any) -> JobCounts:
    """Jobs by status; open jobs dispatched (active, CONTRACT §7) and not yet (queued)."""
    by_status = {status.value: 0 for status in JobStatus}
    active = queued = 0
    by_robot: dict[str, tuple[int, int]] = {}
    for status, dispatched, robot, count in conn.execute(_COUNTS):
        by_status[status] = by_status.get(status, 0) + count
        if status in OPEN_JOB_STATUSES:
            robot_active, robot_queued = by_robot.get(robot, (0, 0))
            if dispatched:
                active += count
                robot_active += count
            else:
                queued += count
                robot_queued += count
            by_robot[robot] = (robot_active, robot_queued)
    return JobCounts(by_status, active, queued, by_robot)


class DatabaseCollector:
    """The gauges that describe the database, read from it at each scrape."""

    def __init__(self, database_url: str, settings: Any = None) -> None:
        self.database_url = database_url
        self.settings = settings  # the configured robots, for the per-robot gauges

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        # Here, not at import: the web's master process imports this module before gevent
        # patches its workers, and the outbox module brings requests (and ssl) with it.
        from . import dispatch_control, notifications

        with connect(self.database_url) as conn:
            counts = _job_counts(conn)
            paused_robots = dispatch_control.paused_robots(conn)
            outbox = notifications.status_counts(conn)
        jobs = GaugeMetricFamily("orchestrator_jobs", "Jobs now in each status", labels=["status"])
        for status, count in counts.by_status.items():
            jobs.add_metric([status], count)
        yield jobs
        yield GaugeMetricFamily(
            "orchestrator_active_jobs",
            "Open jobs whose dispatch was claimed (until they are final)",
            value=counts.active,
        )
        yield GaugeMetricFamily(
            "orchestrator_queued_jobs", "Open jobs waiting for their dispatch", value=counts.queued
        )
        names = self.settings.robot_names if self.settings is not None else ("default",)
        # Every robot paused: dispatching as a whole is (as GET /api/dispatch's ``paused``).
        paused = all(name in paused_robots for name in names)
        yield GaugeMetricFamily(
            "orchestrator_dispatch_paused",
            "1 while dispatching is paused (every robot)",
            value=int(paused),
        )
        yield from _robot_gauges(self.settings, names, counts, paused_robots)
        kept = GaugeMetricFamily(
            "orchestrator_notifications", "Notifications in each status", labels=["status"]
        )
        for status, count in outbox.items():
            kept.add_metric([status], count)
        yield kept


def _robot_gauges(
    settings: Any, names: Sequence[str], counts: JobCounts, paused: set[str]
) -> Iterator[Any]:
    """One series per configured robot: its active and queued jobs, paused and open."""
    from prometheus_client.core import GaugeMetricFamily

    from .models import utcnow

    families = {
        "active": GaugeMetricFamily(
            "orchestrator_robot_active_jobs", "The robot's active jobs", labels=["robot"]
        ),
        "queued": GaugeMetricFamily(
            "orchestrator_robot_queued_jobs", "The robot's waiting jobs", labels=["robot"]
        ),
        "paused": GaugeMetricFamily(
            "orchestrator_robot_paused", "1 while the robot is paused", labels=["robot"]
        ),
        "open": GaugeMetricFamily(
            "orchestrator_robot_open", "1 while the robot's hours are open", labels=["robot"]
        ),
    }
    now = utcnow()
    for name in names:
        active, queued = counts.by_robot.get(name, (0, 0))
        robot = settings.robot(name) if settings is not None else None
        families["active"].add_metric([name], active)
        families["queued"].add_metric([name], queued)
        families["paused"].add_metric([name], int(name in paused))
        families["open"].add_metric([name], int(robot is None or robot.is_open(now)))
    yield from families.values()


def _registry(own: Callable[[], Any], *extra: Any) -> Any:
    """A fresh registry: every process's counts (multiprocess mode) or this one's, plus extra."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    metrics = own()  # this process's counters exist, at zero, before the first count
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        MultiProcessCollector(registry)
    else:
        for collector in vars(metrics).values():
            registry.register(collector)
    for collector in extra:
        registry.register(collector)
    return registry


def web_exposition(database_url: str, settings: Any = None) -> tuple[bytes, str]:
    """Render the web app's metrics (every web process's, and the database's gauges).

    ``settings``: the configured robots, one series each; without, the one ``default``.
    """
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    collector = DatabaseCollector(database_url, settings)
    return generate_latest(_registry(_web, collector)), CONTENT_TYPE_LATEST


def serve_worker_metrics(port: int) -> tuple[Any, Any]:
    """Serve the worker's counters (its own and its pool's) on ``port``; return server, thread."""
    from prometheus_client import start_http_server

    return start_http_server(port, registry=_registry(_worker))
