"""OpenTelemetry traces (CONTRACT §9): off unless an OTLP endpoint is set; one trace per job.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` set,
``init_tracing`` sets up the SDK in the calling process (a tracer provider, a batch span
processor, the OTLP/HTTP protobuf exporter) and the upstream instrumentations of Celery,
SQLAlchemy, requests and redis-py; the web app's Flask instrumentation is ``instrument_app``.
Everything else the standard ``OTEL_*`` variables say (service name, resource attributes,
headers, sampler, batch sizes) is read by the SDK itself. Without an endpoint nothing of
OpenTelemetry is imported: every helper here is one check of a module flag.

Each process calls ``init_tracing`` where its library says, after it forked and after gevent
patched: gunicorn's worker as it loads the app, Celery's pool processes on
``worker_process_init``, the worker's main process once its pool is forked (the report
listener's thread), beat on ``beat_init``. Never in a master before it forks: the batch
processor's thread would not survive it.

A job's trace: the submit request's span is the root; the Celery instrumentation carries the
context in each message's headers along the chain (countdowns included) and the requests
instrumentation sends ``traceparent`` with the dispatch and each notification. The W3C
``traceparent`` of the submit span is stored with the job (``jobs.trace_parent``) so that
work started later from the job's id alone joins the trace (``job_span``), and a callback,
which arrives in its own request, links to it (``link_to``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import logs

log = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
SERVICE_NAME_VARIABLE = "OTEL_SERVICE_NAME"
# The service name of a process when OTEL_SERVICE_NAME is unset: orchestrator-web, -worker…
SERVICE_PREFIX = "orchestrator-"

_on = False
_tracer: Any = None


def configured() -> bool:
    """Tell whether the environment switches traces on (an OTLP endpoint is set)."""
    env = os.environ
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


def enabled() -> bool:
    """Tell whether this process exports traces (``init_tracing`` set them up)."""
    return _on


def init_tracing(process: str) -> bool:
    """Set up the SDK and the instrumentations in this process if an endpoint is set.

    Returns whether traces are on. A second call is a no-op, and so is a call in a process
    forked from one already set up: the SDK restarts its export thread in the child itself.
    """
    global _on, _tracer
    if _on:
        return True
    if not configured():
        return False
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are the SDK's; given attributes would
    # win over them, so the default name is given only when none is set.
    own = {}
    if not os.environ.get(SERVICE_NAME_VARIABLE, "").strip():
        own[SERVICE_NAME] = f"{SERVICE_PREFIX}{process}"
    provider = TracerProvider(resource=Resource.create(own))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument()
    # Its declared range ends below SQLAlchemy 2.1, which it otherwise instruments as is
    # (engine and cursor events; tests/integration/test_traces.py sees its spans).
    SQLAlchemyInstrumentor().instrument(skip_dep_check=True)
    RequestsInstrumentor().instrument()
    RedisInstrumentor().instrument()
    _tracer = trace.get_tracer("orchestrator")
    logs.set_trace_ids(_current_ids)
    _on = True
    log.info("traces: exporting over OTLP/HTTP as %s", provider.resource.attributes[SERVICE_NAME])
    return True


def instrument_app(app: Any) -> None:
    """Instrument the Flask app (its requests' server spans), when traces are on."""
    if not _on:
        return
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    FlaskInstrumentor().instrument_app(app)


def _current_ids() -> tuple[str, str] | None:
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span (None: traces off or no span)."""
    if not _on:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


def _context_of(trace_parent: str | None) -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if not trace_parent:
        return None
    return TraceContextTextMapPropagator().extract({"traceparent": trace_parent})


@contextmanager
def job_span(
    name: str, job_id: str | None, trace_parent: str | None = None, *, database_url: str = ""
) -> Iterator[None]:
    """Run the block in a span of the job's trace (a child of its submit span).

    The job's ``traceparent`` is given, or read from the database (``database_url``) when
    traces are on; a job without one (submitted with traces off) gets a span of its own.
    Off: nothing at all.
    """
    if not _on:
        yield
        return
    if trace_parent is None and job_id is not None and database_url:
        trace_parent = stored_trace_parent(database_url, job_id)
    attributes = {"orchestrator.job_id": job_id} if job_id else {}
    with _tracer.start_as_current_span(
        name, context=_context_of(trace_parent), attributes=attributes
    ):
        yield


def stored_trace_parent(database_url: str, job_id: str) -> str | None:
    """The job's stored ``traceparent`` (None: no such job, or none stored)."""
    from sqlalchemy import select

    from .db import session_scope
    from .models import Job

    try:
        with session_scope(database_url) as session:
            return session.scalar(select(Job.trace_parent).where(Job.id == job_id))
    except Exception as exc:  # a trace is never worth failing the job's work
        log.warning("job %s: its trace context could not be read (%s)", job_id, exc)
        return None


def link_to(trace_parent: str | None) -> None:
    """Link the current span to the trace a stored ``traceparent`` names (a callback's)."""
    if not _on or not trace_parent:
        return
    from opentelemetry import trace

    linked = trace.get_current_span(_context_of(trace_parent)).get_span_context()
    if linked.is_valid:
        trace.get_current_span().add_link(linked, {"orchestrator.link": "job"})
