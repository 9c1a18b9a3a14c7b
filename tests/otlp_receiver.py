"""A tiny OTLP/HTTP trace receiver for tests: what Jaeger's 4318 port does, in memory.

It accepts ``POST /v1/traces`` in both encodings a real collector accepts:

- ``application/x-protobuf``: an ``ExportTraceServiceRequest`` (the Python SDK's exporter),
  decoded with ``opentelemetry-proto``;
- ``application/json``: the OTLP/JSON mapping (Triton's opentelemetry-cpp exporter). Ids are hex
  strings in OTLP/JSON; base64 (protobuf's generic JSON mapping) is read too. Keys may be
  lowerCamelCase or snake_case.

Either body may be gzip-compressed (``Content-Encoding: gzip``). Every span is flattened into a
:class:`ReceivedSpan` with its trace id, span id, parent id, name, ``service.name`` and attributes.

Usage::

    with OtlpReceiver() as receiver:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
        ...
        spans = receiver.wait_for(lambda spans: any(s.name == "compute" for s in spans))
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

TRACES_PATH = "/v1/traces"


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as a collector stores it. Ids are lowercase hex; ``parent_span_id`` is None for a root."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    service_name: str
    attributes: dict[str, Any] = field(default_factory=dict)
    encoding: str = "protobuf"  # or "json": how the exporter posted it


# --- protobuf ---------------------------------------------------------------------------------


def _any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def _attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in items if isinstance(kv, KeyValue)}


def decode_protobuf(body: bytes) -> list[ReceivedSpan]:
    """Spans from a serialized ``ExportTraceServiceRequest``."""
    request = ExportTraceServiceRequest.FromString(body)
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        service = str(_attributes(resource_spans.resource.attributes).get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                parent = span.parent_span_id.hex() or None
                spans.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=parent,
                        name=span.name,
                        service_name=service,
                        attributes=_attributes(span.attributes),
                        encoding="protobuf",
                    )
                )
    return spans


# --- JSON -------------------------------------------------------------------------------------


def _get(obj: dict[str, Any], camel: str, snake: str, default: Any = None) -> Any:
    return obj.get(camel, obj.get(snake, default))


def _json_id(raw: Any, *, size: int) -> str | None:
    """An OTLP/JSON id: hex of ``size`` bytes, or base64 of them. Empty or all zeros: None."""
    if not raw:
        return None
    text = str(raw)
    if len(text) == 2 * size:
        try:
            bytes.fromhex(text)
            value = text.lower()
        except ValueError:
            value = base64.b64decode(text).hex()
    else:
        try:
            value = base64.b64decode(text, validate=True).hex()
        except binascii.Error as exc:
            raise ValueError(f"id {text!r} is neither hex nor base64") from exc
    return None if set(value) <= {"0"} else value


def _json_any_value(value: dict[str, Any]) -> Any:
    for camel, snake in (
        ("stringValue", "string_value"),
        ("boolValue", "bool_value"),
        ("doubleValue", "double_value"),
        ("bytesValue", "bytes_value"),
    ):
        if camel in value or snake in value:
            return _get(value, camel, snake)
    if "intValue" in value or "int_value" in value:
        return int(_get(value, "intValue", "int_value"))  # int64 is a JSON string in OTLP/JSON
    if "arrayValue" in value or "array_value" in value:
        values = _get(value, "arrayValue", "array_value").get("values", [])
        return [_json_any_value(v) for v in values]
    if "kvlistValue" in value or "kvlist_value" in value:
        return _json_attributes(_get(value, "kvlistValue", "kvlist_value").get("values", []))
    return None


def _json_attributes(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {item["key"]: _json_any_value(item.get("value", {})) for item in items}


def decode_json(body: bytes) -> list[ReceivedSpan]:
    """Spans from an OTLP/JSON ``ExportTraceServiceRequest``."""
    request = json.loads(body)
    spans: list[ReceivedSpan] = []
    for resource_spans in _get(request, "resourceSpans", "resource_spans", []):
        resource = resource_spans.get("resource", {})
        service = str(_json_attributes(resource.get("attributes", [])).get("service.name", ""))
        # "instrumentationLibrarySpans" is the pre-1.0 name of scopeSpans.
        scopes = _get(resource_spans, "scopeSpans", "scope_spans") or _get(
            resource_spans, "instrumentationLibrarySpans", "instrumentation_library_spans", []
        )
        for scope_spans in scopes:
            for span in scope_spans.get("spans", []):
                trace_id = _json_id(_get(span, "traceId", "trace_id"), size=16)
                span_id = _json_id(_get(span, "spanId", "span_id"), size=8)
                if trace_id is None or span_id is None:
                    raise ValueError(f"span without ids: {span}")
                spans.append(
                    ReceivedSpan(
                        trace_id=trace_id,
                        span_id=span_id,
                        parent_span_id=_json_id(
                            _get(span, "parentSpanId", "parent_span_id"), size=8
                        ),
                        name=str(span.get("name", "")),
                        service_name=service,
                        attributes=_json_attributes(span.get("attributes", [])),
                        encoding="json",
                    )
                )
    return spans


# --- the server -------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean

    def do_POST(self) -> None:
        if self.path.split("?")[0] != TRACES_PATH:
            self._reply(404, b"", "text/plain")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            if content_type == "application/json":
                spans = decode_json(body)
                reply, reply_type = b"{}", "application/json"
            else:
                spans = decode_protobuf(body)
                reply, reply_type = (
                    ExportTraceServiceResponse().SerializeToString(),
                    "application/x-protobuf",
                )
        except (DecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.server.receiver.errors.append(f"{content_type}: {exc}")
            self._reply(400, str(exc).encode(), "text/plain")
            return
        self.server.receiver.add(spans)
        self._reply(200, reply, reply_type)

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: OtlpReceiver


class OtlpReceiver:
    """An OTLP/HTTP trace endpoint on 127.0.0.1 (free port by default) that keeps every span."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port), _Handler)
        self._server.receiver = self
        self._lock = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self.errors: list[str] = []  # payloads that could not be decoded
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """The value for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the SDK appends ``/v1/traces``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def traces_url(self) -> str:
        return f"{self.endpoint}{TRACES_PATH}"

    def start(self) -> OtlpReceiver:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otlp-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(self, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self._spans.extend(spans)
            self._lock.notify_all()

    def spans(self) -> list[ReceivedSpan]:
        """A copy of every span received so far."""
        with self._lock:
            return list(self._spans)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        """The spans of one trace."""
        return [s for s in self.spans() if s.trace_id == trace_id]

    def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], bool], *, timeout: float = 10.0
    ) -> list[ReceivedSpan]:
        """Block until ``predicate(spans)`` is true; return the spans, or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(list(self._spans)):
                left = deadline - time.monotonic()
                if left <= 0:
                    names = sorted({f"{s.service_name}:{s.name}" for s in self._spans})
                    raise TimeoutError(
                        f"spans not received in {timeout:.0f}s; got {names}; decode errors {self.errors}"
                    )
                self._lock.wait(left)
            return list(self._spans)
