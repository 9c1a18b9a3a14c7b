"""What the Triton tiers share (``gateway.tiers.triton``, ``gateway.tiers.similar_triton``).

One ``grpc.aio`` channel to Triton's generated stub (shipped in ``tritonclient.grpc``), the
model's ready probe, the ``ModelInfer`` call under the gRPC deadline and a hard
``asyncio.timeout``, its failures as ``UpstreamTimeout`` / ``UpstreamUnavailable`` /
``UpstreamError``, and the first, defensive read of an answer's outputs (the answer is
untrusted input).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.tiers.validation import InvalidAnswer, Rule

# gRPC retries a lost connection with exponential backoff up to 120 s by default: far too slow
# to notice that Triton is back. Keep the reconnect backoff short.
GRPC_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 2_000),
]


class TritonClient:
    """One model on Triton over one channel; ``_stub`` is the generated stub (tests swap it)."""

    def __init__(self, *, url: str, model: str) -> None:
        self.url = url
        self.model = model
        self._channel = grpc.aio.insecure_channel(url, options=GRPC_CHANNEL_ARGS)
        self._stub: Any = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def ready(self, *, timeout_s: float = 0.5) -> bool:
        """Whether the model answers ready (for /readyz details; never gates readiness)."""
        request = service_pb2.ModelReadyRequest(name=self.model)
        try:
            async with asyncio.timeout(timeout_s):
                answer = await self._stub.ModelReady(request, timeout=timeout_s)
        except (grpc.RpcError, TimeoutError, OSError):
            return False
        return bool(answer.ready)

    async def _infer(
        self, request: Any, timeout_s: float, headers: Mapping[str, str] | None
    ) -> Any:
        """Triton's ``ModelInferResponse``; ``headers`` (the ``traceparent``) go as metadata."""
        metadata = tuple((key.lower(), value) for key, value in (headers or {}).items())
        try:
            async with asyncio.timeout(timeout_s):
                response = await self._stub.ModelInfer(
                    request, timeout=timeout_s, metadata=metadata
                )
        except TimeoutError as exc:
            raise UpstreamTimeout(f"triton did not answer in {timeout_s * 1000:.0f} ms") from exc
        except grpc.aio.AioRpcError as exc:
            raise self._rpc_error(exc) from exc
        return response

    def _rpc_error(self, exc: grpc.aio.AioRpcError) -> UpstreamError:
        """The error a failed call raises (a subclass may read some statuses as answers)."""
        code = exc.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return UpstreamTimeout(f"triton deadline exceeded: {exc.details()}")
        if code == grpc.StatusCode.UNAVAILABLE:
            return UpstreamUnavailable(f"triton unavailable: {exc.details()}")
        return UpstreamError(f"triton error {code.name}: {exc.details()}")


def raw_outputs(response: Any) -> Iterator[tuple[str, str, list[int], bytes]]:
    """Each output of a ``ModelInferResponse`` as (name, datatype, shape, raw bytes); a
    ``format`` error when the outputs and their raw contents do not pair up."""
    raws = response.raw_output_contents
    if len(raws) != len(response.outputs):
        raise InvalidAnswer(
            Rule.FORMAT, f"{len(response.outputs)} outputs but {len(raws)} raw contents"
        )
    for entry, raw in zip(response.outputs, raws, strict=True):
        yield entry.name, entry.datatype, [int(d) for d in entry.shape], raw
