"""orchestrator.tracing: off without an OTLP endpoint, the SDK's own variables when on.

Each case runs in a fresh interpreter: the SDK's tracer provider is set once per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import tracing
from tests.otlp_receiver import OtlpReceiver

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    running = OtlpReceiver().start()
    yield running
    running.stop()


def run(code: str, **env: str) -> dict:
    """Run ``code`` (which prints one JSON line last) with only ``env`` besides PATH."""
    base = {"PATH": os.environ.get("PATH", ""), "APP_ENV": "development"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


OFF = """
import json, logging, sys, threading
from orchestrator import logs, tracing
from webapp import create_app
import orchestrator.worker  # the Celery app, as the worker and beat load it
results = [tracing.init_tracing(p) for p in ("web", "worker", "beat")]
app = create_app()
tracing.instrument_app(app)
from opentelemetry import trace
record = logging.LogRecord("x", logging.INFO, "f", 1, "hello", (), None)
print(json.dumps({
    "results": results,
    "enabled": tracing.enabled(),
    "traceparent": tracing.current_traceparent(),
    "provider": trace._TRACER_PROVIDER is not None,
    "modules": sorted(m for m in sys.modules if m.startswith((
        "opentelemetry.sdk.trace", "opentelemetry.exporter", "opentelemetry.instrumentation"))),
    "threads": [t.name for t in threading.enumerate() if "Otel" in t.name],
    "line": json.loads(logs.JsonFormatter().format(record)),
}))
"""


def test_without_an_endpoint_nothing_is_set_up_or_sent(receiver):
    # Every other OTEL_ variable set, the endpoint not: still off.
    seen = run(OFF, OTEL_SERVICE_NAME="shop", OTEL_TRACES_SAMPLER="always_on")
    assert seen["results"] == [False, False, False]
    assert seen["enabled"] is False and seen["traceparent"] is None
    assert seen["provider"] is False
    assert seen["modules"] == []  # no SDK tracing, exporter or instrumentation imported
    assert seen["threads"] == []
    assert "traceId" not in seen["line"]
    assert receiver.all() == [] and receiver.requests == 0


ON = """
import json, logging
from orchestrator import logs, tracing
on = tracing.init_tracing("web")
again = tracing.init_tracing("web")
from opentelemetry import trace
tracer = trace.get_tracer("test")
line = {}
with tracer.start_as_current_span("submit"):
    parent = tracing.current_traceparent()
    record = logging.LogRecord("x", logging.INFO, "f", 1, "inside", (), None)
    line = json.loads(logs.JsonFormatter().format(record))
with tracing.job_span("later work", "job-1", parent):
    joined = tracing.current_traceparent()
with tracer.start_as_current_span("callback"):
    tracing.link_to(parent)
    tracing.link_to(None)
    callback = tracing.current_traceparent()
trace.get_tracer_provider().force_flush()
print(json.dumps({"on": on, "again": again, "parent": parent, "joined": joined,
                  "callback": callback, "line": line}))
"""


@pytest.mark.parametrize("variable", tracing.ENDPOINT_VARIABLES)
def test_an_endpoint_switches_on_export_over_otlp_http(receiver, variable):
    endpoint = receiver.endpoint
    if variable.endswith("TRACES_ENDPOINT"):
        endpoint += "/v1/traces"  # the signal's own variable is the whole URL (the SDK's rule)
    seen = run(ON, **{variable: endpoint})
    assert seen["on"] is True and seen["again"] is True
    _version, trace_id, submit_id, _flags = seen["parent"].split("-")
    spans = {s.name: s for s in receiver.all()}
    assert set(spans) == {"submit", "later work", "callback"}
    assert {s.service for s in spans.values()} == {"orchestrator-web"}
    # Later work joins the job's trace as a child of the submit span.
    assert spans["later work"].trace_id == trace_id
    assert spans["later work"].parent_id == submit_id
    assert spans["later work"].attributes["orchestrator.job_id"] == "job-1"
    # A callback is a trace of its own with a link to the job's.
    assert spans["callback"].trace_id != trace_id
    assert spans["callback"].links == ((trace_id, submit_id),)
    # A JSON line inside a span carries its ids.
    assert seen["line"]["traceId"] == trace_id and seen["line"]["spanId"] == submit_id


def test_the_sdk_reads_the_standard_variables(receiver):
    seen = run(
        ON,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_SERVICE_NAME="shop-orchestrator",
        OTEL_TRACES_SAMPLER="always_off",
    )
    assert seen["on"] is True
    assert receiver.all() == []  # the sampler said no to every span
    seen = run(
        ON, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_SERVICE_NAME="shop-orchestrator"
    )
    assert {s.service for s in receiver.all()} == {"shop-orchestrator"}


STORED = """
import json, sys
from orchestrator import audit, lifecycle, submission, tracing
from orchestrator.config import settings_from_mapping
from orchestrator.db import session_scope
from orchestrator.migrate import upgrade
url = sys.argv[1]
upgrade(url)
tracing.init_tracing("web")
from opentelemetry import trace
tracer = trace.get_tracer("test")
with tracer.start_as_current_span("submit"):
    with session_scope(url) as session:
        job = lifecycle.create_job(session, [{"orderId": "A", "pedidoInput": {}}])
        job.trace_parent = tracing.current_traceparent()
        job_id, parent = job.id, job.trace_parent
with tracing.job_span("hand-off", job_id, database_url=url):
    pass
with tracing.job_span("housekeeping settle", "no-such-job", database_url=url):
    pass
settings = settings_from_mapping({"database_url": url})
with tracer.start_as_current_span("resubmit"):
    try:
        submission.resubmit_job(settings, None, job_id, actor=audit.SYSTEM)
    except submission.JobNotFinal:
        pass
trace.get_tracer_provider().force_flush()
print(json.dumps({"parent": parent}))
"""


def test_later_work_finds_the_job_s_trace_in_the_database(receiver, tmp_path):
    url = f"sqlite:///{tmp_path / 'traces.db'}"
    seen = run(
        STORED.replace("sys.argv[1]", repr(url)), OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint
    )
    _version, trace_id, submit_id, _flags = seen["parent"].split("-")
    spans = {s.name: s for s in receiver.all()}
    # Work that knows only the job's id joins its trace through jobs.trace_parent.
    assert (spans["hand-off"].trace_id, spans["hand-off"].parent_id) == (trace_id, submit_id)
    # A job without one (unknown, or submitted with traces off): a span of its own.
    assert spans["housekeeping settle"].parent_id == ""
    # A resubmit request links to the old job's trace.
    assert spans["resubmit"].trace_id != trace_id
    assert spans["resubmit"].links == ((trace_id, submit_id),)
