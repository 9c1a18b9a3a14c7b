"""Fixtures for the events tests: a real ``nats-server`` with JetStream per test module, on free
ports with its own store folder (never the machine's :4222)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from events.natsd import NatsServer


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    root = tmp_path_factory.mktemp("nats")
    server = NatsServer(root / "js", log_path=root / "nats.log").start()
    try:
        yield server
    finally:
        server.stop()


def new_server(root: Path) -> NatsServer:
    """A server of the test's own (for tests that stop or kill it)."""
    return NatsServer(root / "js", log_path=root / "nats.log")
