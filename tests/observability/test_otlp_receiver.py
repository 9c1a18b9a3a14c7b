"""The test OTLP receiver decodes what real exporters send: the Python SDK's protobuf and
Triton's OTLP/JSON (the JSON payload below is trimmed from one Triton 2.51 posted here)."""

from __future__ import annotations

import base64
import gzip
import json
import urllib.error
import urllib.request

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.otlp_receiver import OtlpReceiver, decode_json

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"

TRITON_JSON = {
    "resourceSpans": [
        {
            "resource": {
                "attributes": [
                    {"key": "telemetry.sdk.language", "value": {"stringValue": "cpp"}},
                    {"key": "service.name", "value": {"stringValue": "triton"}},
                ]
            },
            "scopeSpans": [
                {
                    "scope": {"name": "triton-server"},
                    "spans": [
                        {
                            "kind": 2,
                            "name": "compute",
                            "parentSpanId": "4346a3cf7e5c598f",
                            "spanId": "df262ef1210563db",
                            "startTimeUnixNano": "1795971555217985267",
                            "endTimeUnixNano": "1795971555298076682",
                            "traceId": TRACE_ID,
                        },
                        {
                            "attributes": [
                                {"key": "triton.model_name", "value": {"stringValue": "two_tower"}},
                                {"key": "triton.model_version", "value": {"intValue": "1"}},
                            ],
                            "name": "two_tower",
                            "parentSpanId": "ec24b312a8a07bb3",
                            "spanId": "4346a3cf7e5c598f",
                            "traceId": TRACE_ID,
                        },
                        {
                            "name": "InferRequest",
                            "parentSpanId": "b7ad6b7169203331",
                            "spanId": "ec24b312a8a07bb3",
                            "traceId": TRACE_ID,
                        },
                    ],
                }
            ],
        }
    ]
}


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)


def test_protobuf_from_the_python_sdk_keeps_ids_parents_service_and_attributes() -> None:
    with OtlpReceiver() as receiver:
        provider = TracerProvider(resource=Resource.create({"service.name": "gateway"}))
        provider.add_span_processor(
            SimpleSpanProcessor(
                OTLPSpanExporter(endpoint=receiver.traces_url, compression=Compression.Gzip)
            )
        )
        tracer = provider.get_tracer("test")
        with (
            tracer.start_as_current_span("GET /v1/recommendations") as root,
            tracer.start_as_current_span("triton.infer", attributes={"k": 20, "tier": "two_tower"}),
        ):
            pass
        provider.shutdown()
        spans = receiver.wait_for(lambda s: len(s) == 2)
    by_name = {s.name: s for s in spans}
    parent, child = by_name["GET /v1/recommendations"], by_name["triton.infer"]
    assert parent.trace_id == child.trace_id == format(root.get_span_context().trace_id, "032x")
    assert parent.parent_span_id is None and child.parent_span_id == parent.span_id
    assert {s.service_name for s in spans} == {"gateway"}
    assert child.attributes == {"k": 20, "tier": "two_tower"}
    assert {s.encoding for s in spans} == {"protobuf"}


def test_json_from_triton_hex_ids_and_parent_chain() -> None:
    with OtlpReceiver() as receiver:
        status = _post(
            receiver.traces_url,
            json.dumps(TRITON_JSON).encode(),
            {"Content-Type": "application/json"},
        )
        spans = receiver.wait_for(lambda s: len(s) == 3)
    assert status == 200
    by_name = {s.name: s for s in spans}
    assert {s.trace_id for s in spans} == {TRACE_ID}
    assert by_name["InferRequest"].parent_span_id == "b7ad6b7169203331"  # the caller's span
    assert by_name["two_tower"].parent_span_id == by_name["InferRequest"].span_id
    assert by_name["compute"].parent_span_id == by_name["two_tower"].span_id
    assert by_name["two_tower"].attributes == {
        "triton.model_name": "two_tower",
        "triton.model_version": 1,
    }
    assert {s.service_name for s in spans} == {"triton"}


def test_json_with_base64_ids_snake_case_and_gzip() -> None:
    payload = {
        "resource_spans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"string_value": "mf"}}]
                },
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "name": "root",
                                "trace_id": base64.b64encode(bytes.fromhex(TRACE_ID)).decode(),
                                "span_id": base64.b64encode(
                                    bytes.fromhex("00f067aa0ba902b7")
                                ).decode(),
                                "parent_span_id": "",
                            }
                        ]
                    }
                ],
            }
        ]
    }
    with OtlpReceiver() as receiver:
        status = _post(
            receiver.traces_url,
            gzip.compress(json.dumps(payload).encode()),
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        (span,) = receiver.wait_for(lambda s: len(s) == 1)
    assert status == 200
    assert (span.trace_id, span.span_id, span.parent_span_id) == (
        TRACE_ID,
        "00f067aa0ba902b7",
        None,
    )
    assert span.service_name == "mf"


def test_undecodable_payloads_are_refused_and_recorded() -> None:
    with OtlpReceiver() as receiver:
        assert (
            _post(
                receiver.traces_url, b"\xff\x00garbage", {"Content-Type": "application/x-protobuf"}
            )
            == 400
        )
        assert _post(receiver.traces_url, b"{not json", {"Content-Type": "application/json"}) == 400
        assert (
            _post(f"{receiver.endpoint}/v1/metrics", b"", {"Content-Type": "application/json"})
            == 404
        )
        assert receiver.spans() == [] and len(receiver.errors) == 2
        with pytest.raises(TimeoutError, match="decode errors"):
            receiver.wait_for(lambda s: len(s) > 0, timeout=0.2)


def test_decode_json_rejects_spans_without_ids() -> None:
    bad = {
        "resourceSpans": [{"scopeSpans": [{"spans": [{"name": "x", "traceId": "", "spanId": ""}]}]}]
    }
    with pytest.raises(ValueError, match="without ids"):
        decode_json(json.dumps(bad).encode())
