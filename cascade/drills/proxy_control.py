"""The fault proxies' control API: ``GET /<name>`` (mode + counters as JSON), ``GET
/<name>?set=delay&ms=150``, ``?set=errors&rate=0.3&action=grpc``, ``?set=blackhole``, ``?set=pass``.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs, urlsplit

from cascade.drills.fault_modes import parse_mode
from cascade.drills.proxy import FaultProxy


class ControlServer:
    """A tiny HTTP API over one or more proxies: ``GET /<name>`` / ``GET /<name>?set=...``."""

    def __init__(
        self, proxies: dict[str, FaultProxy], *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.proxies = proxies
        self.listen = (host, port)
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> ControlServer:
        self._server = await asyncio.start_server(self._handle, *self.listen)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def answer(self, target: str) -> tuple[int, dict[str, object]]:
        """Status and JSON body for a request target such as ``/triton?set=delay&ms=150``."""
        parts = urlsplit(target)
        name = parts.path.strip("/") or "mode"
        proxy = self.proxies.get(name) or (
            next(iter(self.proxies.values())) if name == "mode" else None
        )
        if proxy is None:
            return 404, {"error": f"no proxy {name!r}", "proxies": sorted(self.proxies)}
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if "set" in query:
            try:
                proxy.set_mode(parse_mode(query))
            except ValueError as exc:
                return 400, {"error": str(exc)}
        return 200, proxy.snapshot()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            status, body = self.answer(parts[1] if len(parts) > 1 else "/")
            payload = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
