"""What docker-compose.yml publishes on the host, and to whom (issue 20, item 2).

Every published port must name a host address, and that address must be loopback: Prometheus,
Jaeger (UI and OTLP), Grafana and Locust have no authentication of their own worth exposing, and
the gateway speaks plain HTTP (outside a laptop a TLS proxy publishes it, docs/deployment.md).
The gateway's address may be moved by ``GATEWAY_PUBLISH_ADDRESS``, whose default is loopback.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.deploy import manifest_facts as facts

COMPOSE_FILE = facts.REPO / "docker-compose.yml"
LOOPBACK = {"127.0.0.1", "::1", "[::1]"}
_DEFAULT = re.compile(r"^\$\{([A-Z_]+):-([^}]*)\}$")


def _services() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(COMPOSE_FILE.read_text())
    services: dict[str, dict[str, Any]] = doc["services"]
    return services


def host_ip(spec: str | dict[str, Any]) -> str | None:
    """The host address of one ``ports:`` entry (short or long syntax); None when it has none.

    A ``${VAR:-default}`` address resolves to its default: what a ``.env`` without that variable
    gets. Short syntax is ``[HOST:]HOST_PORT:CONTAINER_PORT[/PROTO]``.
    """
    if isinstance(spec, dict):
        value = spec.get("host_ip")
        return None if value is None else _resolve(str(value))
    text = str(spec).split("/")[0]
    # split on the colons that are not inside ${...}
    parts: list[str] = []
    depth, current = 0, ""
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == ":" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    if len(parts) < 3:
        return None
    return _resolve(":".join(parts[:-2]))


def _resolve(value: str) -> str:
    match = _DEFAULT.match(value)
    return match.group(2) if match else value


def test_host_ip_parser() -> None:
    assert host_ip("8000:8000") is None
    assert host_ip("9090") is None
    assert host_ip("127.0.0.1:9090:9090") == "127.0.0.1"
    assert host_ip("${ADDR:-127.0.0.1}:${PORT:-8000}:8000") == "127.0.0.1"
    assert host_ip("0.0.0.0:4317:4317/tcp") == "0.0.0.0"
    assert host_ip({"target": 80, "published": 8080, "host_ip": "127.0.0.1"}) == "127.0.0.1"
    assert host_ip({"target": 80, "published": 8080}) is None


def test_every_published_port_is_bound_to_loopback() -> None:
    published = {
        (name, str(spec)): host_ip(spec)
        for name, service in _services().items()
        for spec in service.get("ports") or []
    }
    assert published, "compose publishes nothing: the test would prove nothing"
    open_ = {key: ip for key, ip in published.items() if ip not in LOOPBACK}
    assert not open_, f"published beyond loopback (no host IP means 0.0.0.0): {open_}"
    # the operations endpoints the review named are among them
    names = {name for name, _ in published}
    assert {"prometheus", "jaeger", "locust", "grafana", "gateway"} <= names


def test_nothing_is_exposed_to_other_hosts_by_expose_or_host_network() -> None:
    for name, service in _services().items():
        assert service.get("network_mode") != "host", f"{name}: host networking bypasses ports"


def test_prometheus_has_no_lifecycle_api() -> None:
    prometheus = _services()["prometheus"]
    flags = [str(a) for a in prometheus.get("command", [])]
    assert not any(f.startswith("--web.enable-lifecycle") for f in flags)
    assert not any(f.startswith("--web.enable-admin-api") for f in flags)


def test_deployment_doc_requires_tls_in_front_of_the_gateway() -> None:
    text = (facts.REPO / "docs" / "deployment.md").read_text()
    assert re.search(r"TLS[^.]*proxy", text), (
        "deployment.md must say the gateway needs TLS in front"
    )
