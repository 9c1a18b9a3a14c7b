"""Issue 20, item 12: JWT key rotation by ``kid`` (no hard cut) and a maximum token lifetime."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest

from gateway.edge.auth import JwtConfig, JwtVerifier
from gateway.main import create_app
from tests.gateway.appclient import AppClient
from tests.gateway.fakes import Fakes
from tests.gateway.test_api import make_settings

AUD, ISS = "cascade-gateway", "https://issuer.example"
OLD, NEW, LEGACY = "o" * 48, "n" * 48, "l" * 48


def oct_key(kid: str, secret: str) -> dict[str, str]:
    k = base64.urlsafe_b64encode(secret.encode()).rstrip(b"=").decode()
    return {"kty": "oct", "kid": kid, "k": k, "alg": "HS256"}


def token(secret: str, kid: str | None = None, **claims: object) -> str:
    now = int(time.time())
    body: dict[str, object] = {
        "sub": "partner",
        "aud": AUD,
        "iss": ISS,
        "iat": now,
        "exp": now + 300,
    }
    body.update(claims)
    headers = {"kid": kid} if kid is not None else None
    clean = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(clean, secret, algorithm="HS256", headers=headers)


def verifier(keys: list[dict[str, str]], **config: object) -> JwtVerifier:
    return JwtVerifier(
        JwtConfig(
            algorithms=("HS256",),
            audience=AUD,
            issuer=ISS,
            jwks={"keys": keys},
            **config,  # type: ignore[arg-type]
        )
    )


def test_rotation_overlap_both_kids_then_the_old_one_is_gone() -> None:
    during = verifier([oct_key("2026-11", OLD), oct_key("2026-12", NEW)])
    assert during.verify(token(OLD, "2026-11"))[1] == "ok"
    assert during.verify(token(NEW, "2026-12"))[1] == "ok"
    after = verifier([oct_key("2026-12", NEW)])
    assert after.verify(token(NEW, "2026-12"))[1] == "ok"
    assert after.verify(token(OLD, "2026-11")) == (None, "jwt_kid")


def test_a_kid_picks_its_key_only() -> None:
    v = verifier([oct_key("a", OLD), oct_key("b", NEW)])
    assert v.verify(token(OLD, "b")) == (None, "jwt_invalid")  # right kid, wrong signature
    assert v.verify(token(OLD, "zzz")) == (None, "jwt_kid")
    assert v.verify(token(OLD)) == (None, "jwt_kid")  # no kid and no single configured key


def test_tokens_without_kid_use_the_single_configured_key() -> None:
    v = verifier([oct_key("a", NEW)], secret=LEGACY)
    assert v.verify(token(LEGACY))[1] == "ok"
    assert v.verify(token(NEW, "a"))[1] == "ok"
    assert v.verify(token(LEGACY, "a")) == (None, "jwt_invalid")


def test_a_key_set_never_lends_a_key_to_another_algorithm() -> None:
    rsa_claiming = {"kty": "oct", "kid": "x", "k": oct_key("x", OLD)["k"], "alg": "RS256"}
    with pytest.raises(ValueError, match="HS256"):
        JwtConfig(algorithms=("HS256",), audience=AUD, issuer=ISS, jwks={"keys": [rsa_claiming]})
    with pytest.raises(ValueError, match="kid"):
        verifier([{"kty": "oct", "k": oct_key("x", OLD)["k"]}])
    with pytest.raises(ValueError, match="32"):
        verifier([oct_key("short", "s" * 8)])


# Offsets from the moment the test runs, not from collection time: a CI run collects
# every module minutes before it runs this one, which once turned "+60 s" into expired.
@pytest.mark.parametrize(
    ("offsets", "reason"),
    [
        ({"iat": -60, "exp": 3500}, "ok"),
        ({"iat": -60, "exp": 4000}, "jwt_lifetime"),
        ({"iat": None, "exp": 86_400}, "jwt_lifetime"),  # no iat: exp - now
        ({"iat": None, "exp": 600}, "ok"),
        ({"iat": -7200, "exp": 600}, "jwt_lifetime"),
    ],
)
def test_maximum_lifetime(offsets: dict[str, int | None], reason: str) -> None:
    now = int(time.time())
    claims = {k: None if v is None else now + v for k, v in offsets.items()}
    v = verifier([oct_key("a", NEW)], max_lifetime_s=3600, leeway_s=30)
    assert v.verify(token(NEW, "a", **claims))[1] == reason


def test_the_gateway_reads_the_key_set_file(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [oct_key("k1", NEW)]}))
    settings = make_settings(
        jwt_algorithms="HS256", jwt_audience=AUD, jwt_issuer=ISS, jwt_jwks_file=jwks
    )
    assert settings.jwt_max_lifetime_s == 3600
    with AppClient(create_app(settings, components=Fakes().factory)) as client:
        ok = client.get(
            "/v1/recommendations/7", headers={"Authorization": f"Bearer {token(NEW, 'k1')}"}
        )
        long_lived = token(NEW, "k1", exp=int(time.time()) + 30 * 86_400)
        refused = client.get(
            "/v1/recommendations/7", headers={"Authorization": f"Bearer {long_lived}"}
        )
        metrics = client.get("/metrics").text
    assert ok.status_code == 200
    assert refused.status_code == 401
    assert 'gateway_auth_failures_total{reason="jwt_lifetime"} 1.0' in metrics
