"""Offline checks of k8s/: render every overlay, validate every object against the Kubernetes
schemas (kubernetes-validate, strict), and check the policies the deployment promises.

Rendering uses tests/deploy/kustomize_lite.py; where kubectl is installed, ``kubectl kustomize``
must produce the same objects. The policies: restricted security context everywhere, resources
on every container, probes on the services' real routes and ports, a PDB per workload, HPAs with
the metrics docs/capacity.md sizes, metric names that the adapter serves and the code exports,
the recording rules (promtool), network policies (default deny plus exactly the needed edges),
CronJobs whose ``cascade`` commands parse, configuration keys that are real settings fields.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy import kustomize_lite as kustomize
from tests.deploy import manifest_facts as facts

K8S = facts.REPO / "k8s"
OVERLAYS = ("cpu-dev", "gpu-prod")
ADDONS = ("monitoring",)
K8S_VERSION = "1.31"  # oldest minor we support; the manifests use nothing newer
NAMESPACE = "cascade"
SERVING = ("gateway", "fallback-mf", "triton")
WORKLOAD_KINDS = {"Deployment", "StatefulSet"}

Docs = list[dict[str, Any]]


def render(folder: Path) -> Docs:
    return kustomize.build(folder)


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, Docs]:
    return request.param, render(K8S / "overlays" / request.param)


@pytest.fixture(scope="module")
def monitoring() -> Docs:
    return render(K8S / "addons" / "monitoring")


def by_kind(docs: Docs, kind: str) -> Docs:
    return [d for d in docs if d["kind"] == kind]


def one(docs: Docs, kind: str, name: str) -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind}/{name}, found {len(hits)}"
    return hits[0]


def pod_template(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]
    return doc["spec"]["template"]


def pod_workloads(docs: Docs) -> Docs:
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS | {"CronJob", "Job"}]


def config_env(docs: Docs, container: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets from its ConfigMaps and literal env values."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(one(docs, "ConfigMap", ref)["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    return env


def labels_match(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and In/NotIn/Exists/DoesNotExist)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        if op == "In" and value not in expr["values"]:
            return False
        if op == "NotIn" and value in expr["values"]:
            return False
        if op == "Exists" and value is None:
            return False
        if op == "DoesNotExist" and value is not None:
            return False
    return True


# ---- rendering and schemas ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "folder", [f"overlays/{o}" for o in OVERLAYS] + [f"addons/{a}" for a in ADDONS]
)
def test_every_object_validates_against_the_kubernetes_schema(folder: str) -> None:
    docs = render(K8S / folder)
    assert docs
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(
                f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}"
            )
    assert not errors, "\n".join(errors)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize(
    "folder",
    ["base", "redis"] + [f"overlays/{o}" for o in OVERLAYS] + [f"addons/{a}" for a in ADDONS],
)
def test_renderer_agrees_with_kubectl_kustomize(folder: str) -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S / folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    reference = kustomize.index([d for d in yaml.safe_load_all(result.stdout) if d])
    mine = kustomize.index(render(K8S / folder))
    assert set(mine) == set(reference)
    for key, doc in mine.items():
        assert doc == reference[key], f"{key} renders differently from kubectl kustomize"


# The Secrets pods may reference (created outside k8s/, docs/deployment.md 3.3).
SECRETS = {"cascade-secrets", "cascade-api-keys", "cascade-redis-acl"}


def test_no_secret_values_only_references(overlay: tuple[str, Docs]) -> None:
    _, docs = overlay
    assert not by_kind(docs, "Secret"), "secret values do not belong in k8s/"
    for workload in pod_workloads(docs):
        for volume in pod_template(workload)["spec"].get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in SECRETS, volume
        for container in pod_template(workload)["spec"]["containers"]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "cascade-secrets", (
                        f"{item['name']}: unknown Secret {ref['name']}"
                    )
            for source in container.get("envFrom", []):
                assert "secretRef" not in source, "reference secret keys one by one"


def test_everything_lives_in_the_cascade_namespace(overlay: tuple[str, Docs]) -> None:
    _, docs = overlay
    one(docs, "Namespace", NAMESPACE)
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, (
                f"{doc['kind']}/{doc['metadata']['name']}"
            )


# ---- pod security and resources ---------------------------------------------------------------


def test_restricted_security_context_and_resources(overlay: tuple[str, Docs]) -> None:
    _, docs = overlay
    workloads = pod_workloads(docs)
    assert len(workloads) >= 5
    for workload in workloads:
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        spec = pod_template(workload)["spec"]
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, where
        assert pod_sc.get("runAsUser", 0) != 0, where
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), where
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["runAsNonRoot"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), (
                where
            )
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            assert not sc.get("privileged"), where
            for section in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][section]), (
                    f"{where}: {section}"
                )
            tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], (
                f"{where}: /tmp must be an emptyDir"
            )
            image = container["image"]
            assert ":" in image and not image.endswith(":latest"), f"{where}: pin {image}"


def _probe_port(container: dict[str, Any], probe: dict[str, Any]) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


def test_probes_hit_the_real_routes_and_ports(overlay: tuple[str, Docs]) -> None:
    _, docs = overlay
    for workload in [d for d in docs if d["kind"] in WORKLOAD_KINDS]:
        name = workload["metadata"]["name"]
        for container in pod_template(workload)["spec"]["containers"]:
            assert "readinessProbe" in container and "livenessProbe" in container, name
            if name not in SERVING:
                continue
            ready, live = container["readinessProbe"], container["livenessProbe"]
            env = config_env(docs, container)
            if name == "triton":
                assert ready["httpGet"]["path"] == facts.triton_ready_path()
                assert live["httpGet"]["path"] == "/v2/health/live"
                assert _probe_port(container, ready) == int(
                    env.get("TRITON_HTTP_PORT", facts.triton_ports()["http"])
                )
                continue
            code = facts.GATEWAY if name == "gateway" else facts.MF
            assert ready["httpGet"]["path"] == "/readyz" and live["httpGet"]["path"] == "/healthz"
            assert _probe_port(container, ready) == int(env[f"{code.env_prefix}PORT"])
            for probe in (ready, live, container.get("startupProbe")):
                if probe is None:
                    continue
                try:
                    assert code.serves(probe["httpGet"]["path"]), (
                        f"{name}: {probe['httpGet']['path']}"
                    )
                except facts.NotLandedError as exc:
                    pytest.skip(str(exc))


def test_service_ports_reach_container_ports(overlay: tuple[str, Docs]) -> None:
    _, docs = overlay
    for service in by_kind(docs, "Service"):
        pods = [
            pod_template(w)
            for w in docs
            if w["kind"] in WORKLOAD_KINDS
            and labels_match(
                {"matchLabels": service["spec"]["selector"]}, pod_template(w)["metadata"]["labels"]
            )
        ]
        assert pods, f"Service/{service['metadata']['name']} selects no workload"
        ports = {
            p.get("name"): p["containerPort"]
            for pod in pods
            for c in pod["spec"]["containers"]
            for p in c["ports"]
        }
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            assert (target in ports) if isinstance(target, str) else (target in ports.values())


def test_service_urls_in_config_resolve(overlay: tuple[str, Docs]) -> None:
    _, docs = overlay
    gateway = one(docs, "ConfigMap", "gateway-config")["data"]
    services = {
        s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]}
        for s in by_kind(docs, "Service")
    }
    host, port = gateway["GATEWAY_TRITON_URL"].split(":")
    assert int(port) in services[host] and int(port) == facts.triton_ports()["grpc"]
    mf_host, mf_port = gateway["GATEWAY_MF_URL"].removeprefix("http://").split(":")
    assert int(mf_port) in services[mf_host]


def test_configmap_keys_are_real_settings(
    overlay: tuple[str, Docs], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, docs = overlay
    for name, code in (("gateway-config", facts.GATEWAY), ("fallback-mf-config", facts.MF)):
        data = one(docs, "ConfigMap", name)["data"]
        try:
            unknown = sorted(set(data) - code.env_names())
        except facts.NotLandedError as exc:
            pytest.skip(str(exc))
        assert not unknown, f"{name}: {unknown} are not fields of {code.settings_class}"
        with monkeypatch.context() as m:
            for key in list(os.environ):
                if key.startswith(code.env_prefix):
                    m.delenv(key)
            for key, value in {**one(docs, "ConfigMap", "cascade-common")["data"], **data}.items():
                m.setenv(key, value)
            settings = code.settings_cls()()
        assert settings.host == "0.0.0.0"


# ---- availability and autoscaling ------------------------------------------------------------------


def test_every_workload_has_a_pdb(overlay: tuple[str, Docs]) -> None:
    _, docs = overlay
    pdbs = by_kind(docs, "PodDisruptionBudget")
    for workload in [d for d in docs if d["kind"] in WORKLOAD_KINDS]:
        labels = pod_template(workload)["metadata"]["labels"]
        covering = [p for p in pdbs if labels_match(p["spec"]["selector"], labels)]
        assert len(covering) == 1, f"{workload['metadata']['name']}: {len(covering)} PDBs"


def _hpa(docs: Docs, name: str) -> dict[str, Any]:
    hpa = one(docs, "HorizontalPodAutoscaler", name)
    ref = hpa["spec"]["scaleTargetRef"]
    one(docs, ref["kind"], ref["name"])
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    return hpa


def _metric_names(hpa: dict[str, Any]) -> dict[str, str]:
    out = {}
    for metric in hpa["spec"]["metrics"]:
        kind = metric["type"]
        body = metric[kind[0].lower() + kind[1:]]
        out[body["metric"]["name"] if "metric" in body else body["name"]] = kind
    return out


def test_hpas_scale_every_serving_tier_on_the_right_signals(overlay: tuple[str, Docs]) -> None:
    name, docs = overlay
    gateway = _metric_names(_hpa(docs, "gateway"))
    assert gateway == {"cpu": "Resource", "gateway_requests_per_second": "Pods"}
    mf_hpa = _hpa(docs, "fallback-mf")
    assert _metric_names(mf_hpa)["cascade_mf_demand_rps"] == "External"
    up = mf_hpa["spec"]["behavior"]["scaleUp"]
    assert up["stabilizationWindowSeconds"] == 0, "the MF tier must grow at the first signal"
    assert max(p["periodSeconds"] for p in up["policies"]) <= 15
    assert mf_hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    triton = _metric_names(_hpa(docs, "triton"))
    assert triton["triton_queue_us_per_request"] == "Pods"
    if name == "gpu-prod":
        assert triton["triton_gpu_utilization"] == "Pods"
        # The floor carries a full failover at peak before the HPA reacts (docs/capacity.md).
        assert mf_hpa["spec"]["minReplicas"] >= 6
        assert (
            one(docs, "Deployment", "fallback-mf")["spec"]["replicas"]
            >= mf_hpa["spec"]["minReplicas"]
        )


def test_rate_limit_share_and_trusted_proxies_follow_the_deployment(
    overlay: tuple[str, Docs],
) -> None:
    # Redis down: each replica limits a key to rate / GATEWAY_RATE_LIMIT_REPLICAS, so the value
    # must be at least the HPA's maximum or the fleet together lets a key exceed its rate.
    _, docs = overlay
    data = one(docs, "ConfigMap", "gateway-config")["data"]
    assert int(data["GATEWAY_RATE_LIMIT_REPLICAS"]) >= _hpa(docs, "gateway")["spec"]["maxReplicas"]
    assert data["GATEWAY_TRUSTED_PROXIES"], "X-Request-Start from the ingress must count"


def _adapter_config(monitoring: Docs) -> dict[str, Any]:
    return yaml.safe_load(
        one(monitoring, "ConfigMap", "prometheus-adapter-cascade")["data"]["config.yaml"]
    )


def _recording_rules(monitoring: Docs) -> str:
    return one(monitoring, "ConfigMap", "cascade-recording-rules")["data"][
        "cascade-autoscaling.rules.yml"
    ]


def test_hpa_metrics_are_served_by_the_adapter(overlay: tuple[str, Docs], monitoring: Docs) -> None:
    _, docs = overlay
    config = _adapter_config(monitoring)
    pods_metrics = {r["name"]["as"] for r in config["rules"]}
    external = {r["name"]["as"] for r in config["externalRules"]}
    recorded = {
        r["record"]
        for g in yaml.safe_load(_recording_rules(monitoring))["groups"]
        for r in g["rules"]
    }
    for rule in config["rules"] + config["externalRules"]:
        series = rule["seriesQuery"].split("{")[0].strip("'\"")
        assert series in recorded, f"adapter rule reads {series}, which no recording rule makes"
    for hpa in by_kind(docs, "HorizontalPodAutoscaler"):
        for metric, kind in _metric_names(hpa).items():
            if kind == "Pods":
                assert metric in pods_metrics, f"{hpa['metadata']['name']}: {metric} is not served"
            if kind == "External":
                assert metric in external, f"{hpa['metadata']['name']}: {metric} is not served"


def _gateway_series() -> set[str]:
    from gateway.metrics import GatewayMetrics

    names = set()
    for family in GatewayMetrics().registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return names


def test_recording_rules_read_series_the_gateway_exports(monitoring: Docs) -> None:
    import re

    rules = _recording_rules(monitoring)
    used = set(re.findall(r"(?<![:\w])(gateway_[a-z_]+)\b", rules))
    assert used >= {"gateway_requests_total", "gateway_fallbacks_total", "gateway_breaker_state"}
    missing = used - _gateway_series()
    assert not missing, f"recording rules use {missing}, which gateway/metrics.py does not export"


PROMTOOL_TESTS = """
rule_files: [rules.yml]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      # 10 req/s on one gateway pod; 1 req/s of it falls back (timeouts), 1 req/s cold starts.
      - series: 'gateway_requests_total{namespace="cascade",pod="gateway-a",route="/v1/recommendations/{user_id}",method="GET",status="200",tier="two_tower"}'
        values: '0+150x40'
      - series: 'gateway_requests_total{namespace="cascade",pod="gateway-a",route="/healthz",method="GET",status="200",tier="none"}'
        values: '0+1500x40'
      - series: 'gateway_fallbacks_total{namespace="cascade",pod="gateway-a",reason="timeout",tier="als"}'
        values: '0+15x40'
      - series: 'gateway_fallbacks_total{namespace="cascade",pod="gateway-a",reason="cold_start",tier="popular"}'
        values: '0+15x40'
      # The breaker opens at 5 minutes.
      - series: 'gateway_breaker_state{namespace="cascade",pod="gateway-a",breaker="primary"}'
        values: '0x19 2x20'
      - series: 'nv_inference_queue_duration_us{namespace="cascade",pod="triton-a",model="two_tower",version="1"}'
        values: '0+30000x40'
      - series: 'nv_inference_request_success{namespace="cascade",pod="triton-a",model="two_tower",version="1"}'
        values: '0+15x40'
    promql_expr_test:
      - expr: cascade:gateway_pod_rps
        eval_time: 4m
        exp_samples:
          - labels: 'cascade:gateway_pod_rps{namespace="cascade",pod="gateway-a"}'
            value: 10
      - expr: cascade:gateway_fallback_ratio
        eval_time: 4m
        exp_samples:
          - labels: 'cascade:gateway_fallback_ratio{namespace="cascade"}'
            value: 0.1
      # Breaker closed: the MF tier sees the fallbacks only.
      - expr: cascade:mf_demand_rps
        eval_time: 4m
        exp_samples:
          - labels: 'cascade:mf_demand_rps{namespace="cascade"}'
            value: 1
      # One scrape after the breaker opened: all the traffic, not a 1-minute ramp.
      - expr: cascade:mf_demand_rps
        eval_time: 5m15s
        exp_samples:
          - labels: 'cascade:mf_demand_rps{namespace="cascade"}'
            value: 10
      - expr: cascade:triton_queue_us_per_request
        eval_time: 4m
        exp_samples:
          - labels: 'cascade:triton_queue_us_per_request{namespace="cascade",pod="triton-a"}'
            value: 2000
  - interval: 15s
    input_series:
      # No fallback has ever happened (the counter has no series yet): demand is 0, not absent.
      - series: 'gateway_requests_total{namespace="cascade",pod="gateway-a",route="/v1/recommendations/{user_id}",method="GET",status="200",tier="two_tower"}'
        values: '0+150x20'
      - series: 'gateway_breaker_state{namespace="cascade",pod="gateway-a",breaker="primary"}'
        values: '0x20'
    promql_expr_test:
      - expr: cascade:mf_demand_rps
        eval_time: 3m
        exp_samples:
          - labels: 'cascade:mf_demand_rps{namespace="cascade"}'
            value: 0
"""


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool is not installed (make test installs it)"
)
def test_recording_rules_with_promtool(monitoring: Docs, tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(_recording_rules(monitoring))
    (tmp_path / "tests.yml").write_text(PROMTOOL_TESTS)
    for argv in (
        ["promtool", "check", "rules", "rules.yml"],
        ["promtool", "test", "rules", "tests.yml"],
    ):
        result = subprocess.run(
            argv, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


# ---- GPU ------------------------------------------------------------------------------------


def test_gpu_overlay_gives_triton_a_gpu() -> None:
    docs = render(K8S / "overlays" / "gpu-prod")
    spec = pod_template(one(docs, "Deployment", "triton"))["spec"]
    container = spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert spec["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    assert config_env(docs, container)["TRITON_MODEL_CONFIG_NAME"] == "gpu"
    cpu = pod_template(one(render(K8S / "overlays" / "cpu-dev"), "Deployment", "triton"))["spec"]
    assert "nvidia.com/gpu" not in cpu["containers"][0]["resources"]["limits"]
    gpu_config = facts.REPO / "triton_models" / "two_tower" / "configs" / "gpu.pbtxt"
    if not gpu_config.is_file():
        pytest.skip("triton_models/two_tower/configs/gpu.pbtxt not generated yet")
    assert "KIND_GPU" in gpu_config.read_text()


# ---- network policies ---------------------------------------------------------------------------


def _peer_matches(peer: dict[str, Any], namespace: str, labels: dict[str, str]) -> bool:
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        if not labels_match(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace}):
            return False
    elif namespace != NAMESPACE:
        return False
    return labels_match(peer.get("podSelector", {}), labels)


def _port_ok(rule: dict[str, Any], port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    return not ports or any(
        p["port"] == port and p.get("protocol", "TCP") == protocol for p in ports
    )


def allowed(
    docs: Docs,
    src: tuple[str, dict[str, str]],
    dst: tuple[str, dict[str, str]],
    port: int,
    protocol: str = "TCP",
) -> bool:
    """Whether the policies let ``src`` (namespace, labels) open ``port`` on ``dst``.

    Each side is checked only when it is in our namespace (the other namespace's own policies
    are not ours to ship); a side selected by no policy of the matching type is open.
    """
    policies = by_kind(docs, "NetworkPolicy")

    def side(
        direction: str, me: tuple[str, dict[str, str]], peer: tuple[str, dict[str, str]]
    ) -> bool:
        if me[0] != NAMESPACE:
            return True
        selecting = [
            p
            for p in policies
            if direction in p["spec"]["policyTypes"]
            and labels_match(p["spec"]["podSelector"], me[1])
        ]
        if not selecting:
            return True
        key, peers = ("egress", "to") if direction == "Egress" else ("ingress", "from")
        return any(
            _port_ok(rule, port, protocol)
            and (not rule.get(peers) or any(_peer_matches(x, *peer) for x in rule[peers]))
            for p in selecting
            for rule in p["spec"].get(key, [])
        )

    return side("Egress", src, dst) and side("Ingress", dst, src)


def _pods(docs: Docs) -> dict[str, tuple[str, dict[str, str]]]:
    return {
        w["metadata"]["name"]: (NAMESPACE, pod_template(w)["metadata"]["labels"])
        for w in pod_workloads(docs)
    }


EXTERNAL = {
    "ingress": ("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
    "prometheus": ("monitoring", {"app.kubernetes.io/name": "prometheus"}),
    "jaeger": ("observability", {"app.kubernetes.io/name": "jaeger"}),
    "dns": ("kube-system", {"k8s-app": "kube-dns"}),
}


def test_default_deny_is_in_place(overlay: tuple[str, Docs]) -> None:
    _, docs = overlay
    deny = [
        p
        for p in by_kind(docs, "NetworkPolicy")
        if p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert deny, "no default-deny NetworkPolicy"


def test_network_policies_allow_exactly_the_needed_edges(overlay: tuple[str, Docs]) -> None:
    name, docs = overlay
    pods = _pods(docs)
    ext = EXTERNAL
    gw, mf, tr = pods["gateway"], pods["fallback-mf"], pods["triton"]
    jobs = [pods["cascade-materialize"], pods["cascade-retrain"]]
    need = [
        (ext["ingress"], gw, 8000),
        (gw, tr, 8001),
        (gw, mf, 8001),
        (ext["prometheus"], gw, 8000),
        (ext["prometheus"], mf, 8001),
        (ext["prometheus"], tr, 8002),
    ]
    for pod in pods.values():
        need += [(pod, ext["jaeger"], 4318)]
        assert allowed(docs, pod, ext["dns"], 53, "UDP") and allowed(
            docs, pod, ext["dns"], 53, "TCP"
        )
    if "redis" in pods:
        need += [(gw, pods["redis"], 6379)] + [(job, pods["redis"], 6379) for job in jobs]
    for src, dst, port in need:
        assert allowed(docs, src, dst, port), f"{name}: {src} -> {dst}:{port} is blocked"
    forbidden = [
        (ext["ingress"], tr, 8001),
        (ext["ingress"], mf, 8001),
        (mf, tr, 8001),
        (tr, mf, 8001),
        (jobs[0], gw, 8000),
        (gw, ext["prometheus"], 9090),
        (ext["prometheus"], tr, 8001),
        (gw, tr, 8002),
        (gw, tr, 8000),  # Triton's HTTP admin surface: the gateway uses gRPC only
        (gw, ext["jaeger"], 4317),  # OTLP over HTTP only
    ]
    if "redis" in pods:
        forbidden += [
            (tr, pods["redis"], 6379),
            (mf, pods["redis"], 6379),
            (ext["ingress"], pods["redis"], 6379),
        ]
    for src, dst, port in forbidden:
        assert not allowed(docs, src, dst, port), f"{name}: {src} -> {dst}:{port} should be denied"


# ---- jobs ------------------------------------------------------------------------------------------


def test_cronjobs_for_materialization_and_retraining(overlay: tuple[str, Docs]) -> None:
    _, docs = overlay
    cronjobs = {c["metadata"]["name"]: c for c in by_kind(docs, "CronJob")}
    assert {"cascade-materialize", "cascade-retrain"} <= set(cronjobs)
    problems = []
    for cronjob in cronjobs.values():
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
        container = pod_template(cronjob)["spec"]["containers"][0]
        script = " ".join(container.get("args", []))
        assert "cascade " in script
        try:
            problems += facts.check_cascade_command(script)
        except facts.NotLandedError as exc:
            pytest.skip(str(exc))
    assert "materialize" in " ".join(
        pod_template(cronjobs["cascade-materialize"])["spec"]["containers"][0]["args"]
    )
    retrain = " ".join(pod_template(cronjobs["cascade-retrain"])["spec"]["containers"][0]["args"])
    assert "cascade train mf" in retrain and "cascade export two-tower" in retrain
    assert not problems, "\n".join(problems)


# ---- API security (docs/security.md) ----------------------------------------------------------------


def test_gateway_starts_with_auth_on_from_the_api_keys_secret(
    overlay: tuple[str, Docs], tmp_path: Path
) -> None:
    """The key file is the Secret cascade-api-keys, mounted read-only as a directory (a subPath
    mount never sees the Secret's updates, so revocation would need a restart); the metrics
    token is a required key of cascade-secrets; the settings start with auth on."""
    _, docs = overlay
    spec = pod_template(one(docs, "Deployment", "gateway"))["spec"]
    (container,) = spec["containers"]
    env = config_env(docs, container)
    assert env.get("GATEWAY_AUTH_ENABLED", "").lower() not in {"false", "0", "no", "off"}
    keys_file = Path(env["GATEWAY_API_KEYS_FILE"])
    volumes = {v["name"]: v for v in spec["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if keys_file.is_relative_to(m["mountPath"])]
    assert mount.get("readOnly") is True and "subPath" not in mount, mount
    secret = volumes[mount["name"]]["secret"]
    assert secret["secretName"] == "cascade-api-keys" and not secret.get("optional")
    paths = {item["path"] for item in secret.get("items", [])}
    assert str(keys_file.relative_to(mount["mountPath"])) in paths
    # Readable by the pod's group (fsGroup), not by the world.
    assert secret["defaultMode"] & 0o007 == 0 and secret["defaultMode"] & 0o040
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"]

    refs = {
        item["name"]: item["valueFrom"]["secretKeyRef"]
        for item in container.get("env", [])
        if "secretKeyRef" in item.get("valueFrom", {})
    }
    token = refs["GATEWAY_METRICS_TOKEN"]
    assert token["name"] == "cascade-secrets" and not token.get("optional"), token
    assert refs["GATEWAY_RATE_LIMIT_REDIS_URL"]["name"] == "cascade-secrets"
    try:
        settings = facts.gateway_env_settings(
            {**env, "GATEWAY_METRICS_TOKEN": "t" * 32}, keys_dir=tmp_path
        )
        config = facts.gateway_security(settings)
    except facts.NotLandedError as exc:
        pytest.skip(str(exc))
    assert settings.host == "0.0.0.0" and config.enabled and config.keyring is not None


def test_gateway_is_scraped_with_its_metrics_token(
    overlay: tuple[str, Docs], monitoring: Docs
) -> None:
    """No annotation-driven scrape of the gateway (it would get 403): the monitoring addon's
    job sends `Authorization: Bearer` and keeps the labels the recording rules group by."""
    _, docs = overlay
    annotations = pod_template(one(docs, "Deployment", "gateway"))["metadata"].get(
        "annotations", {}
    )
    assert annotations.get("prometheus.io/scrape") != "true"
    scrape = yaml.safe_load(
        one(monitoring, "ConfigMap", "cascade-scrape-config")["data"]["cascade-gateway.scrape.yml"]
    )
    (job,) = [j for j in scrape["scrape_configs"] if j["job_name"] == "gateway"]
    assert job["authorization"]["type"] == "Bearer"
    assert job["authorization"]["credentials_file"].startswith("/")
    assert "credentials" not in job["authorization"]
    (sd,) = job["kubernetes_sd_configs"]
    assert sd["role"] == "pod" and sd["namespaces"]["names"] == [NAMESPACE]
    labels = pod_template(one(docs, "Deployment", "gateway"))["metadata"]["labels"]
    for selector in sd.get("selectors", []):
        key, value = selector["label"].split("=")
        assert labels.get(key) == value
    relabel = {r.get("target_label"): r.get("source_labels") for r in job["relabel_configs"]}
    assert relabel["namespace"] == ["__meta_kubernetes_namespace"]
    assert relabel["pod"] == ["__meta_kubernetes_pod_name"]
    keep = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    port_names = {
        p["name"]
        for c in pod_template(one(docs, "Deployment", "gateway"))["spec"]["containers"]
        for p in c["ports"]
    }
    assert keep and keep[0]["regex"] in port_names


# ---- the event log (issue 17) ---------------------------------------------------------------------


def test_gateway_and_consumer_share_the_event_logs_layout(overlay: tuple[str, Docs]) -> None:
    """Both create the streams (EventLog.ensure_stream reads EVENTS_STREAM_*) and the gateway
    publishes to the partitions the consumer reads: the same values on both sides, and as many
    stream replicas as NATS servers at most."""
    name, docs = overlay
    gateway = pod_template(one(docs, "Deployment", "gateway"))["spec"]["containers"][0]
    consumer = pod_template(one(docs, "Deployment", "events-consumer"))["spec"]["containers"][0]
    gw, ev = config_env(docs, gateway), config_env(docs, consumer)
    shared = sorted(k for k in set(gw) | set(ev) if k.startswith(("EVENTS_STREAM_", "EVENTS_PART")))
    assert "EVENTS_STREAM_REPLICAS" in shared and "EVENTS_PARTITIONS" in shared
    assert all(gw.get(k) == ev.get(k) for k in shared), {k: (gw.get(k), ev.get(k)) for k in shared}
    assert gw["GATEWAY_EVENTS_NATS_URL"] == ev["EVENTS_NATS_URL"]
    servers = one(docs, "StatefulSet", "nats")["spec"]["replicas"]
    assert int(ev["EVENTS_STREAM_REPLICAS"]) <= servers
    if name == "gpu-prod":
        assert int(ev["EVENTS_STREAM_REPLICAS"]) == servers == 3  # R3: a quorum of 2 acks
