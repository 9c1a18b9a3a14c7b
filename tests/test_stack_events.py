"""``cascade up``'s event log and consumer, without starting anything: nats-server on loopback with
its store under the home folder, the gateway and the consumer pointed at it, the consumer only
with Redis and never gating readiness, and the banner naming both."""

from __future__ import annotations

from pathlib import Path

from cascade import stack
from cascade.runtime.paths import Layout


def _children(tmp_path: Path, *, with_consumer: bool) -> dict[str, stack.Child]:
    ports = stack.StackPorts(gateway=18000, mf=18001, nats=18222, nats_monitor=18223, events=18020)
    children = stack._children(
        layout=Layout(home=tmp_path), dataset="tiny", host="0.0.0.0", ports=ports,
        repository=tmp_path, with_triton=False, with_consumer=with_consumer,
    )  # fmt: skip
    return {c.proc.name: c for c in children}


def test_the_log_and_the_consumer_are_wired_on_loopback(tmp_path: Path) -> None:
    by_name = _children(tmp_path, with_consumer=True)
    nats = by_name["nats-server"]
    argv = nats.proc.argv
    assert argv[argv.index("-a") + 1] == "127.0.0.1" and argv[argv.index("-p") + 1] == "18222"
    assert "-js" in argv and argv[argv.index("-sd") + 1] == str(tmp_path / "nats")
    assert nats.ready_url == "http://127.0.0.1:18223/healthz?js-enabled-only=true"
    assert nats.required
    gateway_env = by_name["gateway"].proc.env
    assert gateway_env is not None
    assert gateway_env["GATEWAY_EVENTS_NATS_URL"] == "nats://127.0.0.1:18222"
    consumer = by_name["events"]
    env = consumer.proc.env
    assert env is not None and consumer.proc.argv[-2:] == ["-m", "events"]
    assert env["EVENTS_NATS_URL"] == "nats://127.0.0.1:18222"
    assert (env["EVENTS_HOST"], env["EVENTS_PORT"], env["EVENTS_DATASET"]) == (
        "127.0.0.1",
        "18020",
        "tiny",
    )
    assert not consumer.required  # recommendations are served without it
    order = list(by_name)
    assert order.index("nats-server") < order.index("gateway")  # stopped after the gateway


def test_no_consumer_without_redis(tmp_path: Path) -> None:
    by_name = _children(tmp_path, with_consumer=False)
    assert "events" not in by_name and "nats-server" in by_name


def test_banner_names_the_log_and_the_consumer(tmp_path: Path) -> None:
    ports = stack.StackPorts()
    layout = Layout(home=tmp_path)
    text = stack._banner(host="127.0.0.1", ports=ports, layout=layout,
                         redis_url="redis://:pw@127.0.0.1:6379/0", with_triton=False)  # fmt: skip
    assert "nats://127.0.0.1:4223" in text and "http://127.0.0.1:8020" in text
    assert "cascade report online" in text and ":pw@" not in text
    sqlite = stack._banner(host="127.0.0.1", ports=ports, layout=layout, redis_url=None,
                           with_triton=False)  # fmt: skip
    assert "consumer     not started" in sqlite
