"""A small asyncio TCP fault proxy: what ``tc netem`` would do, for one upstream (docs/platform-notes.md).

The drills put one in front of Triton, Redis and the OTLP collector, and switch its mode while
traffic flows (the new mode applies to bytes read after the switch, on open connections too):

- ``Pass()``: forward both ways.
- ``Delay(ms)``: hold every upstream -> client chunk ``ms`` milliseconds (order kept, throughput
  not reduced: each chunk waits for its own due time), so each response arrives ``ms`` later.
- ``Errors(rate, action)``: fail about ``rate`` of the requests. ``reset``: on a client chunk,
  with probability ``rate``, abort both sockets with a TCP RST; ``close``: the same with a clean
  FIN. Right for HTTP/1.1 and Redis, where a request owns its connection while it runs.
  ``grpc``: gRPC multiplexes every call over one HTTP/2 connection, so breaking the connection
  would fail every call in flight and the reconnect backoff after it. Instead the proxy follows
  the HTTP/2 frames from the server and, with probability ``rate`` per stream, sets the
  "compressed" flag of the response's first gRPC message; the client fails that one call
  (status INTERNAL) and the connection lives on. HPACK state is untouched (only DATA frames).
- ``BlackHole()``: accept connections, read and drop everything, never answer.
- ``Garbage()`` (gRPC to Triton only): the server answers, but garbage. In each response's first
  gRPC message (a ``ModelInferResponse``), the proxy rewrites the tensor bytes in place: the
  first raw output (``item_ids``) becomes one id repeated, the others (``scores``) NaN. Lengths
  are kept, so HTTP/2 and protobuf framing stay valid and the client decodes a well-formed,
  wrong answer: what a broken model version sends.

The modes live in ``fault_modes.py``. Control a proxy in-process (``proxy.set_mode(Delay(150))``)
or over HTTP with ``proxy_control.ControlServer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
import time
from dataclasses import asdict, dataclass, field

from cascade.drills.fault_modes import BlackHole, Delay, Errors, Garbage, Mode, Pass, describe
from cascade.drills.grpc_frames import ProxyStats, _GrpcCorrupter

logger = logging.getLogger(__name__)

CHUNK = 65536


@dataclass(eq=False)  # hashed by identity: kept in a set
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _abort(writer: asyncio.StreamWriter | None, *, reset: bool) -> None:
    if writer is None:
        return
    if reset:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    else:
        writer.close()


class FaultProxy:
    """``listen_host:listen_port`` -> ``target_host:target_port`` with a switchable fault mode."""

    def __init__(
        self,
        *,
        target_host: str,
        target_port: int,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        mode: Mode | None = None,
        seed: int | None = None,
        name: str = "proxy",
        http2: bool = False,
    ) -> None:
        self.target = (target_host, target_port)
        self.listen = (listen_host, listen_port)
        self.name = name
        self.http2 = http2  # follow HTTP/2 frames upstream -> client from each connection's start
        self.stats = ProxyStats()
        self.mode: Mode = Pass()
        self.set_mode(mode or Pass())
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{self.name} is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def address(self) -> str:
        return f"{self.listen[0]}:{self.port}"

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._handle, *self.listen, limit=CHUNK)
        logger.info("%s: %s -> %s:%d", self.name, self.address, *self.target)
        return self

    async def stop(self) -> None:
        """Stop accepting and close every connection."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            self._drop(conn, reset=False)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def set_mode(self, mode: Mode) -> None:
        """Switch the fault mode; bytes read from now on follow it."""
        if isinstance(mode, Errors) and mode.action == "grpc" and not self.http2:
            raise ValueError(f"{self.name}: grpc errors need a proxy built with http2=True")
        if isinstance(mode, Garbage) and not self.http2:
            raise ValueError(f"{self.name}: garbage answers need a proxy built with http2=True")
        logger.info("%s: mode %s -> %s", self.name, describe(self.mode), describe(mode))
        self.mode = mode

    def snapshot(self) -> dict[str, object]:
        """Mode and counters, for the control API and reports."""
        return {"name": self.name, "mode": describe(self.mode), **asdict(self.stats)}

    # -- connections ---------------------------------------------------------------------------

    def _drop(self, conn: _Conn, *, reset: bool) -> None:
        _abort(conn.client, reset=reset)
        _abort(conn.upstream, reset=reset)
        for task in conn.tasks:
            if task is not asyncio.current_task():
                task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        self.stats.open_connections += 1
        conn = _Conn(client=writer)
        self._conns.add(conn)
        try:
            if isinstance(self.mode, BlackHole):
                await self._swallow(reader)
                return
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.target), 2.0
                )
            except (OSError, TimeoutError):
                self.stats.upstream_failures += 1
                _abort(writer, reset=True)  # what a client of a dead server sees
                return
            conn.upstream = up_writer
            conn.tasks = [
                asyncio.create_task(self._pump(reader, up_writer, conn, upstream=True)),
                asyncio.create_task(self._pump(up_reader, writer, conn, upstream=False)),
            ]
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        finally:
            self.stats.open_connections -= 1
            self._conns.discard(conn)
            self._drop(conn, reset=False)

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(CHUNK):
                pass

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: _Conn,
        *,
        upstream: bool,
    ) -> None:
        """Copy one direction; ``upstream`` is client -> target."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, writer))
        grpc = _GrpcCorrupter() if self.http2 and not upstream else None
        try:
            while True:
                try:
                    data = await reader.read(CHUNK)
                except OSError:
                    data = b""
                if not data:
                    break
                mode = self.mode
                if isinstance(mode, BlackHole):
                    continue
                if upstream:
                    self.stats.client_chunks += 1
                    if (
                        isinstance(mode, Errors)
                        and mode.action != "grpc"
                        and self._rng.random() < mode.rate
                    ):
                        self.stats.injected_errors += 1
                        self._drop(conn, reset=mode.action == "reset")
                        return
                elif grpc is not None:
                    rate = mode.rate if isinstance(mode, Errors) and mode.action == "grpc" else 0.0
                    data = grpc.feed(
                        data,
                        rate=rate,
                        rng=self._rng,
                        stats=self.stats,
                        garbage=isinstance(mode, Garbage),
                    )
                    if not data:
                        continue
                due = time.monotonic() + (
                    mode.ms / 1000 if isinstance(mode, Delay) and not upstream else 0.0
                )
                queue.put_nowait((due, data))
        finally:
            queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    @staticmethod
    async def _send(
        queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter
    ) -> None:
        try:
            while (item := await queue.get()) is not None:
                due, data = item
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            pass
