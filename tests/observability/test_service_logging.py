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
