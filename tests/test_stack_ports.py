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


def test_a_bad_data_source_is_a_usage_error(monkeypatch, tmp_path) -> None:
    """`cascade up --scale huge` (bad input) exits 2 like every other command's bad input."""
    from typer.testing import CliRunner

    import cascade.stack
    from cascade.cli import app
    from cascade.data.errors import DataSourceError

    def refuse(**_kwargs):
        raise DataSourceError("unknown synthetic scale 'huge'; choose one of tiny, demo, large")

    monkeypatch.setattr(cascade.stack, "up", refuse)
    result = CliRunner().invoke(app, ["up", "--scale", "huge"], env={"CASCADE_HOME": str(tmp_path)})
    assert result.exit_code == 2
    assert "cascade up failed: unknown synthetic scale 'huge'" in result.output
