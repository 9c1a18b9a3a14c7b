"""The Grafana provisioning and dashboard are valid, and every PromQL expression (dashboard and
alert rules) parses and uses only metric names that exist.

Known names: the gateway's registry as built by its app factory (``create_app().state.metrics``),
the MF service's registry (``ServiceMetrics``), the Triton 2.51 metric set in names.py (measured here
from a running ``tritonserver``'s /metrics), Prometheus' own ``up``, and the recording rules."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.observability.names import (
    DATASOURCE,
    PROVIDERS,
    alert_exprs,
    dashboard,
    dashboard_exprs,
    gateway_names,
    known_names,
    metric_names,
    mf_names,
)


def test_metric_names_helper() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, tier) (rate(gateway_request_seconds_bucket{route=~"/v1.*"}'
        "[$__rate_interval]))) / ignoring (tier) group_left sum(cascade:x:rate5m) and up == 1"
    )
    assert metric_names(expr) == {"gateway_request_seconds_bucket", "cascade:x:rate5m", "up"}


def test_provisioning_matches_compose_mounts_and_the_dashboard_datasource() -> None:
    datasources = yaml.safe_load(DATASOURCE.read_text())["datasources"]
    (prom,) = [d for d in datasources if d["type"] == "prometheus"]
    providers = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"
    board = dashboard()
    assert board["uid"] and board["title"]
    panels = [p for p in board["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert panel["datasource"]["uid"] == prom["uid"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == prom["uid"]


def test_dashboard_covers_what_sres_asked_for() -> None:
    exprs = "\n".join(dashboard_exprs())
    for needle in (
        "gateway_requests_total",  # traffic
        "gateway_request_seconds_bucket",  # latency percentiles per tier
        "gateway_fallbacks_total",  # fallback reasons
        "cascade:gateway_fallback:ratio_rate5m",  # fallback share
        "gateway_breaker_state",  # breaker state over time
        "nv_inference_queue_duration_us",  # Triton queue time
        "nv_inference_compute_infer_duration_us",  # Triton compute time
        "gateway_feature_read_seconds_bucket",  # feature latency
        'up{job="gateway"}',  # replicas
    ):
        assert needle in exprs, needle


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_metric_name_exists(source: str) -> None:
    exprs = dashboard_exprs() if source == "dashboard" else alert_exprs()
    known = known_names()
    unknown = {name: expr for expr in exprs for name in metric_names(expr) if name not in known}
    assert not unknown, f"metric names no exporter defines: {unknown}"


def test_gateway_and_mf_registries_expose_what_the_rules_need() -> None:
    # A rename in gateway/metrics.py or fallback_mf/service_metrics.py must show up here.
    assert {
        "gateway_requests_total",
        "gateway_request_seconds_bucket",
        "gateway_fallbacks_total",
        "gateway_served_total",
        "gateway_breaker_state",
        "gateway_feature_read_errors_total",
        "gateway_feature_read_seconds_count",
    } <= gateway_names()
    assert {"mf_request_duration_seconds_bucket", "mf_requests_total"} <= mf_names()


def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: `make test` installs it (apt-get install -y prometheus)")
    # Grafana's $__rate_interval is not PromQL: check each expression as a recording rule.
    rules = [
        {"record": f"dashboard:expr_{i}", "expr": expr.replace("$__rate_interval", "1m")}
        for i, expr in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
