"""JSON log lines: fields, extras, and the trace they belong to."""

from __future__ import annotations

import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from cascade.runtime.service_logging import JsonFormatter


def _line(msg: str = "hello", **extra: object) -> dict[str, object]:
    record = logging.makeLogRecord({"name": "t", "levelname": "INFO", "msg": msg, **extra})
    parsed: dict[str, object] = json.loads(JsonFormatter("gateway").format(record))
    return parsed


def test_line_has_the_standard_fields_and_extras() -> None:
    line = _line(tier="als")
    assert (line["level"], line["logger"], line["msg"], line["service"]) == (
        "info", "t", "hello", "gateway",
    )  # fmt: skip
    assert line["tier"] == "als"
    assert "trace_id" not in line  # outside a span


def test_line_inside_a_span_names_its_trace_and_span() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        line = _line()
        context = span.get_span_context()
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")
    assert len(str(line["trace_id"])) == 32


def test_lines_go_through_the_queue_with_their_span_and_traceback(capfd) -> None:
    import time

    from cascade.runtime import service_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        service_logging.configure_logging(service="gateway", level="INFO")
        tracer = TracerProvider().get_tracer("test")
        with tracer.start_as_current_span("work") as span:
            try:
                raise ValueError("boom")
            except ValueError:
                logging.getLogger("t").exception("failed %s", "here")
            context = span.get_span_context()
        logging.getLogger("httpx").info("a line per request: not wanted")
        deadline = time.monotonic() + 5
        lines: list[dict[str, object]] = []
        while time.monotonic() < deadline and not lines:
            lines = [json.loads(x) for x in capfd.readouterr().err.splitlines() if x]
            time.sleep(0.05)
    finally:
        service_logging.stop_logging()
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    [line] = lines  # httpx at INFO is dropped by its level
    assert line["msg"] == "failed here"
    assert line["trace_id"] == format(context.trace_id, "032x")  # taken on the caller's thread
    assert "ValueError: boom" in str(line["exc"])


def test_a_full_queue_drops_and_counts_instead_of_waiting() -> None:
    import queue

    from cascade.runtime.service_logging import _Enqueue

    handler = _Enqueue(queue.Queue(maxsize=1))
    record = logging.makeLogRecord({"name": "t", "msg": "x"})
    for _ in range(3):
        handler.handle(record)
    assert handler.dropped == 2
