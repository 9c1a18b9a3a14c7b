"""A tiny OTLP/HTTP "collector" for the drills: answers every POST with 200 and keeps nothing.

It stands where Jaeger's 4318 port would be, so D8 can compare a healthy collector (the proxy
in ``pass`` mode) with a black-holed one. It counts requests and bytes, nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib


class OtlpSink:
    """HTTP/1.1 keep-alive server: reads each request's body (Content-Length), answers 200."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.listen = (host, port)
        self.requests = 0
        self.bytes = 0
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> OtlpSink:
        self._server = await asyncio.start_server(self._handle, *self.listen)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip() or 0)
                if length:
                    await reader.readexactly(length)
                self.requests += 1
                self.bytes += length
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
                    b"Content-Length: 0\r\n\r\n"
                )
                await writer.drain()
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
