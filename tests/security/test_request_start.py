"""Issue 20, item 4: an unauthenticated client cannot page SREs or drive autoscaling.

``X-Request-Start`` is believed before authentication only from ``GATEWAY_TRUSTED_PROXIES``;
from anyone else only once the request is authenticated. Requests the edge refuses (401, 429,
shed before the route) are labelled ``route="refused"``, which the SLO and scaling rules never
select (their promtool tests: deploy/prometheus/alerts_test.yml, tests/deploy/test_k8s.py).
"""

from __future__ import annotations

import time
from pathlib import Path

from gateway.main import create_app
from tests.gateway.appclient import AppClient
from tests.gateway.fakes import Fakes
from tests.security.test_gateway_security import Keys, bearer, secure_settings

URL = "/v1/recommendations"


def stamp(seconds_ago: float) -> dict[str, str]:
    return {"X-Request-Start": f"t={time.time() - seconds_ago:.3f}"}


def series(metrics: str, name: str) -> list[str]:
    return [line for line in metrics.splitlines() if line.startswith(name + "{")]


def test_no_credentials_and_an_old_stamp_is_a_401_and_no_5xx_series_moves(tmp_path: Path) -> None:
    k = Keys(tmp_path)
    fakes = Fakes()
    settings = secure_settings(k, queue_shed_fraction=0.5, rate_limit_rps=1, rate_limit_burst=1)
    with AppClient(create_app(settings, components=fakes.factory)) as client:
        anonymous = [client.get(f"{URL}/1?k=5", headers=stamp(30.0)) for _ in range(3)]
        limited = [client.get(f"{URL}/1?k=5", headers=bearer(k.good)) for _ in range(3)]
        metrics = client.get("/metrics").text
    assert [r.status_code for r in anonymous] == [401, 401, 401]
    assert [r.status_code for r in limited] == [200, 429, 429]
    requests = series(metrics, "gateway_requests_total")
    assert not [line for line in requests if 'status="5' in line], requests
    # The refusals are counted, but never under a recommendation route (what the rules select).
    refused = [line for line in requests if 'route="refused"' in line]
    assert any('status="401"' in line and line.endswith(" 3.0") for line in refused), refused
    assert any('status="429"' in line and line.endswith(" 2.0") for line in refused), refused
    on_route = [line for line in requests if 'route="/v1/recommendations' in line]
    assert on_route and all('status="200"' in line and line.endswith(" 1.0") for line in on_route)
    assert 'gateway_shed_total{reason="queue_time"}' not in metrics
    assert "gateway_upstream_queue_seconds_count 0.0" in metrics


def test_an_authenticated_request_s_stamp_is_believed_after_authentication(
    tmp_path: Path,
) -> None:
    """Untrusted peer: the stamp still shortens the budget, once the caller is known."""
    k = Keys(tmp_path)
    fakes = Fakes()
    settings = secure_settings(k, queue_shed_fraction=0.5)
    with AppClient(create_app(settings, components=fakes.factory)) as client:
        late = client.get(f"{URL}/1?k=5", headers={**bearer(k.good), **stamp(0.3)})
        fresh = client.get(f"{URL}/1?k=5", headers={**bearer(k.good), **stamp(0.01)})
        metrics = client.get("/metrics").text
    assert late.status_code == 503 and late.json()["code"] == "overloaded"
    assert fresh.status_code == 200
    assert fakes.features.calls == 1
    assert "gateway_upstream_queue_seconds_count 2.0" in metrics


def test_a_trusted_proxy_s_stamp_sheds_before_authentication(tmp_path: Path) -> None:
    """From the ingress (here the in-process client's 127.0.0.1) the stamp is believed at the
    edge: an overloaded gateway refuses late requests before spending anything on them, and
    that 503 is an edge refusal, outside the SLO series."""
    k = Keys(tmp_path)
    settings = secure_settings(k, queue_shed_fraction=0.5, trusted_proxies="127.0.0.0/8, ::1")
    with AppClient(create_app(settings, components=Fakes().factory)) as client:
        late = client.get(f"{URL}/1?k=5", headers=stamp(0.3))
        metrics = client.get("/metrics").text
    assert late.status_code == 503
    assert 'gateway_shed_total{reason="queue_time"} 1.0' in metrics
    shed = [line for line in series(metrics, "gateway_requests_total") if 'status="503"' in line]
    assert shed and all('route="refused"' in line for line in shed)


def test_trusted_proxies_must_be_networks() -> None:
    import pytest
    from pydantic import ValidationError

    from tests.gateway.test_api import make_settings

    with pytest.raises(ValidationError):
        make_settings(trusted_proxies="10.0.0.0/8,ingress")
