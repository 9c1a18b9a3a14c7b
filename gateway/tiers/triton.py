"""The primary tier: the Two-Tower model on Triton, through tritonclient's async gRPC client.

Tensors follow ``two_tower.contract``. The per-call timeout is applied both by the client
(gRPC deadline) and by ``asyncio.wait_for`` (a hard bound). The caller
passes the ``traceparent`` header so Triton's spans join the request's trace. Errors become
``UpstreamTimeout`` / ``UpstreamUnavailable`` / ``UpstreamError``; an answer that is not the
contract's outputs becomes ``InvalidAnswer`` (``gateway.tiers.validation``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tritonclient.grpc as grpc
import tritonclient.grpc.aio as aio
from tritonclient.utils import InferenceServerException

from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.tiers.types import TierResult, UserFeatures
from gateway.tiers.validation import InvalidAnswer, Rule, decode_triton
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


def build_inputs(
    features: UserFeatures, *, k: int, exclude: Sequence[int], module: Any
) -> list[Any]:
    """The contract's input tensors for one user (``module``: tritonclient.grpc or .http)."""
    seen = list(dict.fromkeys([*exclude, *features.seen_items]))
    rows: dict[str, list[int]] = {
        contract.USER_ID: [features.user_id],
        contract.AGE_BUCKET: [features.age_bucket],
        contract.COUNTRY: [contract.country_code(features.country)],
        contract.INTERACTION_COUNT: [features.interaction_count],
        contract.RECENT_ITEMS: contract.pad_items(
            list(features.recent_items), contract.RECENT_ITEMS_LEN
        ),
        contract.SEEN_ITEMS: contract.pad_items(seen, contract.MAX_SEEN_ITEMS),
        contract.K: [k],
    }
    values = {
        spec.name: np.array([rows[spec.name]], dtype=spec.numpy_dtype) for spec in contract.INPUTS
    }
    inputs = []
    for spec in contract.INPUTS:
        tensor = module.InferInput(spec.name, list(values[spec.name].shape), spec.dtype)
        tensor.set_data_from_numpy(values[spec.name])
        inputs.append(tensor)
    return inputs


class TritonPrimary:
    """Async Triton client for the Two-Tower model."""

    def __init__(self, *, url: str, model: str = contract.MODEL_NAME) -> None:
        self.url = url
        self.model = model
        self._client: Any = aio.InferenceServerClient(url=url, channel_args=_GRPC_CHANNEL_ARGS)
        self._outputs = [grpc.InferRequestedOutput(spec.name) for spec in contract.OUTPUTS]

    async def close(self) -> None:
        await self._client.close()

    async def ready(self, *, timeout_s: float = 0.5) -> bool:
        """Whether the model answers ready (for /readyz details; never gates readiness)."""
        try:
            return bool(await asyncio.wait_for(self._client.is_model_ready(self.model), timeout_s))
        except (InferenceServerException, TimeoutError, OSError):
            return False

    async def recommend(
        self,
        features: UserFeatures,
        *,
        k: int,
        exclude: Sequence[int],
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> TierResult:
        """Top-k for one user; raises UpstreamTimeout / UpstreamUnavailable / UpstreamError."""
        inputs = build_inputs(features, k=k, exclude=exclude, module=grpc)
        call = self._client.infer(
            self.model,
            inputs,
            outputs=self._outputs,
            headers=dict(headers or {}),
            client_timeout=timeout_s,
        )
        try:
            result = await asyncio.wait_for(call, timeout_s)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"triton did not answer in {timeout_s * 1000:.0f} ms") from exc
        except InferenceServerException as exc:
            status = str(exc.status() or "")
            if "DEADLINE_EXCEEDED" in status:
                raise UpstreamTimeout(f"triton deadline exceeded: {exc.message()}") from exc
            if "UNAVAILABLE" in status:
                raise UpstreamUnavailable(f"triton unavailable: {exc.message()}") from exc
            raise UpstreamError(f"triton error {status}: {exc.message()}") from exc
        response = result.get_response()
        version = response.model_version
        return decode_triton(
            _outputs(result, response), k=k, model_version=f"{self.model}/{version or '1'}"
        )


def _outputs(result: Any, response: Any) -> dict[str, tuple[str, list[int], np.ndarray]]:
    """Each output's (datatype, shape, array), read defensively: the answer is untrusted.

    ``response``: the gRPC ``ModelInferResponse``. Only the contract's datatypes are decoded; an
    output named twice, another datatype, or raw bytes that do not fill the announced shape are
    a ``format`` error, never a library exception.
    """
    allowed = {spec.dtype for spec in contract.OUTPUTS}
    outputs: dict[str, tuple[str, list[int], np.ndarray]] = {}
    for entry in response.outputs:
        name, datatype, shape = entry.name, entry.datatype, [int(d) for d in entry.shape]
        if not name or name in outputs:
            raise InvalidAnswer(Rule.FORMAT, f"output {name!r} unnamed or named twice")
        if datatype not in allowed:
            raise InvalidAnswer(Rule.FORMAT, f"output {name} has datatype {datatype!r}")
        try:
            array = result.as_numpy(name)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise InvalidAnswer(Rule.FORMAT, f"output {name} cannot be decoded: {exc}") from exc
        if not isinstance(array, np.ndarray):
            raise InvalidAnswer(Rule.FORMAT, f"output {name} has no data")
        outputs[name] = (datatype, shape, array)
    return outputs
