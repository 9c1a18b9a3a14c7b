"""The fault proxy's modes against a local echo server (real sockets on loopback)."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from cascade.drills.fault_modes import (
    BlackHole,
    Delay,
    Errors,
    Garbage,
    Pass,
    mode_query,
    parse_mode,
)
from cascade.drills.grpc_frames import ProxyStats, _GrpcCorrupter
from cascade.drills.proxy import FaultProxy
from cascade.drills.proxy_control import ControlServer
from cascade.drills.proxyhub import ProxySpec


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@asynccontextmanager
async def proxied(mode=None, **kwargs) -> AsyncIterator[FaultProxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy = await FaultProxy(
        target_host="127.0.0.1", target_port=port, mode=mode, seed=1, **kwargs
    ).start()
    try:
        yield proxy
    finally:
        await proxy.stop()
        server.close()
        await server.wait_closed()


async def roundtrip(
    proxy: FaultProxy, payload: bytes = b"ping", *, timeout: float = 2.0
) -> tuple[bytes, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    started = time.monotonic()
    try:
        writer.write(payload)
        await writer.drain()
        data = await asyncio.wait_for(reader.readexactly(len(payload)), timeout)
        return data, time.monotonic() - started
    finally:
        writer.close()


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())


def test_pass_forwards_both_ways() -> None:
    async def go() -> None:
        async with proxied() as proxy:
            data, _ = await roundtrip(proxy, b"hello" * 1000)
            assert data == b"hello" * 1000
            assert proxy.stats.connections == 1 and proxy.stats.client_chunks >= 1

    run(go)


def test_delay_holds_each_answer_and_can_be_switched_off() -> None:
    async def go() -> None:
        async with proxied(Delay(150)) as proxy:
            data, elapsed = await roundtrip(proxy)
            assert data == b"ping" and elapsed >= 0.14
            proxy.set_mode(Pass())
            _, fast = await roundtrip(proxy)
            assert fast < 0.1

    run(go)


def test_delay_applies_to_open_connections_without_reordering() -> None:
    async def go() -> None:
        async with proxied() as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            proxy.set_mode(Delay(80))
            for i in range(5):
                writer.write(bytes([i]))
                await writer.drain()
            started = time.monotonic()
            data = await asyncio.wait_for(reader.readexactly(5), 2)
            assert data == bytes(range(5)) and time.monotonic() - started >= 0.07
            writer.close()

    run(go)


@pytest.mark.parametrize("action", ["reset", "close"])
def test_errors_break_the_connection(action: str) -> None:
    async def go() -> None:
        async with proxied(Errors(1.0, action)) as proxy:
            with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                await roundtrip(proxy)
            assert proxy.stats.injected_errors == 1

    run(go)


def test_error_rate_is_about_the_rate() -> None:
    async def go() -> None:
        async with proxied(Errors(0.3, "reset")) as proxy:
            failed = 0
            for _ in range(200):
                try:
                    await roundtrip(proxy)
                except (asyncio.IncompleteReadError, ConnectionError):
                    failed += 1
            assert 40 <= failed <= 80  # 30% of 200, seeded
            assert proxy.stats.injected_errors == failed

    run(go)


def test_blackhole_accepts_and_never_answers() -> None:
    async def go() -> None:
        async with proxied(BlackHole()) as proxy:
            with pytest.raises(TimeoutError):
                await roundtrip(proxy, timeout=0.3)
            assert proxy.stats.connections == 1 and proxy.stats.upstream_failures == 0

    run(go)


def test_dead_upstream_resets_the_client() -> None:
    async def go() -> None:
        proxy = await FaultProxy(target_host="127.0.0.1", target_port=1).start()
        try:
            with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                await roundtrip(proxy)
            assert proxy.stats.upstream_failures == 1
        finally:
            await proxy.stop()

    run(go)


def _frame(ftype: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes([ftype, flags])
        + struct.pack(">I", stream)
        + payload
    )


def test_grpc_corrupter_flags_the_first_message_of_chosen_streams_only() -> None:
    import random

    message = b"\x00" + (5).to_bytes(4, "big") + b"hello"
    stream = (
        _frame(0x4, 0, 0, b"")  # SETTINGS
        + _frame(0x1, 0x4, 1, b"\x88")  # HEADERS
        + _frame(0x0, 0, 1, message[:7])  # first DATA: flag byte is the message's first byte
        + _frame(0x0, 0, 1, message[7:])
        + _frame(0x1, 0x5, 1, b"\x89")  # trailers, END_STREAM
    )
    stats = ProxyStats()
    corrupter = _GrpcCorrupter()
    out = b""
    for i in range(0, len(stream), 5):  # split across reads
        out += corrupter.feed(stream[i : i + 5], rate=1.0, rng=random.Random(0), stats=stats)
    assert len(out) == len(stream) and stats.injected_errors == 1 and stats.h2_streams == 1
    first_data = out.index(message[1:5]) - 1
    assert out[first_data] == 0x01  # compressed flag set
    assert out.replace(b"\x01" + message[1:7], message[:7], 1) == stream
    clean = _GrpcCorrupter().feed(stream, rate=0.0, rng=random.Random(0), stats=ProxyStats())
    assert clean == stream


def test_control_api_and_mode_parsing() -> None:
    async def go() -> None:
        async with proxied(http2=True) as proxy:
            control = await ControlServer({"triton": proxy}).start()
            try:
                for query, expected in [
                    ("set=delay&ms=150", "delay(150ms)"),
                    ("set=errors&rate=0.3&action=grpc", "errors(30%, grpc)"),
                    ("set=blackhole", "blackhole"),
                    ("set=pass", "pass"),
                ]:
                    status, body = control.answer(f"/triton?{query}")
                    assert status == 200 and body["mode"] == expected
                assert control.answer("/nope")[0] == 404
                assert control.answer("/triton?set=warp")[0] == 400
                reader, writer = await asyncio.open_connection("127.0.0.1", control.port)
                writer.write(b"GET /triton?set=delay&ms=5 HTTP/1.1\r\nHost: x\r\n\r\n")
                await writer.drain()
                reply = await reader.read()
                assert reply.startswith(b"HTTP/1.1 200") and b"delay(5ms)" in reply
                writer.close()
            finally:
                await control.stop()

    run(go)
    assert parse_mode({"set": "errors", "rate": "0.5", "action": "close"}) == Errors(0.5, "close")
    with pytest.raises(ValueError):
        Errors(1.5)
    for mode in (Pass(), Delay(150), Errors(0.3, "grpc"), BlackHole()):
        query = dict(p.split("=") for p in mode_query(mode).split("&"))
        assert parse_mode(query) == mode
    spec = ProxySpec.parse("triton=9000:127.0.0.1:8101:h2")
    assert spec.http2 and spec.arg() == "triton=9000:127.0.0.1:8101:h2"
    with pytest.raises(ValueError):
        ProxySpec.parse("triton=9000")


def test_grpc_errors_need_an_http2_proxy() -> None:
    async def go() -> None:
        async with proxied() as proxy:
            with pytest.raises(ValueError, match="http2"):
                proxy.set_mode(Errors(0.3, "grpc"))

    run(go)


def test_garbage_rewrites_triton_answers_in_place() -> None:
    import random

    import numpy as np
    from tritonclient.grpc import service_pb2

    answer = service_pb2.ModelInferResponse(model_name="two_tower", model_version="1")
    for name, dtype, array in [
        ("item_ids", "INT64", np.array([[5, 6, 7]], np.int64)),
        ("scores", "FP32", np.array([[0.3, 0.2, 0.1]], np.float32)),
    ]:
        out = answer.outputs.add()
        out.name, out.datatype = name, dtype
        out.shape.extend(array.shape)
        answer.raw_output_contents.append(array.tobytes())
    body = answer.SerializeToString()
    message = b"\x00" + len(body).to_bytes(4, "big") + body
    stream = _frame(0x1, 0x4, 1, b"\x88") + _frame(0x0, 0, 1, message) + _frame(0x1, 0x5, 1, b"")
    stats = ProxyStats()
    out = _GrpcCorrupter().feed(stream, rate=0.0, rng=random.Random(0), stats=stats, garbage=True)
    assert len(out) == len(stream) and stats.garbled == 1
    start = out.index(message[:5]) + 5
    garbled = service_pb2.ModelInferResponse.FromString(out[start : start + len(body)])
    ids = np.frombuffer(garbled.raw_output_contents[0], np.int64)
    scores = np.frombuffer(garbled.raw_output_contents[1], np.float32)
    assert ids.tolist() == [5, 5, 5] and np.isnan(scores).all()
    assert garbled.outputs[0].name == "item_ids" and list(garbled.outputs[1].shape) == [1, 3]
    assert parse_mode({"set": "garbage"}) == Garbage() and mode_query(Garbage()) == "set=garbage"
