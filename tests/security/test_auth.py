"""Credential parsing and JWT checks (HS256 here; RS256 needs the ``cryptography`` package)."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from gateway.edge import keys
from gateway.edge.auth import Authenticator, JwtConfig, JwtVerifier
from gateway.edge.keys import KeyRing

SECRET = "s" * 64
AUD, ISS = "cascade-gateway", "https://issuer.example"


def token(alg: str = "HS256", secret: str = SECRET, **claims: object) -> str:
    base: dict[str, object] = {"sub": "app-1", "aud": AUD, "iss": ISS, "exp": int(time.time()) + 60}
    base.update(claims)
    body = {k: v for k, v in base.items() if v is not None}
    return jwt.encode(body, secret, algorithm=alg)


def h(**headers: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()]


@pytest.fixture
def auth(tmp_path: Path) -> tuple[Authenticator, str]:
    path = tmp_path / "keys.json"
    _, key = keys.add_key(path, client="web")
    verifier = JwtVerifier(
        JwtConfig(algorithms=("HS256",), audience=AUD, issuer=ISS, secret=SECRET)
    )
    return Authenticator(keyring=KeyRing(path), jwt=verifier), key


def test_both_headers_accepted(auth: tuple[Authenticator, str]) -> None:
    a, key = auth
    for headers in (
        h(authorization=f"Bearer {key}"),
        h(authorization=f"bearer  {key} "),
        h(x_api_key=key),
        h(authorization=f"Bearer {key}", x_api_key=key),
    ):
        principal, reason = a.authenticate(headers)
        assert reason == "ok" and principal is not None
        assert principal.client == "web" and principal.key_id == keys.parse_key_id(key)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([], "missing"),
        (h(authorization="Basic dXNlcjpwYXNz"), "malformed"),
        (h(authorization="Bearer"), "malformed"),
        (h(authorization="Bearer    "), "malformed"),
        (h(x_api_key="garbage"), "malformed"),
        (h(authorization="Bearer csk_nothing"), "malformed"),
    ],
)
def test_refusals(
    auth: tuple[Authenticator, str], headers: list[tuple[bytes, bytes]], reason: str
) -> None:
    assert auth[0].authenticate(headers) == (None, reason)


def test_two_different_credentials_are_malformed(auth: tuple[Authenticator, str]) -> None:
    a, key = auth
    _, other = keys.generate_key()
    assert a.authenticate(h(authorization=f"Bearer {key}", x_api_key=other)) == (None, "malformed")
    two = [
        (b"authorization", f"Bearer {key}".encode()),
        (b"authorization", f"Bearer {other}".encode()),
    ]
    assert a.authenticate(two) == (None, "malformed")


def test_jwt_good(auth: tuple[Authenticator, str]) -> None:
    principal, reason = auth[0].authenticate(h(authorization=f"Bearer {token()}"))
    assert reason == "ok" and principal is not None
    assert (principal.client, principal.key_id, principal.method, principal.label_client) == (
        "app-1",
        "jwt",
        "jwt",
        "jwt",
    )


def _none_token() -> str:
    return jwt.encode(
        {"sub": "x", "aud": AUD, "iss": ISS, "exp": int(time.time()) + 60}, None, algorithm="none"
    )


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_none_token, "jwt_alg"),
        (lambda: token(alg="HS384"), "jwt_alg"),
        (lambda: token(secret="w" * 64), "jwt_invalid"),
        (lambda: token(exp=int(time.time()) - 3600), "jwt_expired"),
        (lambda: token(exp=None), "jwt_invalid"),
        (lambda: token(aud="someone-else"), "jwt_invalid"),
        (lambda: token(iss="https://evil.example"), "jwt_invalid"),
        (lambda: token(sub=None), "jwt_invalid"),
        (lambda: token(sub="has space"), "jwt_invalid"),
        (lambda: "a.b.c", "jwt_invalid"),
    ],
)
def test_jwt_refusals(auth: tuple[Authenticator, str], make, reason: str) -> None:  # type: ignore[no-untyped-def]
    assert auth[0].authenticate(h(authorization=f"Bearer {make()}")) == (None, reason)


def test_jwt_off_means_tokens_are_malformed(tmp_path: Path) -> None:
    a = Authenticator(keyring=KeyRing(tmp_path / "k.json"), jwt=None)
    assert a.authenticate(h(authorization=f"Bearer {token()}")) == (None, "malformed")


def test_jwt_config_refuses_unsafe_choices() -> None:
    with pytest.raises(ValueError, match="subset"):
        JwtConfig(algorithms=("none",), audience=AUD, issuer=ISS, secret=SECRET)
    with pytest.raises(ValueError, match="subset"):
        JwtConfig(algorithms=("HS512",), audience=AUD, issuer=ISS, secret=SECRET)
    with pytest.raises(ValueError, match="32"):
        JwtConfig(algorithms=("HS256",), audience=AUD, issuer=ISS, secret="short")
    with pytest.raises(ValueError, match="audience"):
        JwtConfig(algorithms=("HS256",), audience="", issuer=ISS, secret=SECRET)
    with pytest.raises(ValueError, match="public key"):
        JwtConfig(algorithms=("RS256",), audience=AUD, issuer=ISS)


def test_rs256_needs_cryptography() -> None:
    config = JwtConfig(
        algorithms=("RS256",), audience=AUD, issuer=ISS, public_key_pem="-----BEGIN PUBLIC KEY-----"
    )
    if jwt.algorithms.has_crypto:
        pytest.skip("cryptography is installed")
    with pytest.raises(ValueError, match="cryptography"):
        JwtVerifier(config)
