"""One trace per job (CONTRACT §9), exported by the Procfile's real processes over OTLP/HTTP.

One system with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at a receiver in this process that
decodes what arrives with ``opentelemetry-proto``; notifications go to the signed-webhook
receiver, which keeps each request's headers. Off (no endpoint) is
tests/unit/orchestrator/test_tracing.py, in fresh interpreters.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest

from orchestrator.local.processes import private_redis

from ..otlp_receiver import OtlpReceiver, Span
from .conftest import flush_redis
from .harness import System, orders, wait_until
from .receiver import Receiver

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"integration-traces-secret-012345").decode()
FALLBACK_REDIS_DB = 14  # only without a redis-server binary for a private one
WEB, WORKER = "orchestrator-web", "orchestrator-worker"


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    running = OtlpReceiver().start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def hooks() -> Iterator[Receiver]:
    running = Receiver(SECRET).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def system(tmp_path_factory, otlp: OtlpReceiver, hooks: Receiver) -> Iterator[System]:
    log_dir = tmp_path_factory.mktemp("traces")
    private = private_redis(log_dir)
    if private is None:
        flush_redis(FALLBACK_REDIS_DB)
    running = System(
        log_dir,
        f"sqlite:///{log_dir / 'orchestrator.db'}",
        redis_db=FALLBACK_REDIS_DB,
        redis_url=private[0] if private else None,
        HOUSEKEEPING_INTERVAL_SECONDS="1",
        LOG_FORMAT="json",
        NOTIFY_URL=hooks.url,
        NOTIFY_SECRET=SECRET,
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="200",  # the SDK's batch delay (ms): spans arrive soon
    )
    running.extra_args["beat"] = f"--schedule={log_dir / 'celerybeat-schedule'}"
    try:
        yield running.start()
    finally:
        running.stop()
        if private is not None:
            private[1].stop()
        else:
            flush_redis(FALLBACK_REDIS_DB)


def names(spans: list[Span], service: str) -> set[str]:
    return {s.name for s in spans if s.service == service}


def test_one_job_is_one_trace_from_submit_to_notification(system, otlp, hooks):
    answer = system.submit(orders(3, prefix="TRACE"))
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    assert system.wait_final(job_id)["status"] == "completed"
    wait_until(lambda: hooks.delivered(job_id), 30, "the job.finished notification")

    # The dispatch reached the robot with the job's traceparent.
    traceparent = system.robot_stats()["traceparents"][job_id]
    assert traceparent, "the dispatch carried no traceparent"
    _version, trace_id, dispatch_parent, _flags = traceparent.split("-")

    def whole_trace() -> list[Span] | None:
        spans = otlp.of_trace(trace_id)
        have = {s.name for s in spans}
        wanted = {
            "run/orchestrator.dispatch",
            "run/orchestrator.wait_for_report",  # its countdown may end after the wake-up
            "notification delivery",
        }
        finished = {"run/orchestrator.finalize", "report listener wake-up"} & have
        return spans if wanted <= have and finished else None

    spans = wait_until(whole_trace, 30, f"the spans of trace {trace_id}")
    by_id = {s.span_id: s for s in spans}

    # The root: the submit request's server span, in the web process.
    roots = [s for s in spans if not s.parent_id]
    assert [(r.service, r.name) for r in roots] == [(WEB, "POST /api/jobs")]
    root = roots[0]
    # Every step of the chain, in the worker, is in the same trace (countdown included).
    assert {
        "run/orchestrator.mark_processing",
        "run/orchestrator.dispatch",
        "run/orchestrator.wait_for_report",
    } <= names(spans, WORKER)
    assert "apply_async/orchestrator.mark_processing" in names(spans, WEB)
    # The dispatch request is a span of the dispatch step; the robot got its id as parent.
    dispatch_request = by_id[dispatch_parent]
    assert dispatch_request.service == WORKER and dispatch_request.name == "POST"
    assert by_id[dispatch_request.parent_id].name == "run/orchestrator.dispatch"
    # Finalize: the listener's wake-up (or the chain's finalize) joins the job's trace.
    closers = [
        s for s in spans if s.name in ("report listener wake-up", "run/orchestrator.finalize")
    ]
    assert closers and all(s.service == WORKER for s in closers)
    wake_ups = [s for s in spans if s.name == "report listener wake-up"]
    assert all(s.parent_id == root.span_id for s in wake_ups)
    # Database and Redis calls are spans of the upstream instrumentations.
    assert any(s.attributes.get("db.system") == "sqlite" for s in spans)

    # Each notification delivery is in the job's trace and sent its traceparent to the app.
    for record in hooks.for_job(job_id):
        header = record.headers.get("traceparent", "")
        assert header.split("-")[1] == trace_id, record.headers
        sent_by = by_id.get(header.split("-")[2]) or wait_until(
            lambda h=header: {s.span_id: s for s in otlp.of_trace(trace_id)}.get(h.split("-")[2]),
            30,
            "the notification's request span",
        )
        delivery = {s.span_id: s for s in otlp.of_trace(trace_id)}[sent_by.parent_id]
        assert delivery.name == "notification delivery"
        assert delivery.parent_id == root.span_id

    # Each robot callback is a span of its own trace, with a link to the job's.
    route = "POST /api/robot/jobs/<job_id>/events"

    def callbacks() -> list[Span] | None:
        found = [s for s in otlp.all() if s.name == route and (trace_id, root.span_id) in s.links]
        return found if len(found) >= 4 else None  # 3 items and the batch report

    for callback in wait_until(callbacks, 30, "the callbacks' spans"):
        assert callback.service == WEB
        assert callback.trace_id != trace_id
        assert callback.links == ((trace_id, root.span_id),)

    # JSON log lines carry the ids of the span they were logged in.
    worker_log = system.processes["worker"].log()
    lines = [json.loads(line) for line in worker_log.splitlines() if line.startswith("{")]
    dispatched = [
        line
        for line in lines
        if line.get("jobId") == job_id and line["message"].startswith(f"job {job_id} dispatched")
    ]
    assert dispatched and dispatched[0].get("traceId") == trace_id
    assert dispatched[0]["spanId"] in by_id
