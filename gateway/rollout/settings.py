"""Rollout settings (env ``GATEWAY_ROLLOUT_*``), apart from ``GatewaySettings`` so the rollout
can be switched on and tuned without touching the serving settings.

=================================== ========= ===============================================
``GATEWAY_ROLLOUT_REDIS_URL``       (empty)   the state's Redis; empty: rollouts off, Triton's
                                              newest version serves (as before rollouts)
``GATEWAY_ROLLOUT_PREFIX``          ``cascade:rollout``  key prefix (one per model/stack)
``GATEWAY_ROLLOUT_REFRESH_S``       ``1``     state re-read and counters flushed this often
``GATEWAY_ROLLOUT_INTERVAL_S``      ``10``    the controller's analysis interval
``GATEWAY_ROLLOUT_CONTROLLER``      ``true``  this replica may hold the controller lock
``GATEWAY_ROLLOUT_SHADOW_SLOTS``    ``4``     shadow calls in flight at most
``GATEWAY_ROLLOUT_TIMEOUT_MS``      ``200``   each Redis call (off the request path)
``GATEWAY_ROLLOUT_Z_FAIL``          ``3.5``   one-sided z beyond which a check fails
``GATEWAY_ROLLOUT_Z_HOLD``          ``2.0``   leaning worse beyond this holds a step
``GATEWAY_ROLLOUT_MIN_REQUESTS``    ``200``   calls per arm before a step may pass
``GATEWAY_ROLLOUT_MIN_LATENCY_REQUESTS`` ``400`` for the p99 check
``GATEWAY_ROLLOUT_MIN_IMPRESSIONS`` ``1000``  for the CTR check
``GATEWAY_ROLLOUT_ERROR_MARGIN``    ``0.005`` absolute error-rate margin
``GATEWAY_ROLLOUT_FALLBACK_MARGIN`` ``0.01``  absolute fallback-share margin
``GATEWAY_ROLLOUT_LATENCY_MARGIN_MS`` ``10``  p99 margin
``GATEWAY_ROLLOUT_CTR_MARGIN``      ``0.05``  relative CTR margin
``GATEWAY_ROLLOUT_REQUIRE_CTR``     ``false`` a step cannot pass without feedback counts
``GATEWAY_ROLLOUT_EVENTS_CTR_KEY``  (empty)   the events consumer's CTR hash
                                              (``cascade:events:<project>:ctr``); empty: the
                                              rollout's ``<prefix>:feedback`` hash
=================================== ========= ===============================================
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.rollout.analysis import AnalysisConfig
from gateway.rollout.store import DEFAULT_PREFIX


class RolloutSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_ROLLOUT_", extra="forbid")

    redis_url: str = ""
    prefix: str = Field(default=DEFAULT_PREFIX, pattern=r"^[A-Za-z0-9:._-]{1,64}$")
    refresh_s: float = Field(default=1.0, gt=0, le=60)
    interval_s: float = Field(default=10.0, gt=0, le=600)
    controller: bool = True
    shadow_slots: int = Field(default=4, ge=0, le=64)
    timeout_ms: float = Field(default=200.0, gt=0, le=5000)
    z_fail: float = Field(default=3.5, ge=2.0, le=10.0)
    z_hold: float = Field(default=2.0, ge=0.0, le=10.0)
    min_requests: int = Field(default=200, ge=1)
    min_latency_requests: int = Field(default=400, ge=100)
    min_impressions: int = Field(default=1000, ge=1)
    min_fail_sample: int = Field(default=20, ge=5)
    error_margin: float = Field(default=0.005, ge=0, le=1)
    fallback_margin: float = Field(default=0.01, ge=0, le=1)
    latency_margin_ms: float = Field(default=10.0, ge=0, le=10_000)
    ctr_margin: float = Field(default=0.05, ge=0, lt=1)
    require_ctr: bool = False
    # The events consumer's CTR hash (cascade:events:<feast project>:ctr) in the same Redis;
    # empty: the rollout's own <prefix>:feedback hash (what drill D11's click model feeds).
    events_ctr_key: str = Field(default="", max_length=200)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis_url must be a redis://, rediss:// or unix:// URL")
        return value

    def analysis(self) -> AnalysisConfig:
        return AnalysisConfig(
            z_fail=self.z_fail,
            z_hold=min(self.z_hold, self.z_fail),
            min_requests=self.min_requests,
            min_latency_requests=self.min_latency_requests,
            min_impressions=self.min_impressions,
            min_fail_sample=self.min_fail_sample,
            error_margin=self.error_margin,
            fallback_margin=self.fallback_margin,
            latency_margin_s=self.latency_margin_ms / 1000,
            ctr_margin=self.ctr_margin,
            require_ctr=self.require_ctr,
        )
