"""Issue 20, item 5: unauthenticated floods are limited per client IP at the ingress, before
the gateway spends anything on them (the gateway's own limits are per API key)."""

from __future__ import annotations

from tests.deploy.test_k8s import K8S, by_kind, render

PREFIX = "nginx.ingress.kubernetes.io/"


def test_the_public_ingress_limits_each_client_ip() -> None:
    (ingress,) = by_kind(render(K8S / "overlays" / "gpu-prod"), "Ingress")
    notes = ingress["metadata"]["annotations"]
    rps = int(notes[PREFIX + "limit-rps"])
    connections = int(notes[PREFIX + "limit-connections"])
    burst = int(notes.get(PREFIX + "limit-burst-multiplier", "5"))
    assert 0 < rps <= 1000, "a flood guard, not a capacity cap"
    assert 0 < connections <= 200
    assert 1 <= burst <= 10
    # well above one IP's legitimate share of the planned 2,500 req/s peak (docs/capacity.md)
    assert rps * burst >= 1000
