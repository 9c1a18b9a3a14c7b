"""The gateway's front door: authentication, the /metrics guard, per-client rate limits.

One pure ASGI middleware, :class:`AuthMiddleware`, inside ``GatewayMiddleware`` (request ids,
request metrics) and :class:`gateway.edge.limits.LimitsMiddleware` (431, 503):

- Open: ``/healthz``, ``/readyz`` and the API description (``/openapi.json``, ``/docs``,
  ``/redoc`` and their assets under ``/docs-assets/``): they reveal nothing a client of a public API does not already see.
- ``/metrics``: never opened by a client key (it shows every client's traffic). With
  ``GATEWAY_METRICS_TOKEN`` set it needs ``Authorization: Bearer <metrics token>``; without
  one it answers loopback peers only (the local stack, a sidecar), 403 for anyone else.
- Everything else, unknown paths included, needs a credential (:mod:`gateway.edge.auth`). Every
  refusal is the same 401: one body, one ``WWW-Authenticate`` header, whatever the cause, so
  nothing tells a prober whether a key id exists or was revoked. The cause goes to
  ``gateway_auth_failures_total{reason}`` and debug logs.
- Authenticated: ``scope["state"]["principal"]`` (key id and client name, never the key) feeds
  the span attributes, ``gateway_client_requests_total{client,key_id,status}`` and logs. Then the
  client's token bucket (:mod:`gateway.edge.ratelimit`): 429 with ``Retry-After``.
- The key file is re-read when it changes (a background task stats it every
  ``reload_interval_s`` in a worker thread, never on the request path): revocation takes
  effect within seconds, without a restart.

Authentication is off only when the settings say so explicitly, or when no credential source is
configured and the gateway listens on loopback only (local development); every request is then
the ``anonymous`` principal and is not rate limited. :func:`build_security` refuses to serve a
non-loopback address without authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Request
from fastapi import Security as SecurityParam
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.edge.auth import (
    ANONYMOUS,
    API_KEY_HEADER,
    Authenticator,
    JwtConfig,
    JwtVerifier,
    Principal,
)
from gateway.edge.keys import KeyFileError, KeyRing, parse_key_id
from gateway.edge.limits import SecurityMetrics
from gateway.edge.ratelimit import Decision, RateLimiter
from gateway.errors import refuse

if TYPE_CHECKING:
    from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset(
    {"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)
OPEN_PREFIXES = ("/docs-assets/",)  # Swagger UI's and ReDoc's own files (no data)
METRICS_PATH = "/metrics"
WWW_AUTHENTICATE = 'Bearer realm="cascade"'
UNAUTHORIZED_DETAIL = "missing or invalid credentials"


class InsecureConfiguration(ValueError):
    """The settings would expose the API without authentication."""


@dataclass
class AuthConfig:
    """What :class:`AuthMiddleware` enforces (built from ``GatewaySettings`` in the factory)."""

    enabled: bool
    keyring: KeyRing | None = None
    jwt: JwtVerifier | None = None
    metrics_token: str | None = None
    limiter: RateLimiter | None = None  # None: no rate limits
    default_rate: float = 1000.0
    default_burst: int = 2000
    reload_interval_s: float = 2.0


def loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost (an address only this machine reaches)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def is_loopback(scope: Scope) -> bool:
    """The peer of this request is on this machine."""
    client = scope.get("client")
    return client is not None and loopback_host(str(client[0]))


class SecurityLayer:
    """The long-lived part: key ring refreshes, the limiter; owned by the app (``app.state``)."""

    def __init__(self, config: AuthConfig, metrics: SecurityMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.authenticator = Authenticator(keyring=config.keyring, jwt=config.jwt)
        self._watcher: asyncio.Task[None] | None = None
        self._warned: set[str] = set()
        self.count_keys()

    def count_keys(self) -> None:
        if self.config.keyring is None:
            return
        records = self.config.keyring.records.values()
        revoked = sum(1 for r in records if r.revoked)
        self.metrics.api_keys.labels(state="active").set(len(records) - revoked)
        self.metrics.api_keys.labels(state="revoked").set(revoked)

    def warn_revoked(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Log (once per key id and process) that a revoked key is still in use: a client to chase."""
        token, _ = Authenticator.credential(headers)
        key_id = parse_key_id(token or "")
        if key_id and key_id not in self._warned and len(self._warned) < 10_000:
            self._warned.add(key_id)
            logger.warning("revoked API key %s is still being used", key_id)

    async def start(self) -> None:
        """Lifespan startup: watch the key file (stat every ``reload_interval_s``, in a thread)."""
        if self.config.keyring is not None and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(self.config.keyring))

    async def _watch(self, keyring: KeyRing) -> None:
        while True:
            await asyncio.sleep(self.config.reload_interval_s)
            await self.reload_keys(keyring)

    async def reload_keys(self, keyring: KeyRing) -> None:
        """One check of the key file. A failed reload keeps the previous keys (a key revoked in
        the new file stays valid), so it is counted (``gateway_api_keys_reload_failures_total``,
        ``gateway_api_keys_reload_failing``) and alerted on (``CascadeApiKeysReloadFailing``),
        not only logged."""
        failures = keyring.reload_failures
        try:
            if await asyncio.to_thread(keyring.reload_if_changed):
                self.count_keys()
        except (KeyFileError, OSError):  # a first load cannot fail here; keep watching
            logger.exception("key file reload failed")
            keyring.reload_failures += 1
            keyring.failing = True
        if keyring.reload_failures > failures:
            self.metrics.api_keys_reload_failures.inc(keyring.reload_failures - failures)
        self.metrics.api_keys_reload_failing.set(1 if keyring.failing else 0)

    async def charge(self, principal: Principal, cost: float = 1.0) -> Decision | None:
        """Take ``cost`` tokens from the principal's bucket (None: no rate limits). The edge
        takes one per request before the body is read; the batch route takes one more per
        further user once it knows how many there are."""
        limiter = self.config.limiter
        if limiter is None or not self.config.enabled:
            return None
        bucket = principal.key_id if principal.method == "api_key" else f"jwt:{principal.client}"
        return await limiter.check(
            bucket,
            rate=principal.rate or self.config.default_rate,
            burst=principal.burst or self.config.default_burst,
            cost=cost,
        )

    async def close(self) -> None:
        """Lifespan shutdown: stop watching the key file, close the limiter's Redis client."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self.config.limiter is not None:
            await self.config.limiter.close()


class AuthMiddleware:
    """Authentication, the /metrics guard and per-client rate limits (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, security: SecurityLayer) -> None:
        self.app = app
        self.security = security
        self.config = security.config
        self.metrics = security.metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] in OPEN_PATHS
            or scope["path"].startswith(OPEN_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        if scope["path"] == METRICS_PATH:
            await self._metrics_guard(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        if not self.config.enabled:
            state["principal"] = ANONYMOUS
            await self.app(scope, receive, send)
            return
        principal, reason = self.security.authenticator.authenticate(scope["headers"])
        if principal is None:
            self.metrics.auth_failures.labels(reason=reason).inc()
            if reason == "revoked":
                self.security.warn_revoked(scope["headers"])
            logger.debug("401 (%s) for %s %s", reason, scope["method"], scope["path"])
            await self._unauthorized(scope, send)
            return
        state["principal"] = principal
        client, key_id = principal.label_client, principal.key_id
        limiter = self.config.limiter
        if limiter is not None:
            decision = await self.security.charge(principal)
            assert decision is not None
            self.metrics.ratelimit_decisions.labels(backend=decision.backend).inc()
            if not decision.allowed:
                self.metrics.rate_limited.labels(
                    client=client, key_id=key_id, backend=decision.backend
                ).inc()
                self.metrics.client_requests.labels(
                    client=client, key_id=key_id, status="429"
                ).inc()
                await refuse(
                    send,
                    scope,
                    status=429,
                    code="rate_limited",
                    detail=f"rate limit exceeded; retry after {decision.retry_after_header} s",
                    headers={"Retry-After": decision.retry_after_header},
                )
                return
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.client_requests.labels(
                client=client, key_id=key_id, status=str(status)
            ).inc()

    async def _unauthorized(self, scope: Scope, send: Send) -> None:
        await refuse(
            send,
            scope,
            status=401,
            code="unauthorized",
            detail=UNAUTHORIZED_DETAIL,
            headers={"WWW-Authenticate": WWW_AUTHENTICATE},
        )

    async def _metrics_guard(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = self.config.metrics_token
        if token:
            presented, _ = Authenticator.credential(
                (k, v) for k, v in scope["headers"] if k == b"authorization"
            )
            if presented is None or not hmac.compare_digest(presented.encode(), token.encode()):
                self.metrics.auth_failures.labels(reason="metrics_token").inc()
                await self._unauthorized(scope, send)
                return
        elif not is_loopback(scope):
            await refuse(
                send,
                scope,
                status=403,
                code="forbidden",
                detail="metrics are served to loopback peers only (or set GATEWAY_METRICS_TOKEN)",
            )
            return
        await self.app(scope, receive, send)


# Documentation only: these make the OpenAPI spec declare both ways to authenticate; the
# middleware above does the checking (before the body is parsed).
_api_key_doc = APIKeyHeader(
    name=API_KEY_HEADER,
    scheme_name="ApiKey",
    auto_error=False,
    description="an API key `csk_<key_id>_<secret>` (`cascade keys create`)",
)
_bearer_doc = HTTPBearer(
    scheme_name="Bearer",
    auto_error=False,
    description="an API key, or a JWT when the gateway is configured for them",
)


async def current_principal(
    request: Request,
    _key: Annotated[str | None, SecurityParam(_api_key_doc)],
    _bearer: Annotated[HTTPAuthorizationCredentials | None, SecurityParam(_bearer_doc)],
) -> Principal:
    """Who is calling (set by :class:`AuthMiddleware`)."""
    principal: Principal = request.scope.get("state", {}).get("principal", ANONYMOUS)
    return principal


def build_security(settings: GatewaySettings, metrics: SecurityMetrics) -> SecurityLayer:
    """The security layer from the settings (reads the key file and JWT key: fails fast)."""
    keyring = KeyRing(settings.api_keys_file) if settings.api_keys_file else None
    jwt = None
    if settings.jwt_algorithms:
        public_key = (
            settings.jwt_public_key_file.read_text() if settings.jwt_public_key_file else None
        )
        jwt = JwtVerifier(
            JwtConfig(
                algorithms=tuple(
                    a.strip() for a in settings.jwt_algorithms.split(",") if a.strip()
                ),
                audience=settings.jwt_audience or "",
                issuer=settings.jwt_issuer or "",
                secret=settings.jwt_secret.get_secret_value() if settings.jwt_secret else None,
                public_key_pem=public_key,
                leeway_s=settings.jwt_leeway_s,
                jwks=(
                    json.loads(settings.jwt_jwks_file.read_text())
                    if settings.jwt_jwks_file
                    else None
                ),
                max_lifetime_s=settings.jwt_max_lifetime_s,
            )
        )
    configured = keyring is not None or jwt is not None
    enabled = settings.auth_enabled if settings.auth_enabled is not None else configured
    if enabled and not configured:
        raise InsecureConfiguration(
            "GATEWAY_AUTH_ENABLED is true but no GATEWAY_API_KEYS_FILE or GATEWAY_JWT_ALGORITHMS is set"
        )
    if not enabled:
        if settings.auth_enabled is None and not loopback_host(settings.host):
            raise InsecureConfiguration(
                f"refusing to serve {settings.host} without authentication: set GATEWAY_API_KEYS_FILE "
                "(cascade keys create), or GATEWAY_AUTH_ENABLED=false explicitly"
            )
        logger.warning(
            "authentication is DISABLED (%s): local development only",
            "GATEWAY_AUTH_ENABLED=false"
            if settings.auth_enabled is False
            else "no key file configured",
        )
    limiter = None
    if enabled and settings.rate_limit_enabled:
        if settings.rate_limit_redis_url:
            limiter = RateLimiter.from_url(
                settings.rate_limit_redis_url,
                on_redis_error=lambda exc: metrics.ratelimit_redis_errors.inc(),
                replicas=settings.rate_limit_replicas,
            )
        else:
            limiter = RateLimiter()
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    return SecurityLayer(
        AuthConfig(
            enabled=enabled,
            keyring=keyring,
            jwt=jwt,
            metrics_token=token,
            limiter=limiter,
            default_rate=settings.rate_limit_rps,
            default_burst=settings.rate_limit_burst,
            reload_interval_s=settings.api_keys_reload_s,
        ),
        metrics,
    )
