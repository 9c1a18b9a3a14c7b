"""The bare FastAPI baseline of bench-serve answers the gateway's response shape."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from pathlib import Path

import httpx
import pytest

from cascade.bench import bare_app
from cascade.bench.closed_loop import bench_http
from cascade.bench.cpu_meter import CpuMeter
from cascade.runtime.procs import ManagedProcess, free_port
from gateway import schemas


def test_path_is_the_gateways() -> None:
    assert schemas.RECOMMENDATIONS_PATH + "/{user_id}" == bare_app.PATH


def get(*paths: str) -> list[httpx.Response]:
    """In-process GETs through httpx's ASGI transport (Starlette's TestClient warns about httpx)."""

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=bare_app.create_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://bare") as client:
            return [await client.get(p) for p in paths]

    return asyncio.run(run())


def test_answers_the_gateway_response_shape_in_process() -> None:
    (r,) = get("/v1/recommendations/42?k=20")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers[schemas.SERVED_BY_HEADER] == "bare"
    body = schemas.RecommendationResponse.model_validate(r.json())
    assert body.user_id == 42 and len(body.items) == 20
    assert set(r.json()) == set(schemas.RecommendationResponse.model_fields)
    assert body.fallback_reason is None and len(body.request_id) == 32
    scores = [i.score for i in body.items]
    assert scores == sorted(scores, reverse=True)


def test_k_defaults_to_20_and_a_bad_user_is_422() -> None:
    default, bad = get("/v1/recommendations/7", "/v1/recommendations/abc")
    assert len(default.json()["items"]) == 20
    assert bad.status_code == 422


@pytest.mark.integration
def test_real_process_on_a_free_port_metered(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "cascade.bench.bare_app", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with ManagedProcess("bare", argv, log_path=tmp_path / "bare.log") as proc:
        proc.wait_ready(url + "/v1/recommendations/0", timeout=60)
        with urllib.request.urlopen(url + "/v1/recommendations/5?k=20", timeout=5) as resp:
            body = json.loads(resp.read())
        schemas.RecommendationResponse.model_validate(body)
        assert len(body["items"]) == 20
        meter = CpuMeter({"bare_app": proc.pid})
        row = asyncio.run(
            bench_http(
                "bare",
                url,
                "/v1/recommendations/{}?k=20".format,
                concurrency=2,
                duration_s=0.5,
                users=range(100),
                warmup_s=0.2,
                on_measure=meter.start,
            )
        )
        row = meter.finish(row)
        assert row.requests > 0 and row.errors == 0 and row.served_by == "bare 100%"
        assert 0 < row.cpu_ms_per_req["bare_app"] < 1000
        assert proc.stop(grace=15) == 0  # SIGTERM: graceful, exit 0 like the gateway
