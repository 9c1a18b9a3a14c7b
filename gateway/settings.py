"""Settings of the gateway: one pydantic-settings class, env prefix ``GATEWAY_``.

Built by the entry point or by ``create_app``, never at import time.

=================================== ========================== ==========================================
variable                            default                    meaning
=================================== ========================== ==========================================
``GATEWAY_HOST`` / ``GATEWAY_PORT`` ``127.0.0.1`` / ``8000``   bind address and port
``GATEWAY_TRITON_URL``              ``127.0.0.1:8101``         Triton's gRPC ``host:port``; empty: no primary
``GATEWAY_MF_URL``                  ``http://127.0.0.1:8001``  fallback MF service; empty: no ALS tier
``GATEWAY_SIMILAR_MODEL``           ``two_tower_similar``      Triton model of similar items (same
                                                               ``TRITON_URL``); empty: ALS, popular
``GATEWAY_DATASET``                 ``$CASCADE_DATASET``/demo  data set whose Feast registry is read
``GATEWAY_DATASET_ID``              empty                      ``<name>:<checksum, 12 hex>`` of the data
                                                               served: a Two-Tower version trained on
                                                               another refuses (empty: no check)
``GATEWAY_FEATURES_ENABLED``        ``true``                   false: never read features
``GATEWAY_ARTIFACTS_DIR``           ``$CASCADE_HOME/artifacts`` where the ALS artifacts (popular list) are
``GATEWAY_DEADLINE_MS``             ``250``                    whole-request budget
``GATEWAY_FEATURE_TIMEOUT_MS``      ``20``                     Feast online read timeout
``GATEWAY_PRIMARY_TIMEOUT_MS``      ``100``                    Triton per-call timeout = slow-call threshold
``GATEWAY_MF_TIMEOUT_MS``           ``60``                     MF per-call timeout
``GATEWAY_BREAKER_WINDOW``          ``100``                    sliding window, calls
``GATEWAY_BREAKER_MIN_CALLS``       ``50``                     calls before the rates are judged
``GATEWAY_BREAKER_THRESHOLD``       ``0.5``                    failure rate that opens it
``GATEWAY_BREAKER_SLOW_THRESHOLD``  ``0.5``                    slow-call rate that opens it
``GATEWAY_BREAKER_CONSECUTIVE``     ``20``                     failures in a row that open it (0: off)
``GATEWAY_BREAKER_WAIT_S``          ``5``                      open period before half-open
``GATEWAY_BREAKER_HALF_OPEN_CALLS`` ``2``                      trial calls when half-open
``GATEWAY_BREAKER_REDIS_URL``       unset                      share breaker state across replicas
``GATEWAY_BREAKER_FORCE_OPEN``      ``false``                  hold the breaker open (drills, benchmarks)
``GATEWAY_MAX_K`` / ``DEFAULT_K``   ``100`` / ``20``           k limits (max <= Triton contract MAX_K)
``GATEWAY_MAX_EXCLUDE``             ``500``                    most ids in one ``exclude`` list
``GATEWAY_MAX_BODY_BYTES``          ``16384``                  larger bodies answer 413
``GATEWAY_BATCH_MAX_USERS``         ``100``                    users per ``POST /v1/recommendations:batch``
                                                               (<= Triton's max_batch_size)
``GATEWAY_BATCH_MAX_BODY_BYTES``    ``262144``                 body limit of the batch route (413)
``GATEWAY_POPULAR_REFRESH_S``       ``60``                     re-read the popular list; 0 disables
``GATEWAY_API_KEYS_FILE``           unset                      hashed API keys (``cascade keys``)
``GATEWAY_AUTH_ENABLED``            unset: on with keys/JWT    ``false``: no auth (local dev only)
``GATEWAY_API_KEYS_RELOAD_S``       ``2``                      key file mtime check interval
``GATEWAY_JWT_ALGORITHMS``          empty: no JWTs             ``HS256`` and/or ``RS256``
``GATEWAY_JWT_SECRET``              unset                      HS256 secret (>= 32 characters)
``GATEWAY_JWT_PUBLIC_KEY_FILE``     unset                      RS256 public key (PEM)
``GATEWAY_JWT_AUDIENCE`` / ``ISSUER`` unset                    required ``aud`` / ``iss``
``GATEWAY_JWT_JWKS_FILE``           unset                      key set by ``kid`` (rotation)
``GATEWAY_JWT_MAX_LIFETIME_S``      ``3600``                   longest ``exp - iat`` / ``exp - now``
``GATEWAY_METRICS_TOKEN``           unset: loopback only       bearer token for ``/metrics``
``GATEWAY_RATE_LIMIT_ENABLED``      ``true``                   per-client token buckets
``GATEWAY_RATE_LIMIT_RPS`` / ``BURST`` ``1000`` / ``2000``     default bucket (a key may override)
``GATEWAY_RATE_LIMIT_REDIS_URL``    unset: per process         buckets shared by all replicas
``GATEWAY_RATE_LIMIT_REPLICAS``     ``1``                      replicas sharing a bucket: with its
                                                               Redis down each takes rate / this
``GATEWAY_MAX_IN_FLIGHT``           ``64``                     in-flight ceiling; 503 beyond; 0: no limit
``GATEWAY_MIN_IN_FLIGHT``           ``8``                      floor of the adaptive in-flight limit
``GATEWAY_QUEUE_SHED_FRACTION``     ``0.5``                    503 when queued longer than this
                                                               share of the deadline; 0: never
``GATEWAY_MAX_HEADER_BYTES``        ``8192``                   larger request headers answer 431
``GATEWAY_GC_FREEZE``               ``true``                   freeze startup objects (short GC pauses)
``GATEWAY_REQUEST_START_HEADER``    ``X-Request-Start``        ingress arrival stamp; empty: ignore it
``GATEWAY_TRUSTED_PROXIES``         empty                      CIDRs whose stamp is believed before
                                                               auth; others' only after it
``GATEWAY_EVENTS_NATS_URL``         empty: events API off      NATS JetStream of the event log
                                                               (``POST /v1/events`` answers 503
                                                               ``events_disabled`` without it)
``GATEWAY_EVENTS_PUBLISH_TIMEOUT_MS`` ``2000``                 wait for the log's acks, then 503
``GATEWAY_EVENTS_CONNECT_TIMEOUT_MS`` ``2000``                 one connection attempt (retried)
``GATEWAY_EVENTS_PARTITIONS``       ``$EVENTS_PARTITIONS``/16  user partitions (= the consumer's
                                                               ``EVENTS_PARTITIONS``, also read)
``GATEWAY_EVENTS_MAX_BODY_BYTES``   ``262144``                 body limit of ``POST /v1/events``
``GATEWAY_EVENTS_MAX_FUTURE_S``     ``300``                    refuse events stamped further ahead
``GATEWAY_EVENTS_SERVED_RECORDS``   ``true``                   publish each answer for the CTR join
``GATEWAY_LOG_LEVEL`` / ``JSON_LOGS`` ``INFO`` / ``true``      logging
=================================== ========================== ==========================================

Overload (``max_in_flight``, ``queue_shed_fraction``): the in-flight limit adapts between
``min_in_flight`` and ``max_in_flight`` to the event-loop lag (``gateway.edge.admission``: 10% down
per probe while the lag exceeds 10 ms, +1 per calm probe, a probe every 50 ms).
Figures behind it are in ``gateway.edge.admission`` and the README. Beyond the in-flight limit a
request answers 503 + ``Retry-After`` at once. A request admitted but which
already spent more than ``queue_shed_fraction`` x ``deadline_ms`` before reaching its handler
(event loop busy, rate limiter, body read) answers 503 too: it would miss its deadline anyway.
The deadline counts from the request's arrival at the outermost middleware, not from the handler,
or from the ingress when it stamps ``X-Request-Start`` (``gateway.edge.queue_time``): then the time a
request waited in the socket before uvicorn read it counts too, and one that already waited past
the shed threshold is refused before auth and routing, at the cost of a few microseconds.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cascade.runtime.paths import Layout
from cascade.runtime.redact import redact_url
from events.contract import MAX_FUTURE_SKEW_S, MAX_PARTITIONS, PARTITIONS
from gateway.edge.queue_time import trusted_peers
from gateway.resilience.breaker import BreakerConfig
from two_tower import contract, similar_contract


def _default_dataset() -> str:
    return os.environ.get("CASCADE_DATASET") or "demo"


def _default_artifacts_dir() -> Path:
    return Layout.from_env().artifacts_dir


class GatewaySettings(BaseSettings):
    """Configuration of one gateway process (see the module docstring for the table)."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="forbid", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    triton_url: str = "127.0.0.1:8101"
    triton_model: str = contract.MODEL_NAME
    mf_url: str = "http://127.0.0.1:8001"
    # GET /v1/items/{item_id}/similar: the Triton model of the Two-Tower's item embeddings.
    similar_model: str = Field(default=similar_contract.MODEL_NAME, max_length=128)
    dataset: str = Field(
        default_factory=_default_dataset,
        validation_alias=AliasChoices("GATEWAY_DATASET", "CASCADE_DATASET"),
    )
    # Sent to Triton with each call (request parameter cascade_dataset): a Two-Tower version
    # trained on another data set answers with an error instead of its items (issue 19).
    dataset_id: str = Field(default="", max_length=200, pattern=r"^([^:\s]+:[0-9a-f]{1,64})?$")
    features_enabled: bool = True
    artifacts_dir: Path = Field(default_factory=_default_artifacts_dir)

    deadline_ms: float = Field(default=250.0, gt=0, le=10_000)
    feature_timeout_ms: float = Field(default=20.0, gt=0, le=1_000)
    primary_timeout_ms: float = Field(default=100.0, gt=0, le=5_000)
    mf_timeout_ms: float = Field(default=60.0, gt=0, le=5_000)

    breaker_window: int = Field(default=100, ge=1, le=100_000)
    breaker_min_calls: int = Field(default=50, ge=1, le=100_000)
    breaker_threshold: float = Field(default=0.5, gt=0, le=1)
    breaker_slow_threshold: float = Field(default=0.5, gt=0, le=1)
    breaker_consecutive: int = Field(default=20, ge=0, le=100_000)
    breaker_wait_s: float = Field(default=5.0, ge=0, le=3_600)
    breaker_half_open_calls: int = Field(default=2, ge=1, le=1_000)
    breaker_redis_url: str | None = None
    breaker_force_open: bool = False  # drills and benchmarks: hold the breaker open

    max_k: int = Field(default=100, ge=1, le=contract.MAX_K)
    default_k: int = Field(default=20, ge=1, le=contract.MAX_K)
    max_exclude: int = Field(default=500, ge=0, le=10_000)
    max_body_bytes: int = Field(default=16_384, ge=256, le=10_000_000)
    # POST /v1/recommendations:batch: users per call (one Triton request of as many rows, so at
    # most the contract's max_batch_size) and its own body limit.
    batch_max_users: int = Field(default=100, ge=1, le=contract.MAX_BATCH_SIZE)
    batch_max_body_bytes: int = Field(default=262_144, ge=1024, le=10_000_000)
    popular_refresh_s: float = Field(default=60.0, ge=0)

    # Security (docs/security.md, gateway/edge/security.py)
    auth_enabled: bool | None = None  # None: on when a key file or JWT is configured
    api_keys_file: Path | None = None
    api_keys_reload_s: float = Field(default=2.0, gt=0, le=3_600)
    jwt_algorithms: str = ""  # "HS256", "RS256", "HS256,RS256"; empty: no JWTs
    jwt_secret: SecretStr | None = None
    jwt_public_key_file: Path | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_s: float = Field(default=30.0, ge=0, le=300)
    jwt_jwks_file: Path | None = None  # a JSON Web Key Set: keys by kid (rotation)
    jwt_max_lifetime_s: float = Field(default=3600.0, ge=60, le=30 * 86_400)
    metrics_token: SecretStr | None = None
    rate_limit_enabled: bool = True
    rate_limit_rps: float = Field(default=1000.0, gt=0, le=1_000_000)
    rate_limit_burst: int = Field(default=2000, ge=1, le=10_000_000)
    rate_limit_redis_url: str | None = None
    rate_limit_replicas: int = Field(default=1, ge=1, le=10_000)  # the HPA's max in k8s
    max_in_flight: int = Field(default=64, ge=0, le=100_000)
    min_in_flight: int = Field(default=8, ge=1, le=100_000)
    queue_shed_fraction: float = Field(default=0.5, ge=0, le=1)
    max_header_bytes: int = Field(default=8192, ge=1024, le=1_048_576)
    gc_freeze: bool = True
    request_start_header: str = Field(default="X-Request-Start", max_length=64)
    trusted_proxies: str = ""  # "10.0.0.0/8,192.168.0.5": the ingress; empty: none

    # Events (``POST /v1/events``, gateway/feedback.py). Empty URL: the events API is off (503
    # ``events_disabled``) and no served records are published; ``cascade up``, compose and k8s
    # set it. No default URL on purpose: a gateway must never publish into a broker it was not
    # pointed at (the machine's own NATS on :4222, say).
    events_nats_url: str = ""
    events_publish_timeout_ms: float = Field(default=2000.0, gt=0, le=30_000)
    events_connect_timeout_ms: float = Field(default=2000.0, gt=0, le=30_000)
    # The consumer's EVENTS_PARTITIONS is read too: one variable (cascade-common) for both
    # sides, since a gateway publishing to partitions no consumer reads would strand events.
    events_partitions: int = Field(
        default=PARTITIONS,
        ge=1,
        le=MAX_PARTITIONS,
        validation_alias=AliasChoices("GATEWAY_EVENTS_PARTITIONS", "EVENTS_PARTITIONS"),
    )
    # 500 events of the longest ids fit in ~170 KB; the recommendation routes keep 16 KiB.
    events_max_body_bytes: int = Field(default=262_144, ge=1024, le=10_000_000)
    events_max_future_s: float = Field(default=MAX_FUTURE_SKEW_S, ge=0, le=86_400)
    events_served_records: bool = True

    log_level: str = "INFO"
    json_logs: bool = True

    @field_validator(
        "api_keys_file",
        "jwt_public_key_file",
        "jwt_jwks_file",
        "jwt_secret",
        "metrics_token",
        "rate_limit_redis_url",
        "jwt_audience",
        "jwt_issuer",
        "auth_enabled",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # An empty variable (``GATEWAY_API_KEYS_FILE=``) means unset, not the current directory.
        return None if value == "" else value

    @model_validator(mode="after")
    def _check(self) -> GatewaySettings:
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) must not exceed max_k ({self.max_k})")
        if self.breaker_min_calls > self.breaker_window:
            raise ValueError("breaker_min_calls must not exceed breaker_window")
        if self.feature_timeout_ms >= self.deadline_ms:
            raise ValueError("feature_timeout_ms must be below deadline_ms")
        if self.mf_url and not self.mf_url.startswith(("http://", "https://")):
            raise ValueError(f"mf_url must be an http(s) URL, got {self.mf_url!r}")
        algorithms = [a.strip() for a in self.jwt_algorithms.split(",") if a.strip()]
        if not set(algorithms) <= {"HS256", "RS256"}:
            raise ValueError(
                f"jwt_algorithms: only HS256 and RS256 are accepted, got {self.jwt_algorithms!r}"
            )
        if algorithms and not (self.jwt_audience and self.jwt_issuer):
            raise ValueError("JWT needs jwt_audience and jwt_issuer")
        if self.jwt_secret is not None and len(self.jwt_secret.get_secret_value()) < 32:
            raise ValueError("jwt_secret must have at least 32 characters")
        if "HS256" in algorithms and self.jwt_secret is None and self.jwt_jwks_file is None:
            raise ValueError("HS256 needs jwt_secret (>= 32 characters) or jwt_jwks_file")
        if (
            "RS256" in algorithms
            and self.jwt_public_key_file is None
            and self.jwt_jwks_file is None
        ):
            raise ValueError("RS256 needs jwt_public_key_file or jwt_jwks_file")
        trusted_peers(self.trusted_proxies)  # ValueError for a malformed CIDR
        if self.events_nats_url and not all(
            u.strip().startswith(("nats://", "tls://")) for u in self.events_nats_url.split(",")
        ):
            raise ValueError(
                f"events_nats_url must be nats:// or tls:// URLs, got {redact_url(self.events_nats_url)!r}"
            )
        if self.metrics_token is not None and len(self.metrics_token.get_secret_value()) < 16:
            raise ValueError("metrics_token must have at least 16 characters")
        return self

    @property
    def queue_shed_s(self) -> float:
        """Queue time after which a request is shed (0: never); the one threshold."""
        return self.queue_shed_fraction * self.deadline_ms / 1000.0

    def breaker_config(self) -> BreakerConfig:
        """The breaker policy; the slow-call threshold is the primary's per-call timeout."""
        return BreakerConfig(
            window_size=self.breaker_window,
            minimum_calls=self.breaker_min_calls,
            failure_rate_threshold=self.breaker_threshold,
            slow_call_rate_threshold=self.breaker_slow_threshold,
            slow_call_seconds=self.primary_timeout_ms / 1000.0,
            wait_seconds=self.breaker_wait_s,
            half_open_calls=self.breaker_half_open_calls,
            consecutive_failures=self.breaker_consecutive,
        )
