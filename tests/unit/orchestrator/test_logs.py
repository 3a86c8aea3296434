"""LOG_FORMAT (CONTRACT §9): one JSON object per line, with the job the line is about."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest

from orchestrator import logs


@pytest.fixture
def capture():
    """A logger with one handler in our JSON format, writing to a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logs.apply_format([handler], "json")
    logger = logging.getLogger("tests.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)


def test_each_line_is_one_json_object_with_the_contract_keys(capture) -> None:
    logger, lines = capture
    logger.info("job %s dispatched (%d items)", "job-1", 3)
    logger.warning('quotes " and\nnewlines stay inside one line')
    first, second = lines()
    assert first["message"] == "job job-1 dispatched (3 items)"
    assert first["level"] == "INFO"
    assert first["logger"] == "tests.logs"
    assert first["time"].endswith("+00:00")
    assert "jobId" not in first  # not inside a job's context
    assert second["message"] == 'quotes " and\nnewlines stay inside one line'


def test_lines_inside_a_job_context_carry_its_id(capture) -> None:
    logger, lines = capture
    with logs.job_context("job-7"):
        logger.info("about the job")
        with logs.job_context("job-8"):
            logger.info("about another")
        logger.info("back")
    logger.info("outside")
    assert [line.get("jobId") for line in lines()] == ["job-7", "job-8", "job-7", None]


def test_the_job_context_is_per_thread(capture) -> None:
    logger, lines = capture
    with logs.job_context("job-main"):
        thread = threading.Thread(target=lambda: logger.info("from a thread"))
        thread.start()
        thread.join()
        logger.info("from main")
    by_message = {line["message"]: line.get("jobId") for line in lines()}
    assert by_message == {"from a thread": None, "from main": "job-main"}


def test_an_exception_stays_inside_the_one_line(capture) -> None:
    logger, lines = capture
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    (line,) = lines()
    assert line["message"] == "failed"
    assert "ValueError: boom" in line["exception"]


def test_text_format_keeps_the_handlers_own_format() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s|%(message)s"))
    logs.apply_format([handler], "text")
    handler.handle(logging.LogRecord("x", logging.INFO, __file__, 1, "plain", (), None))
    assert stream.getvalue() == "INFO|plain\n"


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_line_separators_are_escaped_so_no_value_can_forge_a_line(separator) -> None:
    """A reader splitting on U+2028/U+2029/NEL (JavaScript, str.splitlines) sees one line."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logs.apply_format([handler], "json")
    logger = logging.getLogger("tests.logs.separators")
    logger.addHandler(handler)
    logger.propagate = False
    forged = f'ab{separator}"injected":1'
    try:
        with logs.job_context(forged):
            logger.warning('message%s{"level": "CRITICAL"}', separator)
    finally:
        logger.removeHandler(handler)
    raw = stream.getvalue()
    assert raw.count("\n") == 1 and len(raw.splitlines()) == 1
    assert separator not in raw
    assert f"\\u{ord(separator):04x}" in raw
    line = json.loads(raw)
    assert line["jobId"] == forged
    assert line["message"] == f'message{separator}{{"level": "CRITICAL"}}'
