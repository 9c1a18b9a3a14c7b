"""Issue 20, item 4: requests the gateway refuses never reach the autoscaling signals.

docs/capacity.md promises that 429s never reach the HPA's signal. The gateway exports every
edge refusal (401, 403, 413, 429, 431, 503 shed before a route; tests/security/
test_request_start.py) under ``route="refused"``, and the HPA recording rules select the
recommendation routes only: an anonymous flood adds no gateway and no MF pod. Checked here on
the rules exactly as deployed (k8s/addons/monitoring), with promtool.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gateway.errors import REFUSED_ROUTE
from tests.deploy.test_k8s import K8S, _recording_rules, render

FLOOD_TESTS = """
rule_files: [rules.yml]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      # 10 req/s served on one pod...
      - series: 'gateway_requests_total{namespace="cascade",pod="gateway-a",route="/v1/recommendations/{user_id}",method="GET",status="200",tier="two_tower"}'
        values: '0+150x20'
      # ...and a flood 100 times larger that the edge refused: 401, 429, 503 shed before auth
      - series: 'gateway_requests_total{namespace="cascade",pod="gateway-a",route="refused",method="GET",status="401",tier="none"}'
        values: '0+12000x20'
      - series: 'gateway_requests_total{namespace="cascade",pod="gateway-a",route="refused",method="POST",status="429",tier="none"}'
        values: '0+2000x20'
      - series: 'gateway_requests_total{namespace="cascade",pod="gateway-a",route="refused",method="GET",status="503",tier="none"}'
        values: '0+1000x20'
      - series: 'gateway_breaker_state{namespace="cascade",pod="gateway-a",breaker="primary"}'
        values: '2x20'
    promql_expr_test:
      - expr: cascade:gateway_pod_rps
        eval_time: 4m
        exp_samples:
          - labels: 'cascade:gateway_pod_rps{namespace="cascade",pod="gateway-a"}'
            value: 10
      # breaker open: the MF tier's demand is all the *served* traffic, not the flood
      - expr: cascade:mf_demand_rps
        eval_time: 4m
        exp_samples:
          - labels: 'cascade:mf_demand_rps{namespace="cascade"}'
            value: 10
"""


def test_the_refused_route_label_is_outside_every_scaling_selector() -> None:
    rules = _recording_rules(render(K8S / "addons" / "monitoring"))
    selectors = re.findall(r'route=~"([^"]+)"', rules)
    assert selectors
    for pattern in selectors:
        assert not re.fullmatch(pattern, REFUSED_ROUTE), pattern
    yaml.safe_load(rules)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_a_refused_flood_moves_no_scaling_signal(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(_recording_rules(render(K8S / "addons" / "monitoring")))
    (tmp_path / "tests.yml").write_text(FLOOD_TESTS)
    result = subprocess.run(
        ["promtool", "test", "rules", "tests.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
