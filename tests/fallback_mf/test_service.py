"""Unit tests of the MF web service, in process (httpx ASGITransport / AppClient), on a tiny model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI

from cascade.recommenders import PopularityRecommender, UserItems
from fallback_mf.errors import InvalidRequest
from fallback_mf.main import create_app
from fallback_mf.model import AlsModel
from fallback_mf.schemas import RecommendationResponse
from fallback_mf.service_api import parse_exclude
from fallback_mf.settings import MfSettings

N_USERS, N_ITEMS, FACTORS = 12, 40, 8


def tiny_model(seed: int = 0, *, user_offset: int = 100, item_offset: int = 1000) -> AlsModel:
    """A hand-made ALS model: original ids are offset so row indices never pass for ids."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(N_USERS), 5) + user_offset
    items = rng.integers(0, N_ITEMS, size=len(users)) + item_offset
    frame = pd.DataFrame({"user_id": users, "item_id": items})
    user_ids = np.arange(N_USERS, dtype=np.int64) + user_offset
    item_ids = np.arange(N_ITEMS, dtype=np.int64) + item_offset
    seen = UserItems.from_pairs(users - user_offset, items - item_offset)  # rows = indices
    assert np.array_equal(seen.user_ids, np.arange(N_USERS))
    seen = UserItems(user_ids=user_ids, indptr=seen.indptr, indices=seen.indices)
    return AlsModel(
        user_factors=rng.standard_normal((N_USERS, FACTORS)).astype(np.float32),
        item_factors=rng.standard_normal((N_ITEMS, FACTORS)).astype(np.float32),
        user_ids=user_ids,
        item_ids=item_ids,
        seen=seen,
        popular=PopularityRecommender.from_interactions(frame, with_seen=False),
    )


class FakeArtifacts:
    """Stands in for the artifact folders: version name -> model (seed), counts loads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loads: list[str] = []

    def publish(self, version: str) -> None:
        (self.root / version).mkdir(parents=True, exist_ok=True)
        (self.root / "latest").write_text(version + "\n")

    def __call__(self, directory: Path) -> AlsModel:
        if not directory.is_dir():
            raise FileNotFoundError(f"no artifact at {directory}")
        self.loads.append(directory.name)
        return tiny_model(seed=int(directory.name.removeprefix("v")))


@pytest.fixture
def artifacts(tmp_path: Path) -> FakeArtifacts:
    fake = FakeArtifacts(tmp_path / "als")
    fake.publish("v1")
    return fake


def settings_for(artifacts: FakeArtifacts, **overrides: object) -> MfSettings:
    return MfSettings(artifacts_dir=artifacts.root, reload_interval_s=0, **overrides)


class AppClient:
    """A synchronous client over httpx's ASGITransport that also runs the app's lifespan.

    (Starlette's own AppClient warns about httpx, and warnings are errors here.)
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._lifespan = app.router.lifespan_context(app)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mf")

    def __enter__(self) -> AppClient:
        try:
            self.loop.run_until_complete(self._lifespan.__aenter__())
        except BaseException:
            self.loop.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.run_until_complete(self._lifespan.__aexit__(None, None, None))
        self.loop.close()

    def get(self, url: str, **kwargs: object) -> httpx.Response:
        return self.loop.run_until_complete(self.http.get(url, **kwargs))

    def post(self, url: str, **kwargs: object) -> httpx.Response:
        return self.loop.run_until_complete(self.http.post(url, **kwargs))

    def sleep(self, seconds: float) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))


@pytest.fixture
def client(artifacts: FakeArtifacts):
    with AppClient(create_app(settings_for(artifacts), loader=artifacts)) as c:
        yield c


def test_known_user_gets_k_unseen_sorted_items(client: AppClient) -> None:
    model = tiny_model(seed=1)
    r = client.get("/v1/recommendations/103", params={"k": 10})
    assert r.status_code == 200, r.text
    body = RecommendationResponse.model_validate(r.json())
    assert body.known_user and body.model_version == "v1" and body.user_id == 103
    assert r.headers["X-Model-Version"] == "v1"
    ids = [i.item_id for i in body.items]
    scores = [i.score for i in body.items]
    assert len(ids) == 10 == len(set(ids))
    assert scores == sorted(scores, reverse=True)
    seen = set(model.seen.row(3).tolist())  # indices; ids are offset by 1000
    assert not {i - 1000 for i in ids} & seen
    assert set(ids) <= set(model.item_ids.tolist())
    # same answer as the model itself
    expected, _ = model.recommend_one(103, k=10)
    assert ids == expected


def test_exclude_and_default_k(client: AppClient) -> None:
    first = client.get("/v1/recommendations/104").json()
    assert len(first["items"]) == 20  # MF_DEFAULT_K
    top3 = [i["item_id"] for i in first["items"][:3]]
    r = client.get(
        "/v1/recommendations/104", params={"exclude": ",".join(map(str, top3)) + ", 99999"}
    )
    ids = [i["item_id"] for i in r.json()["items"]]
    assert r.status_code == 200 and not set(top3) & set(ids) and len(ids) == 20


def test_unknown_user_gets_popular_items(client: AppClient) -> None:
    r = client.get("/v1/recommendations/5", params={"k": 5, "exclude": "1001"})
    body = r.json()
    assert r.status_code == 200 and body["known_user"] is False
    popular = [int(i) for i in tiny_model(seed=1).popular.items if i != 1001][:5]
    assert [i["item_id"] for i in body["items"]] == popular


def test_k_larger_than_catalogue_returns_what_is_left(client: AppClient) -> None:
    r = client.get("/v1/recommendations/100", params={"k": 100})
    model = tiny_model(seed=1)
    assert r.status_code == 200
    assert len(r.json()["items"]) == N_ITEMS - len(set(model.seen.row(0).tolist()))


@pytest.mark.parametrize(
    ("path", "params", "reason"),
    [
        ("/v1/recommendations/abc", {}, "valid integer"),
        ("/v1/recommendations/-3", {}, "greater than or equal to 0"),
        ("/v1/recommendations/1.5", {}, "valid integer"),
        ("/v1/recommendations/99999999999999999999999", {}, "less than or equal"),
        ("/v1/recommendations/1", {"k": 0}, "greater than or equal to 1"),
        ("/v1/recommendations/1", {"k": "ten"}, "valid integer"),
        ("/v1/recommendations/1", {"k": 101}, "between 1 and 100"),
        ("/v1/recommendations/1", {"exclude": "1,x"}, "comma-separated integer"),
        ("/v1/recommendations/1", {"exclude": "1,,2"}, "comma-separated integer"),
    ],
)
def test_bad_input_is_422_with_reason(
    client: AppClient, path: str, params: dict, reason: str
) -> None:
    r = client.get(path, params=params)
    assert r.status_code == 422, r.text
    assert reason in r.text


def test_parse_exclude_limits() -> None:
    assert parse_exclude(None, limit=3) == ()
    assert parse_exclude(" ", limit=3) == ()
    assert parse_exclude("1, 2 ,3", limit=3) == (1, 2, 3)
    with pytest.raises(InvalidRequest, match="at most 3"):
        parse_exclude("1,2,3,4", limit=3)


def test_probes_and_metrics(client: AppClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "model_version": "v1"}
    client.get("/v1/recommendations/101", params={"k": 3})
    client.get("/v1/recommendations/abc")
    text = client.get("/metrics").text
    assert (
        'mf_requests_total{method="GET",route="/v1/recommendations/{user_id}",status="200"} 1.0'
        in text
    )
    assert 'mf_request_errors_total{route="/v1/recommendations/{user_id}",status="422"} 1.0' in text
    assert 'mf_model_info{version="v1"} 1.0' in text
    assert (
        'mf_request_duration_seconds_bucket{le="0.001",route="/v1/recommendations/{user_id}"}'
        in text
    )
    assert 'mf_recommendations_total{known_user="true"} 1.0' in text
    assert "mf_requests_in_flight" in text


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


def test_large_catalogue_scores_off_the_event_loop(artifacts: FakeArtifacts) -> None:
    app = create_app(settings_for(artifacts, inline_max_items=0), loader=artifacts)
    with AppClient(app) as c:
        r = c.get("/v1/recommendations/102", params={"k": 4})
        assert r.status_code == 200 and len(r.json()["items"]) == 4


def test_settings_refuse_unsafe_values() -> None:
    with pytest.raises(ValueError, match="default_k"):
        MfSettings(default_k=50, max_k=10)
    with pytest.raises(ValueError, match="folder name"):
        MfSettings(version="../etc")
    with pytest.raises(ValueError):
        MfSettings(max_k=0)


def test_traceparent_is_continued(client: AppClient) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracer_provider = client.app.state.tracer_provider
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    client.get(
        "/v1/recommendations/101", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    )
    client.get("/healthz")
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["GET /v1/recommendations/{user_id}"]
    assert format(spans[0].context.trace_id, "032x") == trace_id
    assert format(spans[0].parent.span_id, "016x") == "00f067aa0ba902b7"


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


def test_openapi_documents_schema_and_errors(client: AppClient) -> None:
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/recommendations/{user_id}"]["get"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "RecommendationResponse"
    )
    assert {"422", "503"} <= set(op["responses"])
    assert "internal" in spec["paths"]["/admin/reload"]["post"]["tags"]
