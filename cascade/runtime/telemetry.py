"""OpenTelemetry tracing, configured by the standard ``OTEL_*`` variables.

- ``OTEL_SERVICE_NAME`` (default: the service's own name), ``OTEL_RESOURCE_ATTRIBUTES``.
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``: where spans go (OTLP
  over HTTP/protobuf; Jaeger ingests OTLP natively on 4318). Unset: nothing is exported, so
  only requests whose caller sent a sampled ``traceparent`` are recorded (``parentbased`` over
  ``always_off``); the others get non-recording spans, which still carry a trace id to the logs
  and the ``traceparent`` sent upstream. Recording spans nobody exports cost the gateway about
  a tenth of its CPU per request.
- ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``: with an exporter, default
  ``parentbased_traceidratio`` with ratio 1.0 (set a lower ratio at production rates).
- ``OTEL_BSP_MAX_QUEUE_SIZE``, ``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_BSP_EXPORT_TIMEOUT``: the
  batch processor's bounded queue. A full queue drops spans; an unreachable collector never
  blocks or fails a request, because export runs on the processor's own thread.
- The edge (the gateway) never lets a client's ``traceparent`` decide sampling: it starts a new
  root trace for every request and keeps the client's context as a span link
  (:func:`client_links`), so a client cannot force 100% tracing, nor pick the trace id that
  ratio sampling judges (issue 20, item 10). Services behind the gateway (MF, Triton) continue
  the trace they receive: their caller is the gateway, whose decision that is.
- ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``: default **128** here (the SDK's is 512). Encoding a batch
  to protobuf is Python code that holds the GIL: 512 spans took ~29 ms, a stall of the event
  loop that doubled the gateway's p99 at 100 req/s (D8 baseline 29-31 ms; 128: 15.8 ms).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
)

logger = logging.getLogger(__name__)

_TRACE_HEADERS = (b"traceparent", b"tracestate")

EXPORT_BATCH_SIZE = 128


def _sampler(*, exporting: bool) -> Sampler | None:
    # The SDK reads OTEL_TRACES_SAMPLER itself when it is set; our default is parent-based 100%
    # when spans are exported, parent-based never otherwise (nothing would read them).
    if os.environ.get("OTEL_TRACES_SAMPLER"):
        return None
    if not exporting:
        return ParentBased(ALWAYS_OFF)
    return ParentBasedTraceIdRatio(float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0")))


def _export_batch_size() -> int | None:
    """None lets the SDK read OTEL_BSP_MAX_EXPORT_BATCH_SIZE; unset, ours (within the queue)."""
    if os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"):
        return None
    try:
        queue = int(os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE") or 2048)
    except ValueError:
        queue = 2048  # the SDK warns and falls back to its default too
    return min(EXPORT_BATCH_SIZE, max(queue, 1))


def configure_tracing(*, service_name: str) -> TracerProvider:
    """Install a global TracerProvider for this process and return it (call ``shutdown`` on exit)."""
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", service_name)})
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    exporting = bool(endpoint) and os.environ.get("OTEL_TRACES_EXPORTER", "otlp") != "none"
    sampler = _sampler(exporting=exporting)
    provider = (
        TracerProvider(resource=resource, sampler=sampler)
        if sampler
        else TracerProvider(resource=resource)
    )
    if exporting:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # The exporter reads the endpoint, headers and timeout from OTEL_* itself.
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(), max_export_batch_size=_export_batch_size())
        )
        logger.info("tracing: exporting OTLP/HTTP to %s", endpoint)
    else:
        logger.info("tracing: no OTLP endpoint configured, spans are not exported")
    trace.set_tracer_provider(provider)
    return provider


def client_links(headers: Iterable[tuple[bytes, bytes]]) -> Sequence[trace.Link]:
    """The caller's W3C trace context (raw ASGI headers) as a span link, for a span that starts
    a new root trace: the client's trace stays findable from ours (and back, by the link's
    ids), but its ``sampled`` flag and trace id decide nothing. Empty when the request carries
    no valid ``traceparent`` (the common case costs one pass over the header names)."""
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in headers
        if name in _TRACE_HEADERS
    }
    if "traceparent" not in carrier:
        return ()
    context = trace.get_current_span(propagate.extract(carrier)).get_span_context()
    if not context.is_valid:
        return ()
    return (trace.Link(context, {"link.reason": "client traceparent (not trusted for sampling)"}),)
