"""The public ingress routes the similar-items endpoint (``/v1/items/{item_id}/similar``, issue
19) to the gateway, like the recommendations: to the gateway Service only, never to Triton or
the MF service (whose own ``/v1/items/...`` endpoint is internal)."""

from __future__ import annotations

from tests.deploy.test_k8s import K8S, by_kind, render


def test_the_ingress_sends_item_paths_to_the_gateway() -> None:
    (ingress,) = by_kind(render(K8S / "overlays" / "gpu-prod"), "Ingress")
    paths = {
        p["path"]: p["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    assert paths.get("/v1/items") == "gateway"
    assert paths.get("/v1/recommendations") == "gateway"
    assert set(paths.values()) == {"gateway"}


def test_every_public_gateway_route_is_routed_by_the_ingress() -> None:
    """Each /v1 path of the gateway's OpenAPI spec falls under one of the ingress's prefixes:
    a new public endpoint cannot ship unreachable (POST /v1/events once did)."""
    from gateway.main import create_app
    from gateway.settings import GatewaySettings

    (ingress,) = by_kind(render(K8S / "overlays" / "gpu-prod"), "Ingress")
    rules = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    public = [
        path for path in create_app(GatewaySettings()).openapi()["paths"] if path.startswith("/v1/")
    ]
    assert public
    unrouted = [path for path in public if not any(_routes(rule, path) for rule in rules)]
    assert unrouted == []


def _routes(rule: dict[str, str], path: str) -> bool:
    """Kubernetes path matching: ``Exact`` the whole path; ``Prefix`` element by element
    (``/v1/recommendations`` matches ``/v1/recommendations/{user_id}``, not
    ``/v1/recommendations:batch``). A ``{param}`` element of the spec matches any element."""
    if rule["pathType"] == "Exact":
        return rule["path"] == path
    want = rule["path"].rstrip("/").split("/")
    return path.split("/")[: len(want)] == want
