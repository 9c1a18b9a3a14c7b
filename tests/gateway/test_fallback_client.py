"""The MF client (httpx on the aiohttp transport) against a real socket: answers and failures
become the chain's errors, and the per-call timeout holds."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import pytest

from cascade.runtime.procs import free_port
from gateway.errors import UnknownUser, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.tiers.mf import MfFallback

Behaviour = Callable[[asyncio.StreamWriter], Awaitable[None]]


def _answer(status: int, body: dict[str, object] | str) -> Behaviour:
    payload = (body if isinstance(body, str) else json.dumps(body)).encode()

    async def send(writer: asyncio.StreamWriter) -> None:
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        await writer.drain()

    return send


OK = {"user_id": 7, "items": [{"item_id": 3, "score": 0.9}], "model_version": "v1"}


async def _hang(writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(5)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()


async def _serve_and_call(behaviour: Behaviour, timeout_s: float) -> object:
    """Serve one request with ``behaviour``, call the MF client against it, return its result."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await behaviour(writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        return await _call(f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}", timeout_s)
    finally:
        srv.close()


async def _call(url: str, timeout_s: float = 0.2) -> object:
    client = MfFallback(base_url=url, timeout_s=timeout_s)
    try:
        return await client.recommend(7, k=1, exclude=[1, 2], timeout_s=timeout_s)
    finally:
        await client.close()


def test_answer_becomes_a_tier_result() -> None:
    result = asyncio.run(_serve_and_call(_answer(200, {**OK, "known_user": True}), 0.5))
    assert getattr(result, "item_ids", None) == [3]


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        (_answer(200, {**OK, "known_user": False}), UnknownUser),
        (_answer(503, "busy"), UpstreamUnavailable),
        (_answer(400, {"detail": "bad"}), UpstreamError),
        (_answer(200, {"unexpected": True}), UpstreamError),
        (_close, UpstreamUnavailable),
    ],
)
def test_failures_become_upstream_errors(behaviour: Behaviour, error: type[Exception]) -> None:
    with pytest.raises(error):
        asyncio.run(_serve_and_call(behaviour, 0.5))


def test_a_hanging_service_times_out_at_the_budget() -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        asyncio.run(_serve_and_call(_hang, 0.1))
    assert time.monotonic() - started < 2.0  # the 5 s hang was cut short


def test_nothing_listening_is_unavailable() -> None:
    with pytest.raises(UpstreamUnavailable):
        asyncio.run(_call(f"http://127.0.0.1:{free_port()}"))


def test_readiness_of_an_absent_service_is_false_not_an_error() -> None:
    async def probe() -> bool:
        client = MfFallback(base_url=f"http://127.0.0.1:{free_port()}", timeout_s=0.1)
        try:
            return await client.ready(timeout_s=0.2)
        finally:
            await client.close()

    assert asyncio.run(probe()) is False
