"""The gateway's security layer in process, with the fake upstreams of tests/gateway (fast):
the authentication matrix, key ids (never keys) in metrics / spans / logs, revocation without
restart, rate limits, 431 / 413 / 503, the /metrics guard, no route but our own API, the spec."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import gateway.routes
from gateway.edge import keys
from gateway.edge.security import InsecureConfiguration
from gateway.main import create_app
from tests.gateway.appclient import AppClient
from tests.gateway.fakes import Fakes
from tests.gateway.test_api import make_settings

URL = "/v1/recommendations"
JWT_SECRET = "j" * 64
AUD, ISS = "cascade", "https://id.example"


class Keys:
    """A key file with a good key, a revoked key, a throttled key."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "keys.json"
        self.good_record, self.good = keys.add_key(self.path, client="web")
        self.revoked_record, self.revoked = keys.add_key(self.path, client="old")
        keys.revoke(self.path, key_id=self.revoked_record.key_id)
        self.slow_record, self.slow = keys.add_key(self.path, client="batch", rate=0.01, burst=2)


def jwt_token(**claims: object) -> str:
    body: dict[str, object] = {
        "sub": "partner-7",
        "aud": AUD,
        "iss": ISS,
        "exp": int(time.time()) + 60,
    }
    body.update(claims)
    return jwt.encode(
        {k: v for k, v in body.items() if v is not None}, JWT_SECRET, algorithm="HS256"
    )


def secure_settings(k: Keys, **overrides: object):  # type: ignore[no-untyped-def]
    base: dict[str, object] = dict(
        api_keys_file=k.path,
        api_keys_reload_s=0.05,
        jwt_algorithms="HS256",
        jwt_secret=JWT_SECRET,
        jwt_audience=AUD,
        jwt_issuer=ISS,
    )
    base.update(overrides)
    return make_settings(**base)


@pytest.fixture
def k(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


@pytest.fixture
def client(k: Keys, fakes: Fakes) -> Iterator[AppClient]:
    with AppClient(create_app(secure_settings(k), components=fakes.factory)) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_good_credentials_serve(client: AppClient, k: Keys) -> None:
    for headers in (bearer(k.good), {"X-API-Key": k.good}, bearer(jwt_token())):
        r = client.get(f"{URL}/7?k=5", headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["served_by"] == "two_tower"
    r = client.post(URL, json={"user_id": 7, "k": 3}, headers={"X-API-Key": k.good})
    assert r.status_code == 200


def test_authentication_matrix_one_generic_401(
    client: AppClient, k: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    _, unknown = keys.generate_key()
    wrong_secret = k.good[:-4] + ("AAAA" if not k.good.endswith("AAAA") else "BBBB")
    cases = {
        "no key": {},
        "wrong key": bearer(unknown),
        "wrong secret of a real key id": bearer(wrong_secret),
        "revoked key": bearer(k.revoked),
        "revoked key as X-API-Key": {"X-API-Key": k.revoked},
        "basic scheme": {"Authorization": "Basic d2ViOnNlY3JldA=="},
        "bearer without token": {"Authorization": "Bearer "},
        "token without scheme": {"Authorization": k.good},
        "garbage key": {"X-API-Key": "letmein"},
        "two different keys": {"Authorization": f"Bearer {k.good}", "X-API-Key": unknown},
        "jwt alg none": bearer(
            jwt.encode({"sub": "x", "aud": AUD, "iss": ISS, "exp": 2**40}, None, algorithm="none")
        ),
        "jwt expired": bearer(jwt_token(exp=int(time.time()) - 3600)),
        "jwt wrong audience": bearer(jwt_token(aud="other")),
        "jwt wrong issuer": bearer(jwt_token(iss="https://evil.example")),
        "jwt wrong secret": bearer(
            jwt.encode(
                {"sub": "x", "aud": AUD, "iss": ISS, "exp": 2**40}, "x" * 64, algorithm="HS256"
            )
        ),
        "jwt without exp": bearer(jwt_token(exp=None)),
    }
    caplog.set_level(logging.DEBUG)
    seen_bodies, seen_headers = set(), set()
    for name, headers in cases.items():
        for method, path, body in (("GET", f"{URL}/7?k=5", None), ("POST", URL, {"user_id": 7})):
            r = client.request(method, path, headers=headers, json=body)
            assert r.status_code == 401, (name, r.text)
            payload = r.json()
            assert payload.pop("request_id") == r.headers["X-Request-ID"]
            seen_bodies.add(tuple(sorted(payload.items())))
            seen_headers.add(
                (r.headers["WWW-Authenticate"], tuple(sorted(set(r.headers) - {"x-request-id"})))
            )
            for secret in (
                k.good,
                k.revoked,
                unknown,
                k.revoked_record.key_id,
                k.good_record.key_id,
            ):
                assert secret not in r.text and secret not in str(r.headers), name
    assert seen_bodies == {(("code", "unauthorized"), ("detail", "missing or invalid credentials"))}
    assert len(seen_headers) == 1 and next(iter(seen_headers))[0] == 'Bearer realm="cascade"'
    for key in (k.good, k.revoked, unknown):
        assert key not in caplog.text
    # A revoked key still in use is a client to chase: logged once, by key id.
    assert caplog.text.count(f"revoked API key {k.revoked_record.key_id} is still being used") == 1


def test_unknown_and_upstream_paths_are_not_served(client: AppClient, k: Keys) -> None:
    """No proxy: Triton's and the MF service's paths, and anything else, are not routes here."""
    paths = [
        "/v2/health/ready",
        "/v2/models/two_tower/infer",
        "/v2/repository/index",
        "/v2/repository/models/two_tower/unload",
        "/v1/recommendations",
        "/admin",
        "/../../etc/passwd",
        "/v1/recommendations/7/extra",
        "/readyz/../v2/repository/index",
    ]
    for path in paths:
        assert client.get(path).status_code == 401, path  # nothing is revealed without a key
        r = client.get(path, headers=bearer(k.good))
        assert r.status_code in (404, 405), (path, r.status_code)
        assert r.json()["code"] in ("not_found", "method_not_allowed")
    r = client.post("/v2/repository/models/two_tower/load", headers=bearer(k.good))
    assert r.status_code == 404
    own = set()
    for route in client.app.routes:  # type: ignore[attr-defined]
        included = getattr(route, "original_router", None)  # app.include_router(...)
        own |= {r.path for r in included.routes} if included else {route.path}
    assert own == {
        "/openapi.json",
        "/docs",
        "/docs-assets",
        "/docs/oauth2-redirect",
        "/redoc",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/events",
        "/v1/recommendations",
        "/v1/recommendations/{user_id}",
        "/v1/recommendations:batch",
        "/v1/items/{item_id}/similar",
    }


def test_open_paths(client: AppClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_key_ids_in_metrics_and_spans_never_keys(
    client: AppClient, k: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(gateway.routes, "tracer", provider.get_tracer("test"))
    assert client.get(f"{URL}/7", headers=bearer(k.good)).status_code == 200
    client.get(f"{URL}/7", headers=bearer(k.revoked))
    span = exporter.get_finished_spans()[-1]
    assert span.attributes is not None
    assert (
        span.attributes["client.key_id"] == k.good_record.key_id
        and span.attributes["client.name"] == "web"
    )
    text = client.get("/metrics").text
    assert (
        f'gateway_client_requests_total{{client="web",key_id="{k.good_record.key_id}",status="200"}} 1.0'
        in text
    )
    assert 'gateway_auth_failures_total{reason="revoked"} 1.0' in text
    assert (
        'gateway_api_keys{state="active"} 2.0' in text
        and 'gateway_api_keys{state="revoked"} 1.0' in text
    )
    assert "csk_" not in text
    provider.shutdown()


def test_revocation_and_new_keys_without_restart(client: AppClient, k: Keys) -> None:
    assert client.get(f"{URL}/7", headers=bearer(k.good)).status_code == 200
    keys.revoke(k.path, key_id=k.good_record.key_id)
    _, fresh = keys.add_key(k.path, client="fresh")
    deadline = time.monotonic() + 5
    statuses: tuple[int, int] = (0, 0)
    while time.monotonic() < deadline:
        statuses = (
            client.get(f"{URL}/7", headers=bearer(k.good)).status_code,
            client.get(f"{URL}/7", headers=bearer(fresh)).status_code,
        )
        if statuses == (401, 200):
            break
        client.loop.run_until_complete(asyncio.sleep(0.05))  # the reload runs in a worker thread
    assert statuses == (401, 200)


def test_rate_limit_429_with_retry_after(client: AppClient, k: Keys) -> None:
    got = [client.get(f"{URL}/7", headers=bearer(k.slow)) for _ in range(3)]
    assert [r.status_code for r in got] == [200, 200, 429]
    refused = got[2]
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["code"] == "rate_limited"
    assert client.get(f"{URL}/7", headers=bearer(k.good)).status_code == 200  # buckets are per key
    assert (
        'gateway_rate_limited_total{backend="local",client="batch"' in client.get("/metrics").text
    )


def test_header_and_body_limits(client: AppClient, k: Keys) -> None:
    r = client.get(f"{URL}/7", headers={**bearer(k.good), "X-Big": "a" * 9000})
    assert r.status_code == 431 and r.json()["code"] == "headers_too_large"
    many = {**bearer(k.good), **{f"X-H{i}": "1" for i in range(120)}}
    assert client.get(f"{URL}/7", headers=many).status_code == 431
    r = client.post(
        URL,
        content=b'{"user_id": 7, "exclude": [' + b"1," * 10_000 + b"1]}",
        headers={**bearer(k.good), "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    r = client.get(f"{URL}/7?k=101", headers=bearer(k.good))
    assert r.status_code == 422 and "k" in r.json()["detail"]
    r = client.post(
        URL, content=b"\xff\xfe{", headers={**bearer(k.good), "Content-Type": "application/json"}
    )
    assert r.status_code in (400, 422) and "code" in r.json()


def test_overload_answers_503_at_once(k: Keys, fakes: Fakes) -> None:
    app = create_app(secure_settings(k, max_in_flight=2), components=fakes.factory)
    fakes.primary.mode = "hang"  # each request holds its slot for the primary's timeout (100 ms)
    with AppClient(app) as c:

        async def burst() -> list[httpx.Response]:
            get = c.client.get
            return list(
                await asyncio.gather(
                    *(get(f"{URL}/{u}", headers=bearer(k.good)) for u in (1, 2, 3))
                )
            )

        got = c.loop.run_until_complete(burst())
        statuses = sorted(r.status_code for r in got)
        assert statuses == [200, 200, 503]
        shed = next(r for r in got if r.status_code == 503)
        assert shed.headers["Retry-After"] == "1" and shed.json()["code"] == "overloaded"
        assert c.get("/healthz").status_code == 200


def test_metrics_guard(k: Keys, fakes: Fakes) -> None:
    with AppClient(create_app(secure_settings(k), components=fakes.factory)) as c:
        assert c.get("/metrics").status_code == 200  # the ASGI test peer is 127.0.0.1

        async def from_outside() -> int:
            transport = httpx.ASGITransport(app=c.app, client=("10.1.2.3", 5000))
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as outside:
                return (await outside.get("/metrics", headers=bearer(k.good))).status_code

        assert c.loop.run_until_complete(from_outside()) == 403
    token = "m" * 32
    with AppClient(
        create_app(secure_settings(k, metrics_token=token), components=fakes.factory)
    ) as c:
        assert c.get("/metrics").status_code == 401
        assert (
            c.get("/metrics", headers=bearer(k.good)).status_code == 401
        )  # a client key never opens it
        assert c.get("/metrics", headers=bearer(token)).status_code == 200


def test_auth_off_only_explicitly_or_on_loopback(k: Keys, fakes: Fakes) -> None:
    with AppClient(
        create_app(make_settings(), components=fakes.factory)
    ) as c:  # loopback, no key file
        assert c.get(f"{URL}/7").status_code == 200
    with pytest.raises(InsecureConfiguration, match="refusing"):
        create_app(make_settings(host="0.0.0.0"), components=fakes.factory)
    with pytest.raises(InsecureConfiguration, match="no GATEWAY_API_KEYS_FILE"):
        create_app(make_settings(auth_enabled=True), components=fakes.factory)
    with AppClient(
        create_app(make_settings(host="0.0.0.0", auth_enabled=False), components=fakes.factory)
    ) as c:
        assert c.get(f"{URL}/7").status_code == 200
    with AppClient(
        create_app(secure_settings(k, auth_enabled=False), components=fakes.factory)
    ) as c:
        assert c.get(f"{URL}/7").status_code == 200


def test_settings_refuse_unsafe_jwt(k: Keys) -> None:
    for bad in (
        {"jwt_algorithms": "none"},
        {"jwt_algorithms": "HS256,HS512"},
        {"jwt_secret": "short"},
        {"jwt_audience": ""},
        {"jwt_algorithms": "RS256"},
    ):
        with pytest.raises(ValueError):
            secure_settings(k, **bad)
    with pytest.raises(ValueError, match="metrics_token"):
        secure_settings(k, metrics_token="short")


def test_spec_declares_errors_and_security(client: AppClient) -> None:
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": schemes["ApiKey"]["description"],
    }
    assert schemes["Bearer"]["scheme"] == "bearer"
    for path, method in ((URL + "/{user_id}", "get"), (URL, "post")):
        op = spec["paths"][path][method]
        assert {"ApiKey": []} in op["security"] and {"Bearer": []} in op["security"]
        for code in ("401", "422", "429", "503"):
            assert code in op["responses"], (path, code)
        assert "Retry-After" in op["responses"]["429"]["headers"]
        assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
    assert "413" in spec["paths"][URL]["post"]["responses"]
    request = spec["components"]["schemas"]["RecommendationRequest"]["properties"]
    assert request["k"]["maximum"] == 100 and request["exclude"]["maxItems"] == 500
    assert "security" not in spec["paths"]["/healthz"]["get"]
