"""What the dashboard and the rules read: their PromQL expressions, the metric names in them, and
the names each exporter defines (shared by tests/observability and tests/integration)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "cascade.json"
DATASOURCE = GRAFANA / "provisioning" / "datasources" / "datasource.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

# Triton 2.51 (nvidia-pytriton 0.7.0's tritonserver) on CPU, measured: GET :8002/metrics after one
# inference on a Python-backend model. GPU builds add nv_gpu_* and nv_energy_*.
TRITON_METRICS = frozenset(
    {
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_input_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_compute_output_duration_us",
        "nv_inference_pending_request_count",
        "nv_pinned_memory_pool_total_bytes",
        "nv_pinned_memory_pool_used_bytes",
        "nv_cpu_utilization",
        "nv_cpu_memory_total_bytes",
        "nv_cpu_memory_used_bytes",
    }
)
PROMETHEUS_METRICS = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "gauge": ("",),
}
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
             "bool", "offset", "inf", "nan"}  # fmt: skip


def sample_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name a registry can expose, whether or not a labelled child exists yet."""
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def gateway_names() -> set[str]:
    from gateway.main import create_app

    return sample_names(create_app().state.metrics.registry)


def mf_names() -> set[str]:
    from fallback_mf.service.metrics import ServiceMetrics

    return sample_names(ServiceMetrics().registry)


def events_names() -> set[str]:
    from events.metrics import ConsumerMetrics

    return sample_names(ConsumerMetrics().registry)


def recording_rules() -> set[str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return {r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r}


def known_names() -> set[str]:
    return (
        gateway_names()
        | mf_names()
        | events_names()
        | TRITON_METRICS
        | PROMETHEUS_METRICS
        | recording_rules()
    )


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (strings, label lists, ranges, functions removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery windows
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        token, is_call = match.group(1), match.group(2)
        if not is_call and token.lower() not in _KEYWORDS:
            names.add(token)
    return names


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def alert_exprs() -> list[str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]
