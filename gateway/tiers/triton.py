"""The primary tier: the Two-Tower model on Triton, over gRPC (KServe v2 protocol).

The call goes through Triton's generated gRPC stub (shipped in ``tritonclient.grpc``) on one
``grpc.aio`` channel, not through tritonclient's ``InferenceServerClient``: the request is a
``ModelInferRequest`` copied from a template built once, with the tensors as raw bytes, and the
answer's raw bytes are decoded here. tritonclient's per-call ``InferInput`` objects, their numpy
conversions and its result wrapper cost about a tenth of the gateway's CPU per request.

Tensors follow ``two_tower.contract``. The per-call timeout is the gRPC deadline and a hard
``asyncio.timeout`` around the call. The caller passes the ``traceparent`` header so Triton's
spans join the request's trace. Errors become ``UpstreamTimeout`` / ``UpstreamUnavailable`` /
``UpstreamError``; an answer that is not the contract's outputs becomes ``InvalidAnswer``
(``gateway.tiers.validation``).

``recommend_many`` (the batch route) sends many users as the rows of one request (at most the
contract's ``MAX_BATCH_SIZE``), for one model version; each row's answer is decoded on its own,
so one bad row does not cost the others.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.tiers.types import NO_FILTER, CategoryFilter, PrimaryRow, TierResult, UserFeatures
from gateway.tiers.validation import InvalidAnswer, Rule, decode_triton, decode_triton_rows
from two_tower import contract

logger = logging.getLogger(__name__)

# gRPC retries a lost connection with exponential backoff up to 120 s by default: far too slow
# to notice that Triton is back. Keep the reconnect backoff short.
_GRPC_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 2_000),
]


def input_arrays(
    features: UserFeatures,
    *,
    k: int,
    exclude: Sequence[int],
    categories: CategoryFilter = NO_FILTER,
) -> dict[str, np.ndarray]:
    """The contract's input tensors for one user, by name, each of shape ``[1, *dims]``:
    the online store's values as it holds them, the request's ``exclude`` and category filter
    apart (category names as ``contract.category_code``, right-padded with -1)."""
    rows: dict[str, list[int]] = {
        contract.USER_ID: [features.user_id],
        contract.AGE_BUCKET: [features.age_bucket],
        contract.COUNTRY: [contract.country_code(features.country)],
        contract.INTERACTION_COUNT: [features.interaction_count],
        contract.RECENT_ITEMS: contract.pad_items(
            list(features.recent_items), contract.RECENT_ITEMS_LEN
        ),
        contract.SEEN_ITEMS: contract.pad_items(list(features.seen_items), contract.MAX_SEEN_ITEMS),
        contract.EXCLUDE_ITEMS: contract.pad_items(list(exclude), contract.MAX_EXCLUDE_ITEMS),
        contract.K: [k],
        contract.INCLUDE_CATEGORIES: contract.pad_codes(categories.include),
        contract.EXCLUDE_CATEGORIES: contract.pad_codes(categories.exclude),
    }
    return {
        spec.name: np.array([rows[spec.name]], dtype=spec.numpy_dtype) for spec in contract.INPUTS
    }


def build_inputs(
    features: UserFeatures,
    *,
    k: int,
    exclude: Sequence[int],
    module: Any,
    categories: CategoryFilter = NO_FILTER,
) -> list[Any]:
    """The same tensors as tritonclient ``InferInput`` objects (``module``: tritonclient.grpc or
    .http), for the benchmarks and tests that call Triton directly."""
    values = input_arrays(features, k=k, exclude=exclude, categories=categories)
    inputs = []
    for spec in contract.INPUTS:
        tensor = module.InferInput(spec.name, list(values[spec.name].shape), spec.dtype)
        tensor.set_data_from_numpy(values[spec.name])
        inputs.append(tensor)
    return inputs


DATASET_PARAMETER = "cascade_dataset"  # checked by the model (triton_models/two_tower/model.py)


def _request_template(model: str, dataset_id: str = "") -> service_pb2.ModelInferRequest:
    """Everything of a request but the tensors' bytes: names, datatypes, shapes, outputs, and
    the data set the gateway serves (``dataset_id``; the model refuses a version trained on
    another)."""
    request = service_pb2.ModelInferRequest(model_name=model)
    if dataset_id:
        request.parameters[DATASET_PARAMETER].string_param = dataset_id
    for spec in contract.INPUTS:
        request.inputs.add(name=spec.name, datatype=spec.dtype, shape=[1, *spec.dims])
    for out in contract.OUTPUTS:
        request.outputs.add(name=out.name)
    return request


class TritonPrimary:
    """Async Triton client for the Two-Tower model."""

    def __init__(self, *, url: str, model: str = contract.MODEL_NAME, dataset_id: str = "") -> None:
        self.url = url
        self.model = model
        self._channel = grpc.aio.insecure_channel(url, options=_GRPC_CHANNEL_ARGS)
        self._stub: Any = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._template = _request_template(model, dataset_id)

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

    async def recommend(
        self,
        features: UserFeatures,
        *,
        k: int,
        exclude: Sequence[int],
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        version: int | None = None,
        categories: CategoryFilter = NO_FILTER,
    ) -> TierResult:
        """Top-k for one user; raises UpstreamTimeout / UpstreamUnavailable / UpstreamError.

        ``version``: the Triton model version to ask (a rollout's stable or candidate); None
        lets Triton pick its newest. A version Triton does not serve is an ``UpstreamError``.
        ``categories``: the filter the model applies inside its top-k (a version exported
        before the filter ignores it; the chain's answer check refuses that answer)."""
        request = service_pb2.ModelInferRequest()
        request.CopyFrom(self._template)
        if version is not None:
            request.model_version = str(version)
        values = input_arrays(features, k=k, exclude=exclude, categories=categories)
        request.raw_input_contents.extend(values[spec.name].tobytes() for spec in contract.INPUTS)
        response = await self._infer(request, timeout_s, headers)
        answered = response.model_version
        return decode_triton(
            _outputs(response), k=k, model_version=f"{self.model}/{answered or '1'}"
        )

    async def recommend_many(
        self,
        rows: Sequence[PrimaryRow],
        *,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        version: int | None = None,
    ) -> list[TierResult | Exception]:
        """Top-k for each row's user in one request (rows of the same model version); one
        answer per row, in order: a ``TierResult`` or the ``InvalidAnswer`` that row broke. A
        failure of the call itself (timeout, error, outputs not the contract's) raises."""
        if not rows or len(rows) > contract.MAX_BATCH_SIZE:
            raise ValueError(f"1..{contract.MAX_BATCH_SIZE} rows per call, got {len(rows)}")
        request = service_pb2.ModelInferRequest()
        request.CopyFrom(self._template)
        if version is not None:
            request.model_version = str(version)
        for tensor in request.inputs:
            tensor.shape[0] = len(rows)
        per_row = [
            input_arrays(r.features, k=r.k, exclude=r.exclude, categories=r.categories)
            for r in rows
        ]
        request.raw_input_contents.extend(
            b"".join(values[spec.name].tobytes() for values in per_row) for spec in contract.INPUTS
        )
        response = await self._infer(request, timeout_s, headers)
        answered = response.model_version
        return list(
            decode_triton_rows(
                _outputs(response),
                ks=[r.k for r in rows],
                model_version=f"{self.model}/{answered or '1'}",
            )
        )

    async def _infer(
        self, request: Any, timeout_s: float, headers: Mapping[str, str] | None
    ) -> Any:
        metadata = tuple((key.lower(), value) for key, value in (headers or {}).items())
        try:
            async with asyncio.timeout(timeout_s):
                response = await self._stub.ModelInfer(
                    request, timeout=timeout_s, metadata=metadata
                )
        except TimeoutError as exc:
            raise UpstreamTimeout(f"triton did not answer in {timeout_s * 1000:.0f} ms") from exc
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise UpstreamTimeout(f"triton deadline exceeded: {exc.details()}") from exc
            if code == grpc.StatusCode.UNAVAILABLE:
                raise UpstreamUnavailable(f"triton unavailable: {exc.details()}") from exc
            raise UpstreamError(f"triton error {code.name}: {exc.details()}") from exc
        return response


_NUMPY = {spec.dtype: np.dtype(spec.numpy_dtype) for spec in contract.OUTPUTS}


def _outputs(response: Any) -> dict[str, tuple[str, list[int], np.ndarray]]:
    """Each output's (datatype, shape, array), read defensively: the answer is untrusted.

    ``response``: the gRPC ``ModelInferResponse``. Only the contract's datatypes are decoded; an
    output named twice, another datatype, a shape that is not a list of non-negative sizes, or
    raw bytes that do not fill the announced shape are a ``format`` error, never a library
    exception.
    """
    raws = response.raw_output_contents
    if len(raws) != len(response.outputs):
        raise InvalidAnswer(
            Rule.FORMAT, f"{len(response.outputs)} outputs but {len(raws)} raw contents"
        )
    outputs: dict[str, tuple[str, list[int], np.ndarray]] = {}
    for entry, raw in zip(response.outputs, raws, strict=True):
        name, datatype, shape = entry.name, entry.datatype, [int(d) for d in entry.shape]
        if not name or name in outputs:
            raise InvalidAnswer(Rule.FORMAT, f"output {name!r} unnamed or named twice")
        dtype = _NUMPY.get(datatype)
        if dtype is None:
            raise InvalidAnswer(Rule.FORMAT, f"output {name} has datatype {datatype!r}")
        if any(d < 0 for d in shape) or len(raw) != math.prod(shape) * dtype.itemsize:
            raise InvalidAnswer(
                Rule.FORMAT, f"output {name}: {len(raw)} bytes do not fill shape {shape}"
            )
        outputs[name] = (datatype, shape, np.frombuffer(raw, dtype=dtype).reshape(shape))
    return outputs
