"""A local ``nats-server`` with JetStream, for ``cascade up``, tests, benchmarks and drills.

Production runs a NATS cluster (three servers, streams with three replicas); here one server
keeps its JetStream files in ``store_dir``, so a restart on the same folder keeps the log.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from cascade.runtime.procs import ManagedProcess, ProcessError, free_port

NATS_SERVER = "nats-server"


def nats_server_binary() -> str:
    """Path of ``nats-server`` (Debian package ``nats-server``; ``make system-deps``)."""
    found = shutil.which(NATS_SERVER) or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").is_file() else None
    )
    if found is None:
        raise ProcessError("nats-server not found: install it with `make system-deps`")
    return found


class NatsServer:
    """One ``nats-server -js`` on 127.0.0.1 (client ``port``, monitoring ``monitor_port``)."""

    def __init__(
        self,
        store_dir: Path,
        *,
        log_path: Path,
        port: int | None = None,
        monitor_port: int | None = None,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.port = port or free_port()
        self.monitor_port = monitor_port or free_port()
        self.process = ManagedProcess(
            "nats-server",
            [
                nats_server_binary(),
                "-js",
                "-sd",
                str(self.store_dir),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-m",
                str(self.monitor_port),
            ],
            log_path=log_path,
        )

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 20.0) -> NatsServer:
        """Start and wait until JetStream answers its health check."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.process.start()
        self.process.wait_ready(
            f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true", timeout=timeout
        )
        return self

    def stop(self) -> None:
        self.process.stop(grace=10)

    def kill(self) -> None:
        self.process.kill()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
