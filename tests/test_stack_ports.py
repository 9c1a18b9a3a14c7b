"""``cascade up`` refuses busy ports before it builds anything, naming the variable that moves
each one."""

from __future__ import annotations

import socket

from cascade.runtime.procs import free_port
from cascade.stack import StackPorts, busy_ports


def test_a_busy_port_is_named_with_its_variable() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        free = free_port()
        ports = StackPorts(
            gateway=port, mf=free, nats=free_port(), nats_monitor=free_port(), events=free_port()
        )
        assert busy_ports("127.0.0.1", ports, with_triton=False) == [
            f"{port} (CASCADE_GATEWAY_PORT)"
        ]
