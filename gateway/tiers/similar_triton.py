"""The similar-items primary: the ``two_tower_similar`` model on Triton, over gRPC.

Like ``gateway.tiers.triton`` (the user path's client; both on ``gateway.tiers.triton_grpc``):
Triton's generated gRPC stub on one ``grpc.aio`` channel, a ``ModelInferRequest`` copied from a
template built once, the tensors as raw bytes, the answer's raw bytes decoded here, defensively
(the answer is untrusted input).
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

import math
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2

from gateway.errors import UpstreamError
from gateway.tiers.similar_types import UnknownItem
from gateway.tiers.triton_grpc import TritonClient, raw_outputs
from gateway.tiers.types import TierResult
from gateway.tiers.validation import InvalidAnswer, Rule, from_lists
from two_tower import similar_contract as sc

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


class TritonSimilar(TritonClient):
    """Async Triton client for the similar-items model."""

    def __init__(self, *, url: str, model: str = sc.MODEL_NAME) -> None:
        super().__init__(url=url, model=model)
        self._template = _request_template(model)

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
        response = await self._infer(request, timeout_s, headers)
        return decode(response, k=k, model_version=f"{self.model}/{response.model_version or '1'}")

    def _rpc_error(self, exc: grpc.aio.AioRpcError) -> UpstreamError:
        """INVALID_ARGUMENT naming an unknown item is an answer (``UnknownItem``); any other
        status but a timeout or unavailability keeps at most 200 characters of its message."""
        code, details = exc.code(), str(exc.details() or "")
        if code == grpc.StatusCode.INVALID_ARGUMENT and sc.UNKNOWN_ITEM_MESSAGE in details:
            return UnknownItem("the item is unknown to the Two-Tower")
        if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
            return super()._rpc_error(exc)
        return UpstreamError(f"triton error {code.name}: {details[:200]}")


def decode(response: Any, *, k: int, model_version: str) -> TierResult:
    """A ``TierResult`` from a ``ModelInferResponse``, or ``InvalidAnswer`` naming the rule."""
    arrays: dict[str, np.ndarray] = {}
    for name, datatype, shape, raw in raw_outputs(response):
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
