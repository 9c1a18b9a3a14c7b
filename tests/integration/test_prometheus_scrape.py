"""A real Prometheus (Debian package ``prometheus``) scrapes the real local stack (conftest.py:
gateway, MF service, tritonserver) every second with our rules loaded; the test reads the
gateway's series back through Prometheus' HTTP API and checks the rules evaluate cleanly.

The scrape config is deploy/prometheus/prometheus.local.yml with the test's ports and a 1 s
interval, so the job names the rules and the dashboard rely on are the ones under test."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cascade.runtime.procs import ManagedProcess, free_port
from tests.integration.conftest import GatewayStack
from tests.observability.names import TRITON_METRICS, alert_exprs, dashboard_exprs, metric_names

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
REC_ROUTE = "/v1/recommendations/{user_id}"


def prometheus_config(stack: GatewayStack, *, prometheus_port: int) -> dict[str, Any]:
    """prometheus.local.yml pointed at the stack's ports, scraping and evaluating every second."""
    config = yaml.safe_load((PROM_DIR / "prometheus.local.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROM_DIR / name) for name in config["rule_files"]]
    triton_metrics = stack.triton_settings.metrics_port  # type: ignore[attr-defined]
    targets = {
        "gateway": f"127.0.0.1:{stack.gateway_port}",
        "fallback_mf": f"127.0.0.1:{stack.mf_port}",
        "triton": f"127.0.0.1:{triton_metrics}",
        "prometheus": f"127.0.0.1:{prometheus_port}",
    }
    # This stack runs no events consumer: scrape only the jobs it has.
    config["scrape_configs"] = [j for j in config["scrape_configs"] if j["job_name"] in targets]
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    return dict(config)


@pytest.fixture
def prometheus(gateway_stack: GatewayStack, tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: `make test` installs it (apt-get install -y prometheus)")
    gateway_stack.heal()
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(gateway_stack, prometheus_port=port)))
    proc = ManagedProcess(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        log_path=tmp_path / "prometheus.log",
    )
    with proc:
        proc.wait_ready(f"http://127.0.0.1:{port}/-/ready", timeout=30)
        yield f"http://127.0.0.1:{port}"


def query(http: httpx.Client, promql: str) -> list[dict[str, Any]]:
    body = http.get("/api/v1/query", params={"query": promql}).json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def wait_until(check: Callable[[], Any], *, timeout: float = 15.0, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def direct_counter(text: str, name: str, **labels: str) -> float:
    """Sum of a counter's series with these labels, read straight from a /metrics page."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{"):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("} ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_prometheus_scrapes_the_stack_and_evaluates_the_rules(
    gateway_stack: GatewayStack, prometheus: str
) -> None:
    users = [int(u) for u in gateway_stack.users()[:20]]
    with (
        httpx.Client(base_url=prometheus, timeout=5) as prom,
        httpx.Client(base_url=gateway_stack.url, timeout=5) as gw,
    ):
        # every target is up (after its first scrape, so the requests below are a rate)
        up = wait_until(
            lambda: (
                {r["metric"]["job"] for r in query(prom, "up == 1")}
                >= {"gateway", "fallback_mf", "triton"}
                and query(prom, "up")
            ),
            what="gateway, fallback_mf and triton targets up",
        )
        assert {r["metric"]["job"] for r in up if r["value"][1] == "0"} == set(), up

        for user in users:
            assert gw.get(f"/v1/recommendations/{user}", params={"k": 5}).status_code == 200
        served = direct_counter(
            gw.get("/metrics").text, "gateway_requests_total", route=REC_ROUTE, status="200"
        )
        assert served >= len(users)

        # the gateway's request counter, read back through Prometheus, has caught up with /metrics
        promql = f'sum(gateway_requests_total{{job="gateway", route="{REC_ROUTE}", status="200"}})'
        wait_until(
            lambda: (r := query(prom, promql)) and float(r[0]["value"][1]) >= served,
            what=f"{promql} >= {served}",
        )
        by_tier = query(
            prom, f'sum by (tier) (gateway_requests_total{{job="gateway", route="{REC_ROUTE}"}})'
        )
        assert "two_tower" in {r["metric"]["tier"] for r in by_tier}, by_tier

        # the other families the rules and the dashboard read
        breaker = query(prom, 'gateway_breaker_state{job="gateway", breaker="primary"}')
        assert [r["value"][1] for r in breaker] == ["0"], breaker
        assert query(prom, 'gateway_request_seconds_bucket{job="gateway", le="0.25"}')
        assert query(prom, 'gateway_feature_read_seconds_count{job="gateway"}')
        assert query(prom, 'mf_requests_in_flight{job="fallback_mf"}')
        assert query(prom, 'nv_inference_count{job="triton", model="two_tower"}')

        # the recording rules produce values from the real series, and no rule errors
        wait_until(
            lambda: (
                query(prom, "cascade:gateway_requests:rate5m > 0")
                and query(prom, "cascade:gateway_request_seconds:p99_5m")
            ),
            what="recording rules evaluated",
        )
        groups = prom.get("/api/v1/rules").json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert {rule["name"] for rule in rules if rule["type"] == "alerting"} >= {
            "CascadeBreakerOpen",
            "CascadeTritonModelNotReady",
        }
        assert all(rule["health"] in {"ok", "unknown"} for rule in rules), [
            (rule["name"], rule.get("lastError")) for rule in rules if rule["health"] == "err"
        ]
        # a healthy stack: the Triton rule sees the model's series and is inactive. An evaluation
        # that ran before the first Triton scrape landed (a loaded CI machine) leaves it pending
        # for one interval; it must clear, never stay.
        wait_until(
            lambda: (
                "CascadeTritonModelNotReady"
                not in {
                    a["labels"]["alertname"]
                    for a in prom.get("/api/v1/alerts").json()["data"]["alerts"]
                }
            ),
            what="CascadeTritonModelNotReady inactive",
        )


def test_triton_metric_names_used_by_rules_and_dashboard_are_live(
    gateway_stack: GatewayStack,
) -> None:
    """The Triton names the dashboard and alerts read (tests/observability's measured list) are
    exposed by the real tritonserver serving the two_tower model."""
    gateway_stack.heal()
    port = gateway_stack.triton_settings.metrics_port  # type: ignore[attr-defined]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    live = {m.group(1) for m in re.finditer(r"^# TYPE (\S+) ", text, flags=re.MULTILINE)}
    assert live >= TRITON_METRICS, sorted(TRITON_METRICS - live)
    used = {
        n for e in dashboard_exprs() + alert_exprs() for n in metric_names(e) if n.startswith("nv_")
    }
    assert used and used <= live, sorted(used - live)
    assert re.search(
        r'^nv_inference_count\{model="two_tower",version="\d+"\}', text, flags=re.MULTILINE
    )
