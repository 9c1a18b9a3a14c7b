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
