"""Credentials: API keys (``csk_...``) and, optionally, JWTs with a fixed algorithm list.

:class:`Authenticator` turns request headers into a :class:`Principal` or a refusal reason.
Accepted headers: ``Authorization: Bearer <credential>`` and ``X-API-Key: <key>`` (both present
with different values, several ``Authorization`` values, or another scheme: malformed).

- API keys are checked by :class:`gateway.edge.keys.KeyRing` (hash lookup by the key id parsed from
  the key, constant-time comparison).
- JWTs (when configured): the algorithm must be in the allow-list (HS256 and/or RS256; ``none``
  is never accepted), the key is chosen by that algorithm from our configuration (an HS256 token
  is never checked against the RSA public key: no algorithm confusion), and ``exp``, ``iss``,
  ``aud`` and ``sub`` are required and checked.
- Key rotation without a hard cut (issue 20, item 12): a key set (``GATEWAY_JWT_JWKS_FILE``, a
  JSON Web Key Set: ``oct`` keys for HS256, ``RSA`` keys for RS256, each with a ``kid``). A
  token's ``kid`` header picks the key among those of its algorithm: publish the new key in the
  set, let the issuer sign with it, remove the old one once its tokens have expired. A token
  without ``kid`` is checked against the single configured key (``GATEWAY_JWT_SECRET`` /
  ``GATEWAY_JWT_PUBLIC_KEY_FILE``); an unknown ``kid`` is refused (``jwt_kid``).
- Lifetime: a token may live at most ``max_lifetime_s`` (``GATEWAY_JWT_MAX_LIFETIME_S``, 1 h):
  ``exp - iat`` when it has an ``iat``, and ``exp - now`` in any case (a token without ``iat``
  cannot dodge the bound), each with the leeway (``jwt_lifetime``).

The refusal reason (``missing``, ``malformed``, ``unknown``, ``mismatch``, ``revoked``,
``jwt_alg``, ``jwt_kid``, ``jwt_expired``, ``jwt_lifetime``, ``jwt_invalid``) is for metrics and server logs only: every refusal
answers the same 401 (see :mod:`gateway.edge.security`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.edge.keys import KeyRing

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
JWT_ALGORITHMS = ("HS256", "RS256")  # the only ones ever accepted
_SUBJECT = re.compile(r"[A-Za-z0-9._@:-]{1,128}")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``key_id`` names the credential, never contains it."""

    client: str
    key_id: str
    method: str  # "api_key", "jwt" or "none"
    rate: float | None = None
    burst: int | None = None
    pin_version: bool = False  # the key may pin a model version (``model_version``)

    @property
    def label_client(self) -> str:
        """Bounded metric label: JWT subjects are open-ended, so they share one label."""
        return "jwt" if self.method == "jwt" else self.client


ANONYMOUS = Principal(client="anonymous", key_id="-", method="none")


@dataclass(frozen=True)
class JwtConfig:
    """Accepted JWTs: algorithms (subset of HS256/RS256), their keys, audience and issuer."""

    algorithms: tuple[str, ...]
    audience: str
    issuer: str
    secret: str | None = None  # HS256
    public_key_pem: str | None = None  # RS256
    leeway_s: float = 30.0
    jwks: dict[str, Any] | None = None  # a JSON Web Key Set ({"keys": [...]}), keys by kid
    max_lifetime_s: float = 3600.0

    def __post_init__(self) -> None:
        bad = [a for a in self.algorithms if a not in JWT_ALGORITHMS]
        if bad or not self.algorithms:
            raise ValueError(
                f"JWT algorithms must be a non-empty subset of {JWT_ALGORITHMS}, got {self.algorithms}"
            )
        in_set = {_jwk_algorithm(k) for k in (self.jwks or {}).get("keys", [])}
        if self.secret is not None and len(self.secret) < 32:
            raise ValueError("HS256 needs a secret of at least 32 characters")
        if "HS256" in self.algorithms and not self.secret and "HS256" not in in_set:
            raise ValueError(
                "HS256 needs a secret of at least 32 characters (or oct keys in the key set)"
            )
        if "RS256" in self.algorithms and not self.public_key_pem and "RS256" not in in_set:
            raise ValueError("RS256 needs a public key (PEM) or RSA keys in the key set")
        if self.max_lifetime_s <= 0:
            raise ValueError("max_lifetime_s must be positive")
        if not self.audience or not self.issuer:
            raise ValueError("JWT needs both an audience and an issuer")


class JwtVerifier:
    """Checks bearer JWTs against :class:`JwtConfig` (PyJWT; RS256 also needs ``cryptography``)."""

    def __init__(self, config: JwtConfig) -> None:
        import jwt

        if "RS256" in config.algorithms and not jwt.algorithms.has_crypto:
            raise ValueError("RS256 needs the 'cryptography' package")
        self.config = config
        self._jwt = jwt
        # (algorithm, kid) -> key; kid None: the single configured key, for tokens without kid
        self._keys: dict[tuple[str, str | None], Any] = {}
        if config.secret:
            self._keys["HS256", None] = config.secret
        if config.public_key_pem and "RS256" in config.algorithms:
            self._keys["RS256", None] = config.public_key_pem
        for raw in (config.jwks or {}).get("keys", []):
            alg, kid = _jwk_algorithm(raw), raw.get("kid")
            if not isinstance(kid, str) or not kid:
                raise ValueError("every key in the JWT key set needs a kid")
            if alg not in config.algorithms:
                continue  # a key for an algorithm we do not accept is never used
            key = jwt.PyJWK(raw, algorithm=alg).key
            if alg == "HS256" and len(key) < 32:
                raise ValueError(f"HS256 key {kid!r} is shorter than 32 bytes")
            self._keys[alg, kid] = key

    def verify(self, token: str) -> tuple[Principal | None, str]:
        """``(principal, "ok")`` or ``(None, reason)``."""
        jwt = self._jwt
        try:
            header = jwt.get_unverified_header(token)
            alg, kid = header.get("alg"), header.get("kid")
            # The key is chosen by the algorithm from our own list: an HS256 token is never
            # checked against the RSA public key (the classic algorithm-confusion attack); the
            # kid only picks among the keys of that algorithm.
            if alg not in self.config.algorithms or not any(a == alg for a, _ in self._keys):
                return None, "jwt_alg"
            if kid is not None and not isinstance(kid, str):
                return None, "jwt_kid"
            key = self._keys.get((alg, kid))
            if key is None:
                return None, "jwt_kid"
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            return None, "jwt_expired"
        except jwt.InvalidTokenError:
            return None, "jwt_invalid"
        subject = claims.get("sub")
        if not isinstance(subject, str) or not _SUBJECT.fullmatch(subject):
            return None, "jwt_invalid"
        if not self._lifetime_ok(claims):
            return None, "jwt_lifetime"
        return Principal(client=subject, key_id="jwt", method="jwt"), "ok"

    def _lifetime_ok(self, claims: dict[str, Any]) -> bool:
        """``exp - iat`` (when there is an ``iat``) and ``exp - now`` at most the maximum."""
        bound = self.config.max_lifetime_s + self.config.leeway_s
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            return False
        if exp - time.time() > bound:
            return False
        if iat is None:
            return True
        return isinstance(iat, int | float) and not isinstance(iat, bool) and exp - iat <= bound


def _jwk_algorithm(raw: dict[str, Any]) -> str | None:
    """The one algorithm a key of the set is used with: ``oct`` HS256, ``RSA`` RS256 (a key's own
    ``alg``, when present, must agree, else the key is for nothing)."""
    alg = {"oct": "HS256", "RSA": "RS256"}.get(str(raw.get("kty")))
    if alg is None or raw.get("alg", alg) != alg:
        return None
    return alg


class Authenticator:
    """Turns request headers into a :class:`Principal` (or a refusal reason)."""

    def __init__(self, *, keyring: KeyRing | None, jwt: JwtVerifier | None = None) -> None:
        self.keyring = keyring
        self.jwt = jwt

    @staticmethod
    def credential(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str]:
        """The presented credential, or ``(None, reason)`` when absent or ambiguous."""
        found: list[str] = []
        for name, value in headers:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").strip().partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    return None, "malformed"
                found.append(token.strip())
            elif name == b"x-api-key":
                found.append(value.decode("latin-1").strip())
        if not found:
            return None, "missing"
        if len(set(found)) > 1 or not found[0] or len(found[0]) > 4096:
            return None, "malformed"
        return found[0], "ok"

    def authenticate(self, headers: Iterable[tuple[bytes, bytes]]) -> tuple[Principal | None, str]:
        """``(principal, "ok")`` or ``(None, reason)``; the reason never reaches the client."""
        token, reason = self.credential(headers)
        if token is None:
            return None, reason
        if token.startswith("csk_"):
            if self.keyring is None:
                return None, "unknown"
            record, reason = self.keyring.verify(token)
            if record is None:
                return None, reason
            return Principal(
                client=record.client,
                key_id=record.key_id,
                method="api_key",
                rate=record.rate,
                burst=record.burst,
                pin_version=record.pin_version,
            ), "ok"
        if self.jwt is not None and token.count(".") == 2:
            return self.jwt.verify(token)
        return None, "malformed"


def load_public_key(path: Path | None) -> str | None:
    """The PEM text of an RS256 public key file (None when not configured)."""
    return path.read_text() if path else None
