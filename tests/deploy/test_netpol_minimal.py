"""Every NetworkPolicy port in k8s/ is one its peer needs, and no more (issue 20).

The needs are derived from the manifests, not listed by hand: the ports in the gateway's
upstream URLs (``GATEWAY_TRITON_URL``, ``GATEWAY_MF_URL``), the event log's URL for its clients
(``GATEWAY_EVENTS_NATS_URL``, ``EVENTS_NATS_URL``) and the NATS servers' ``--routes`` to one
another, the Redis Service port for every pod
given a ``*REDIS_URL``, the ingress' backend port, Prometheus' scrape ports (the
``prometheus.io/port`` annotations and the gateway's ``http`` port for its scrape job), the
OTLP endpoint's port for every pod that exports traces, DNS for every pod. Then each port of each
rule of each policy must serve at least one need between a pod the policy selects and a peer the
rule names; a rule without ports (every port) fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

import pytest

from tests.deploy.test_k8s import (
    EXTERNAL,
    K8S,
    NAMESPACE,
    Docs,
    _peer_matches,
    by_kind,
    config_env,
    labels_match,
    one,
    pod_template,
    pod_workloads,
    render,
)

Endpoint = tuple[str, dict[str, str]]  # (namespace, pod labels); namespace "ipBlock": outside
MANAGED_REDIS: Endpoint = ("ipBlock", {"service": "managed-redis"})


@dataclass(frozen=True)
class Need:
    src: Endpoint
    dst: Endpoint
    port: int
    protocol: str
    why: str


def _url_port(url: str) -> int:
    parsed = urlparse(url if "://" in url else f"//{url}")
    assert parsed.port, f"no explicit port in {url!r}"
    return parsed.port


def _service_pods(docs: Docs, host: str) -> Endpoint:
    service = one(docs, "Service", host.split(".")[0])
    return (NAMESPACE, dict(service["spec"]["selector"]))


def derive_needs(docs: Docs) -> list[Need]:
    needs: list[Need] = []
    for workload in pod_workloads(docs):
        template = pod_template(workload)
        me: Endpoint = (NAMESPACE, template["metadata"]["labels"])
        name = workload["metadata"]["name"]
        for container in template["spec"]["containers"]:
            env = config_env(docs, container)
            secret_env = {
                e["name"]
                for e in container.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            }
            for proto in ("UDP", "TCP"):
                needs.append(Need(me, EXTERNAL["dns"], 53, proto, f"{name}: DNS"))
            if "OTEL_EXPORTER_OTLP_ENDPOINT" in env:
                port = _url_port(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
                needs.append(Need(me, EXTERNAL["jaeger"], port, "TCP", f"{name}: OTLP"))
            for var in (
                "GATEWAY_TRITON_URL",
                "GATEWAY_MF_URL",
                "GATEWAY_EVENTS_NATS_URL",
                "EVENTS_NATS_URL",
            ):
                if var in env:
                    host = urlparse(env[var] if "://" in env[var] else f"//{env[var]}").hostname
                    assert host
                    dst = _service_pods(docs, host)
                    needs.append(Need(me, dst, _url_port(env[var]), "TCP", f"{name}: {var}"))
            if any(v.endswith("REDIS_URL") for v in secret_env):
                needs.append(Need(me, MANAGED_REDIS, 6379, "TCP", f"{name}: managed Redis"))
                if any(s["metadata"]["name"] == "redis" for s in by_kind(docs, "Service")):
                    port = one(docs, "Service", "redis")["spec"]["ports"][0]["port"]
                    needs.append(
                        Need(me, _service_pods(docs, "redis"), port, "TCP", f"{name}: Redis")
                    )
            for arg in container.get("args", []):  # NATS cluster routes: pod.service:port
                if arg.startswith("--routes="):
                    for route in arg.removeprefix("--routes=").split(","):
                        parsed = urlparse(route)
                        assert parsed.hostname and parsed.port, route
                        dst = _service_pods(docs, parsed.hostname.split(".")[1])
                        needs.append(Need(me, dst, parsed.port, "TCP", f"{name}: route"))
            annotations = template["metadata"].get("annotations", {})
            if annotations.get("prometheus.io/scrape") == "true":
                port = int(annotations["prometheus.io/port"])
                needs.append(Need(EXTERNAL["prometheus"], me, port, "TCP", f"scrape {name}"))
        if name == "gateway":
            http = next(
                p["containerPort"]
                for c in template["spec"]["containers"]
                for p in c["ports"]
                if p["name"] == "http"
            )
            needs.append(Need(EXTERNAL["ingress"], me, http, "TCP", "ingress -> gateway"))
            needs.append(Need(EXTERNAL["prometheus"], me, http, "TCP", "gateway scrape job"))
    return needs


def _peer(peer: dict[str, object], endpoint: Endpoint) -> bool:
    if "ipBlock" in peer:
        return endpoint[0] == "ipBlock"
    if endpoint[0] == "ipBlock":
        return False
    return _peer_matches(peer, endpoint[0], endpoint[1])  # type: ignore[arg-type]


def _selects(policy: dict[str, object], endpoint: Endpoint) -> bool:
    spec = policy["spec"]
    return endpoint[0] == NAMESPACE and labels_match(spec["podSelector"], endpoint[1])  # type: ignore[index]


@pytest.mark.parametrize("overlay", ["cpu-dev", "gpu-prod"])
def test_every_network_policy_port_serves_a_need(overlay: str) -> None:
    docs = render(K8S / "overlays" / overlay)
    needs = derive_needs(docs)
    assert len(needs) > 10
    unjustified = []
    for policy in by_kind(docs, "NetworkPolicy"):
        spec = policy["spec"]
        for direction, key, peers_key in (
            ("Ingress", "ingress", "from"),
            ("Egress", "egress", "to"),
        ):
            if direction not in spec["policyTypes"]:
                continue
            for n, rule in enumerate(spec.get(key, [])):
                where = f"{policy['metadata']['name']} {key}[{n}]"
                assert rule.get("ports"), f"{where}: no ports = every port"
                assert rule.get(peers_key), f"{where}: no peers = everyone"
                for port in rule["ports"]:
                    proto = port.get("protocol", "TCP")
                    served = [
                        need
                        for need in needs
                        if need.port == port["port"]
                        and need.protocol == proto
                        and any(
                            _peer(peer, need.src if direction == "Ingress" else need.dst)
                            for peer in rule[peers_key]
                        )
                        and _selects(policy, need.dst if direction == "Ingress" else need.src)
                    ]
                    if not served:
                        unjustified.append(f"{where}: {proto}/{port['port']}")
    assert not unjustified, f"{overlay}: ports no peer needs: {unjustified}"


def test_the_derivation_sees_the_known_edges() -> None:
    """A guard on the guard: the derived needs contain the edges the deployment doc lists."""
    docs = render(K8S / "overlays" / "cpu-dev")
    edges = {(n.why, n.port) for n in derive_needs(docs)}
    assert ("gateway: GATEWAY_TRITON_URL", 8001) in edges
    assert ("gateway: GATEWAY_MF_URL", 8001) in edges
    assert ("gateway: Redis", 6379) in edges
    assert ("scrape triton", 8002) in edges
    assert ("gateway: OTLP", 4318) in edges
    assert not any(
        n.port == 8000 and n.why.startswith("gateway: GATEWAY_TRITON") for n in derive_needs(docs)
    )
