"""The MF service's model lifecycle: not ready until a model loads, the reload endpoint,
a pinned version, and requests that keep succeeding while versions swap under them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from fallback_mf.service.main import create_app
from fallback_mf.service.settings import MfSettings
from tests.fallback_mf.service_helpers import AppClient, FakeArtifacts, settings_for


def test_not_ready_without_artifact_then_periodic_load(tmp_path: Path) -> None:
    fake = FakeArtifacts(tmp_path / "als")
    app = create_app(MfSettings(artifacts_dir=fake.root, reload_interval_s=0.05), loader=fake)
    with AppClient(app) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["code"] == "model_not_ready"
        assert c.get("/v1/recommendations/1").status_code == 503
        fake.publish("v2")
        for _ in range(100):
            if c.get("/readyz").status_code == 200:
                break
            c.sleep(0.02)
        assert c.get("/v1/recommendations/101").json()["model_version"] == "v2"


def test_start_fails_without_artifact_when_nothing_would_retry(tmp_path: Path) -> None:
    fake = FakeArtifacts(tmp_path / "als")
    with (
        pytest.raises(Exception, match="latest"),
        AppClient(create_app(settings_for(fake), loader=fake)),
    ):
        pass


def test_reload_endpoint(client: AppClient, artifacts: FakeArtifacts) -> None:
    artifacts.publish("v2")
    r = client.post("/admin/reload")
    assert r.json() == {"previous_version": "v1", "model_version": "v2", "reloaded": True}
    assert client.get("/v1/recommendations/101").json()["model_version"] == "v2"
    r = client.post("/admin/reload", json={"version": "v1"})
    assert r.status_code == 200 and r.json()["model_version"] == "v1"
    r = client.post("/admin/reload", json={"version": "v9"})
    assert r.status_code == 409 and r.json()["code"] == "reload_failed"
    r = client.post("/admin/reload", json={"version": "../x"})
    assert r.status_code == 409
    assert client.get("/readyz").json()["model_version"] == "v1"  # still serving the old one
    assert 'mf_reloads_total{result="failed"} 2.0' in client.get("/metrics").text


def test_pinned_version_ignores_latest(artifacts: FakeArtifacts) -> None:
    artifacts.publish("v2")
    app = create_app(settings_for(artifacts, version="v1"), loader=artifacts)
    with AppClient(app) as c:
        assert c.get("/readyz").json()["model_version"] == "v1"


def test_requests_keep_succeeding_during_reloads(artifacts: FakeArtifacts) -> None:
    """Hammer the API from several tasks while versions swap under it: never a non-2xx."""
    asyncio.run(_hammer_while_reloading(artifacts))


async def _hammer_while_reloading(artifacts: FakeArtifacts) -> None:
    app = create_app(settings_for(artifacts), loader=artifacts)
    statuses: list[int] = []
    versions: set[str] = set()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mf") as http:
            stop = asyncio.Event()

            async def hammer() -> None:
                while not stop.is_set():
                    r = await http.get("/v1/recommendations/105", params={"k": 7})
                    statuses.append(r.status_code)
                    versions.add(r.json()["model_version"])
                    await asyncio.sleep(0)

            tasks = [asyncio.create_task(hammer()) for _ in range(4)]
            for n in range(2, 8):
                artifacts.publish(f"v{n}")
                r = await http.post("/admin/reload")
                assert r.status_code == 200
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.gather(*tasks)
    assert len(statuses) > 20 and set(statuses) == {200}
    assert len(versions) > 2


def _trained_on(artifacts: FakeArtifacts, version: str, dataset: str, checksum: str) -> None:
    artifacts.publish(version)
    meta = {"data": {"dataset": dataset, "checksum": checksum, "split": None}}
    (artifacts.root / version / "metadata.json").write_text(json.dumps(meta))


def test_an_artifact_trained_on_another_data_set_is_refused_and_the_old_one_serves(
    tmp_path: Path,
) -> None:
    # Issue 19: `SCALE=tiny make up` then `make up` once served tiny's model to demo's catalogue.
    fake = FakeArtifacts(tmp_path / "als")
    _trained_on(fake, "v1", "demo", "d" * 64)
    settings = settings_for(fake, dataset="demo", data_checksum="d" * 64)
    with AppClient(create_app(settings, loader=fake)) as c:
        assert c.get("/readyz").json()["model_version"] == "v1"
        _trained_on(fake, "v2", "tiny", "t" * 64)
        r = c.post("/admin/reload")
        assert r.status_code == 409 and "trained on 'tiny'" in r.json()["detail"]
        _trained_on(fake, "v3", "demo", "e" * 64)  # a rebuilt demo: another checksum
        r = c.post("/admin/reload")
        assert r.status_code == 409 and "another build of 'demo'" in r.json()["detail"]
        assert c.get("/readyz").json()["model_version"] == "v1"
        assert fake.loads == ["v1"], "a refused artifact's arrays are never read"


def test_without_a_served_data_set_any_artifact_loads(tmp_path: Path) -> None:
    fake = FakeArtifacts(tmp_path / "als")
    _trained_on(fake, "v1", "tiny", "t" * 64)
    with AppClient(create_app(settings_for(fake), loader=fake)) as c:
        assert c.get("/readyz").json()["model_version"] == "v1"
