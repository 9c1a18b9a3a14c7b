"""The similar-items primary: the ``two_tower_similar`` model on Triton, over gRPC.

Like ``gateway.tiers.triton`` (the user path's client): Triton's generated gRPC stub on one
``grpc.aio`` channel, a ``ModelInferRequest`` copied from a template built once, the tensors as
raw bytes, the answer's raw bytes decoded here, defensively (the answer is untrusted input).
Tensors follow ``two_tower.similar_contract``: ``item_id`` and ``k`` in, ``item_ids`` and
``scores`` out (the optional ``exclude_items`` is not sent). The per-call timeout is the gRPC
deadline and a hard ``asyncio.timeout`` around the call.

Errors: ``UpstreamTimeout`` / ``UpstreamUnavailable`` / ``UpstreamError``; Triton's
INVALID_ARGUMENT whose message starts with ``similar_contract.UNKNOWN_ITEM_MESSAGE`` is
``UnknownItem`` (the model does not know the item: a valid answer); an answer that is not the
contract's outputs, one row of exactly k entries (``-1`` / ``-inf`` padding only as a tail), ids
in ``[0, 2**63)`` and finite scores is ``InvalidAnswer`` (``gateway.tiers.validation``'s rules).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.tiers.similar_types import UnknownItem
from gateway.tiers.types import TierResult
from gateway.tiers.validation import InvalidAnswer, Rule, from_lists
from two_tower import similar_contract as sc

# As the user path's channel (gateway.tiers.triton): a short reconnect backoff, so a Triton that
# is back is noticed within a second, not after gRPC's default of up to 120 s.
_GRPC_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 2_000),
]
_SENT = (sc.ITEM_ID, sc.K)  # the inputs the gateway sends (exclude_items is optional)
_SPECS = {spec.name: spec for spec in sc.INPUTS}
_NUMPY = {spec.name: np.dtype(spec.numpy_dtype) for spec in sc.OUTPUTS}


def _request_template(model: str) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    for name in _SENT:
        spec = _SPECS[name]
        request.inputs.add(name=spec.name, datatype=spec.dtype, shape=[1, *spec.dims])
    for out in sc.OUTPUTS:
        request.outputs.add(name=out.name)
    return request


def input_bytes(item_id: int, k: int) -> list[bytes]:
    """The raw contents of the sent inputs, in the template's order."""
    return [
        np.array([[item_id]], dtype=_SPECS[sc.ITEM_ID].numpy_dtype).tobytes(),
        np.array([[k]], dtype=_SPECS[sc.K].numpy_dtype).tobytes(),
    ]


class TritonSimilar:
    """Async Triton client for the similar-items model."""

    def __init__(self, *, url: str, model: str = sc.MODEL_NAME) -> None:
        self.url = url
        self.model = model
        self._channel = grpc.aio.insecure_channel(url, options=_GRPC_CHANNEL_ARGS)
        self._stub: Any = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._template = _request_template(model)

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

    async def similar(
        self,
        item_id: int,
        *,
        k: int,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> TierResult:
        """The k items nearest to ``item_id``; raises the Upstream* errors or ``UnknownItem``."""
        request = service_pb2.ModelInferRequest()
        request.CopyFrom(self._template)
        request.raw_input_contents.extend(input_bytes(item_id, k))
        metadata = tuple((key.lower(), value) for key, value in (headers or {}).items())
        try:
            async with asyncio.timeout(timeout_s):
                response = await self._stub.ModelInfer(
                    request, timeout=timeout_s, metadata=metadata
                )
        except TimeoutError as exc:
            raise UpstreamTimeout(f"triton did not answer in {timeout_s * 1000:.0f} ms") from exc
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), str(exc.details() or "")
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise UpstreamTimeout(f"triton deadline exceeded: {details}") from exc
            if code == grpc.StatusCode.UNAVAILABLE:
                raise UpstreamUnavailable(f"triton unavailable: {details}") from exc
            if code == grpc.StatusCode.INVALID_ARGUMENT and sc.UNKNOWN_ITEM_MESSAGE in details:
                raise UnknownItem("the item is unknown to the Two-Tower") from exc
            raise UpstreamError(f"triton error {code.name}: {details[:200]}") from exc
        return decode(response, k=k, model_version=f"{self.model}/{response.model_version or '1'}")


def decode(response: Any, *, k: int, model_version: str) -> TierResult:
    """A ``TierResult`` from a ``ModelInferResponse``, or ``InvalidAnswer`` naming the rule."""
    raws = response.raw_output_contents
    if len(raws) != len(response.outputs):
        raise InvalidAnswer(
            Rule.FORMAT, f"{len(response.outputs)} outputs but {len(raws)} raw contents"
        )
    arrays: dict[str, np.ndarray] = {}
    for entry, raw in zip(response.outputs, raws, strict=True):
        name, datatype, shape = entry.name, entry.datatype, [int(d) for d in entry.shape]
        spec = next((s for s in sc.OUTPUTS if s.name == name), None)
        if spec is None or name in arrays:
            raise InvalidAnswer(Rule.FORMAT, f"output {name!r} unexpected or named twice")
        if datatype != spec.dtype:
            raise InvalidAnswer(Rule.FORMAT, f"{name} is {datatype!r}, not {spec.dtype}")
        dtype = _NUMPY[name]
        if shape != [1, k] or len(raw) != math.prod(shape) * dtype.itemsize:
            raise InvalidAnswer(
                Rule.FORMAT, f"{name}: shape {shape} ({len(raw)} bytes), not [1, {k}]"
            )
        arrays[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)[0]
    if sorted(arrays) != sorted(s.name for s in sc.OUTPUTS):
        raise InvalidAnswer(Rule.FORMAT, f"outputs {sorted(arrays)} are not the contract's")
    ids, scores = arrays[sc.ITEM_IDS], arrays[sc.SCORES]
    pad = ids == sc.PAD_ITEM
    n = int(np.argmax(pad)) if bool(pad.any()) else k  # the first pad; all after must pad too
    if not bool(pad[n:].all()) or not bool(np.isneginf(scores[n:]).all()):
        raise InvalidAnswer(Rule.ID, "padding (-1 with -inf) is not only a tail of the row")
    return from_lists(ids[:n].tolist(), scores[:n].tolist(), model_version=model_version)
