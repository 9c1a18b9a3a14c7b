"""The fault proxies in a process of their own, driven over the control API.

The proxies must not share an event loop (or a GIL) with the load generator: a busy generator
would delay the bytes they forward and the drills would measure themselves. So ``make drill``
runs ``python -m cascade.drills.proxyhub --control PORT --proxy NAME=LISTEN:HOST:PORT[:h2] ...``
(with the OTLP sink, ``--sink PORT``) and talks to it through :class:`RemoteProxy`, which has the
in-process proxy's ``set_mode`` / ``snapshot``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cascade.drills.fault_modes import Mode, Pass, mode_query
from cascade.drills.otlp_sink import OtlpSink
from cascade.drills.proxy import FaultProxy
from cascade.drills.proxy_control import ControlServer
from cascade.runtime.procs import ManagedProcess, ProcessError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProxySpec:
    """``name=listen_port:target_host:target_port[:h2]``."""

    name: str
    listen_port: int
    target_host: str
    target_port: int
    http2: bool = False

    def arg(self) -> str:
        return f"{self.name}={self.listen_port}:{self.target_host}:{self.target_port}" + (
            ":h2" if self.http2 else ""
        )

    @classmethod
    def parse(cls, text: str) -> ProxySpec:
        name, _, rest = text.partition("=")
        parts = rest.split(":")
        if not name or len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] != "h2"):
            raise ValueError(f"bad proxy spec {text!r}: NAME=LISTEN_PORT:HOST:PORT[:h2]")
        return cls(name, int(parts[0]), parts[1], int(parts[2]), len(parts) == 4)


class RemoteProxy:
    """A proxy living in the hub process, seen through the control API."""

    def __init__(self, *, name: str, control_port: int, listen_port: int) -> None:
        self.name = name
        self.control_port = control_port
        self.port = listen_port
        self.address = f"127.0.0.1:{listen_port}"

    def _get(self, query: str = "") -> dict[str, object]:
        url = f"http://127.0.0.1:{self.control_port}/{self.name}" + (f"?{query}" if query else "")
        with urllib.request.urlopen(url, timeout=5) as response:
            data: dict[str, object] = json.loads(response.read())
        return data

    def set_mode(self, mode: Mode) -> None:
        self._get(mode_query(mode))

    def snapshot(self) -> dict[str, object]:
        return self._get()


def start_hub(
    specs: list[ProxySpec], *, control_port: int, sink_port: int | None, log_path: Path
) -> tuple[ManagedProcess, dict[str, RemoteProxy]]:
    """Start the hub process and wait until its control API answers."""
    argv = [sys.executable, "-m", "cascade.drills.proxyhub", "--control", str(control_port)]
    argv += [a for spec in specs for a in ("--proxy", spec.arg())]
    if sink_port:
        argv += ["--sink", str(sink_port)]
    proc = ManagedProcess("proxyhub", argv, log_path=log_path).start()
    proxies = {
        s.name: RemoteProxy(name=s.name, control_port=control_port, listen_port=s.listen_port)
        for s in specs
    }
    deadline = time.monotonic() + 20
    while True:
        try:
            next(iter(proxies.values())).snapshot()
            return proc, proxies
        except (urllib.error.URLError, OSError):
            if not proc.running() or time.monotonic() > deadline:
                raise ProcessError(f"proxy hub did not start:\n{proc.log_tail()}") from None
            time.sleep(0.1)


async def serve(specs: list[ProxySpec], *, control_port: int, sink_port: int | None) -> None:
    """Run the proxies (and the sink) until SIGTERM / SIGINT."""
    sink = await OtlpSink(port=sink_port).start() if sink_port else None
    proxies = {
        s.name: await FaultProxy(
            target_host=s.target_host, target_port=s.target_port, listen_port=s.listen_port,
            name=s.name, http2=s.http2, mode=Pass(),
        ).start()
        for s in specs
    }  # fmt: skip
    control = await ControlServer(proxies, port=control_port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logger.info("proxy hub ready: control %d, %s", control_port, ", ".join(s.arg() for s in specs))
    await stop.wait()
    await control.stop()
    for proxy in proxies.values():
        await proxy.stop()
    if sink is not None:
        await sink.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cascade.drills.proxyhub", description=__doc__)
    parser.add_argument("--control", type=int, required=True, help="control API port")
    parser.add_argument("--proxy", action="append", default=[], help="NAME=LISTEN:HOST:PORT[:h2]")
    parser.add_argument("--sink", type=int, default=0, help="also run an OTLP sink on this port")
    args = parser.parse_args(argv)
    try:
        specs = [ProxySpec.parse(p) for p in args.proxy]
    except ValueError as exc:
        parser.error(str(exc))
    if not specs:
        parser.error("give at least one --proxy")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(specs, control_port=args.control, sink_port=args.sink or None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
