"""Issue 20, item 3: ``POST /admin/reload`` is behind a token (or loopback only) and throttled."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from fallback_mf.service.admin import ReloadThrottle
from fallback_mf.service.errors import ReloadThrottled
from fallback_mf.service.main import create_app
from fallback_mf.service.settings import MfSettings
from tests.fallback_mf.service_helpers import AppClient, FakeArtifacts, settings_for

TOKEN = "t" * 32


def from_peer(client: AppClient, host: str) -> None:
    """Requests from now on come from ``host`` (the in-process transport says 127.0.0.1)."""
    client.http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=client.app, client=(host, 40000)), base_url="http://mf"
    )


def test_without_a_token_only_loopback_peers_may_reload(artifacts: FakeArtifacts) -> None:
    with AppClient(create_app(settings_for(artifacts), loader=artifacts)) as c:
        artifacts.publish("v2")
        from_peer(c, "10.2.3.4")
        r = c.post("/admin/reload")
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
        assert artifacts.loads == ["v1"]  # nothing was loaded
        from_peer(c, "127.0.0.1")
        assert c.post("/admin/reload").json()["model_version"] == "v2"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": f"Basic {TOKEN}"}],
)
def test_with_a_token_a_call_without_it_is_401(
    artifacts: FakeArtifacts, headers: dict[str, str]
) -> None:
    app = create_app(settings_for(artifacts, admin_token=TOKEN), loader=artifacts)
    with AppClient(app) as c:
        artifacts.publish("v2")
        r = c.post("/admin/reload", headers=headers)  # loopback is not enough once a token is set
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")
        from_peer(c, "10.2.3.4")
        r = c.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json()["model_version"] == "v2"
        assert c.get("/v1/recommendations/101").status_code == 200  # the API needs no token


def test_reloads_are_throttled(artifacts: FakeArtifacts) -> None:
    app = create_app(settings_for(artifacts, reload_min_interval_s=60), loader=artifacts)
    with AppClient(app) as c:
        artifacts.publish("v2")
        assert c.post("/admin/reload").status_code == 200
        artifacts.publish("v3")
        r = c.post("/admin/reload")
        assert r.status_code == 429 and r.json()["code"] == "reload_throttled"
        assert 55 <= int(r.headers["retry-after"]) <= 60
        assert c.get("/readyz").json()["model_version"] == "v2"
        assert artifacts.loads == ["v1", "v2"]


def test_the_throttle_counts_from_the_last_admitted_call() -> None:
    now = [0.0]
    throttle = ReloadThrottle(10, clock=lambda: now[0])
    throttle.admit()
    now[0] = 9.5
    with pytest.raises(ReloadThrottled) as refused:
        throttle.admit()
    assert refused.value.headers == {"Retry-After": "1"}
    now[0] = 10.0
    throttle.admit()
    ReloadThrottle(0).admit()


def test_defaults_and_a_short_token_is_refused() -> None:
    settings = MfSettings()
    assert settings.admin_token is None and settings.reload_min_interval_s == 10
    with pytest.raises(ValidationError):
        MfSettings(admin_token="short")
    assert MfSettings(admin_token="").admin_token is None
