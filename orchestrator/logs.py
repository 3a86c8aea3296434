"""Log lines as text or as one JSON object each (LOG_FORMAT), with the job they are about.

The job a line is about comes from one place: a context variable that the code handling a
job sets around its work (``job_context``) — a Celery task of the chain, a request under
``/api/jobs/<id>`` or ``/api/robot/jobs/<id>``, the report listener's wake-up, each job of a
housekeeping run. ``JobIdFilter`` copies it onto every record as ``jobId``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_job_id: ContextVar[str | None] = ContextVar("orchestrator_job_id", default=None)

# The current span's (traceId, spanId), set by ``tracing`` when traces are on; None: off,
# and no line pays more than this one check.
_trace_ids: Callable[[], tuple[str, str] | None] | None = None


def set_trace_ids(source: Callable[[], tuple[str, str] | None] | None) -> None:
    """Give JSON lines the current span's ids from ``source`` (tracing's, once it is on)."""
    global _trace_ids
    _trace_ids = source


@contextmanager
def job_context(job_id: str | None) -> Iterator[None]:
    """Mark every line logged inside the block as about ``job_id``."""
    token = bind_job(job_id)
    try:
        yield
    finally:
        unbind_job(token)


def bind_job(job_id: str | None) -> Token[str | None]:
    """Start marking lines as about ``job_id`` until ``unbind_job`` (a request, a task)."""
    return _job_id.set(job_id)


def unbind_job(token: Token[str | None]) -> None:
    _job_id.reset(token)


def current_job_id() -> str | None:
    """Return the job the current code is working on, if any."""
    return _job_id.get()


class JobIdFilter(logging.Filter):
    """Put the current job's id on each record (``record.jobId``, None outside a job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "jobId", None) is None:
            record.jobId = _job_id.get()
        return True


# Line breaks that json.dumps(ensure_ascii=False) leaves as they are.
_LINE_BREAKS = {ord(c): f"\\u{ord(c):04x}" for c in "\x85\u2028\u2029"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, pid, jobId, traceId, spanId,
    exception (traceId and spanId with traces on, inside a span)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        job_id = getattr(record, "jobId", None)
        if job_id is not None:
            line["jobId"] = job_id
        if _trace_ids is not None:
            ids = _trace_ids()
            if ids is not None:
                line["traceId"], line["spanId"] = ids
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # json.dumps escapes every C0 control character but writes NEL (U+0085) and the
        # line and paragraph separators raw: a reader splitting on them would see a line
        # end inside a value (a forged line). They are escaped as JSON allows.
        return json.dumps(line, ensure_ascii=False, default=str).translate(_LINE_BREAKS)


def formatter(log_format: str) -> logging.Formatter:
    """Return the formatter of a LOG_FORMAT value (``text`` or ``json``)."""
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def apply_format(handlers: Iterable[logging.Handler], log_format: str) -> None:
    """Give handlers that someone else created (Celery's, gunicorn's) our format and filter.

    In text mode their own format stays; only the job filter is added.
    """
    for handler in handlers:
        if log_format == "json":
            handler.setFormatter(JsonFormatter())
        if not any(isinstance(f, JobIdFilter) for f in handler.filters):
            handler.addFilter(JobIdFilter())


def configure_root(log_format: str, level: int = logging.INFO) -> None:
    """Send the root logger's records, and Python's warnings, to stderr in the given format.

    The web process's logging; in the Celery processes it covers what comes before Celery
    sets up its own handlers (a warning at the worker's start), which then get the format.
    """
    logging.captureWarnings(True)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(JobIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
