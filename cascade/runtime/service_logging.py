"""Structured (JSON lines) logging for Cascade's services. Configured only in entry points.

Writing a log line never blocks the event loop: the service's code only puts the record on a
bounded in-memory queue (``_Enqueue``, microseconds); a listener thread formats and writes it.
When the queue is full (the disk or the collector is slower than the service logs), lines are
dropped and counted, rather than making requests wait: ``dropped_lines()`` tells how many, and the
next line that gets through says so. Third-party libraries log at WARNING and above by default
(httpx alone wrote a line per MF call at INFO, with the user id in its URL). Every line has its
credentials masked before it is queued (``cascade.runtime.redact``: URL passwords,
``password=...``), tracebacks included; a line written inside a request of the gateway carries
its ``request_id`` (``REQUEST_ID``), which is what logs name instead of a user id.
"""

from __future__ import annotations

import atexit
import contextvars
import copy
import json
import logging
import queue
import sys
import time
from logging.handlers import QueueHandler, QueueListener
from typing import Any

from opentelemetry import trace

from cascade.runtime.redact import redact

# Attributes every LogRecord has; anything else passed through ``extra=`` becomes a JSON field.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
QUEUE_SIZE = 10_000
THIRD_PARTY = (
    "httpx",
    "httpcore",
    "httpx_aiohttp",
    "aiohttp",
    "urllib3",
    "requests",
    "grpc",
    "tritonclient",
    "feast",
    "redis",
    "opentelemetry",
    "asyncio",
    "botocore",
    "boto3",
    "s3transfer",
    "fsspec",
    "filelock",
    "multipart",
    "python_multipart",
    "watchfiles",
)
# The request id of the request being served (the gateway sets it per request: each request
# runs in its own task, so the value never leaks into another request).
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_listener: QueueListener | None = None
_enqueue: _Enqueue | None = None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, service, plus any ``extra`` fields.

    Inside a span the line also carries ``trace_id`` and ``span_id`` (hex, as Jaeger shows them),
    so a log line leads to its trace and back. Taken when the line is logged (``_Enqueue``), since
    the writer thread runs outside the request's context.
    """

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "service": self._service,
        }
        if not hasattr(record, "trace_id"):
            _add_span_context(record)
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, default=str)


def _add_span_context(record: logging.LogRecord) -> None:
    request_id = REQUEST_ID.get()
    if request_id is not None and not hasattr(record, "request_id"):
        record.request_id = request_id
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        record.trace_id = format(context.trace_id, "032x")
        record.span_id = format(context.span_id, "016x")


class _Enqueue(QueueHandler):
    """Puts a self-contained copy of each record on the queue; never waits for room."""

    def __init__(self, q: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(q)
        self.dropped = 0
        self._reported = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record = copy.copy(record)
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info:  # format the traceback now: the frames may be gone later
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        _add_span_context(record)
        if self.dropped > self._reported:
            record.msg += f" ({self.dropped - self._reported} log lines dropped before this one)"
            self._reported = self.dropped
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


def configure_logging(*, service: str, level: str = "INFO", json_logs: bool = True) -> None:
    """Route the root logger, through the queue, to stderr (JSON lines unless ``json_logs``)."""
    global _listener, _enqueue
    writer = logging.StreamHandler(sys.stderr)
    if json_logs:
        writer.setFormatter(JsonFormatter(service))
    else:
        writer.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    stop_logging()
    records: queue.Queue[logging.LogRecord] = queue.Queue(maxsize=QUEUE_SIZE)
    _enqueue = _Enqueue(records)
    _listener = QueueListener(records, writer, respect_handler_level=False)
    _listener.start()
    atexit.register(stop_logging)  # flush what is queued when the process exits
    root = logging.getLogger()
    root.handlers[:] = [_enqueue]
    root.setLevel(level.upper())
    # uvicorn's own loggers propagate to ours, so its lines are JSON too.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def stop_logging() -> None:
    """Write what is queued and stop the writer thread (idempotent)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


def dropped_lines() -> int:
    """Lines dropped because the queue was full, since logging was configured."""
    return _enqueue.dropped if _enqueue is not None else 0
