"""Settings of the events consumer: one pydantic-settings class, env prefix ``EVENTS_``.

Built by the entry point or by ``create_app``, never at import time.

================================ ========================== ==========================================
variable                         default                    meaning
================================ ========================== ==========================================
``EVENTS_HOST`` / ``EVENTS_PORT`` ``127.0.0.1`` / ``8020``  probes and metrics (``/healthz``,
                                                            ``/readyz``, ``/metrics``)
``EVENTS_NATS_URL``              ``nats://127.0.0.1:4222``  the log (comma-separated for a cluster)
``EVENTS_CONNECT_TIMEOUT_S``     ``2``                      NATS connect / API call timeout
``REDIS_URL``                    required                   the Feast online store's Redis; the
                                                            consumer's state and dedup keys go there
``EVENTS_DATASET``               ``$CASCADE_DATASET``/demo  data set: Feast registry, offline log
``EVENTS_PARTITIONS``            ``16``                     subjects ``cascade.events.0..N-1``
``EVENTS_REPLICAS`` / ``_INDEX`` ``1`` / ``0``              consumer replicas; replica i takes the
                                                            partitions p with p % replicas == i
                                                            (more than 1 needs nats-server >= 2.10)
``EVENTS_DURABLE``               ``cascade-events``         durable consumer name (per replica)
``EVENTS_BATCH``                 ``500``                    most messages per fetch
``EVENTS_FETCH_WAIT_S``          ``0.1``                    how long an idle fetch waits
``EVENTS_MAX_ACK_PENDING``       ``20000``                  delivered, unacked messages at most
``EVENTS_ACK_WAIT_S``            ``30``                     redelivery after this without an ack
``EVENTS_DEDUP_TTL_S``           ``21600``                  how long an applied event_id is kept
``EVENTS_STATE_TTL_S``           ``604800``                 per-user state idle expiry (0: never);
                                                            an expired state re-seeds from Feast
``EVENTS_SERVED_TTL_S``          ``3600``                   request_id -> tier/model for the CTR join
``EVENTS_OFFLINE_FLUSH_S``       ``5``                      offline parquet write period ...
``EVENTS_OFFLINE_FLUSH_ROWS``    ``10000``                  ... or row count, whichever first
``EVENTS_STREAM_REPLICAS``       ``1``                      stream replicas (3 in a cluster)
``EVENTS_STREAM_MAX_AGE_S``      ``604800``                 how long the log keeps events
``EVENTS_STREAM_MAX_BYTES``      ``-1`` (no limit)          full stream: new events refused (503)
``EVENTS_DUPLICATE_WINDOW_S``    ``120``                    JetStream ``Nats-Msg-Id`` dedup window
``EVENTS_REDIS_TIMEOUT_S``       ``2``                      Redis socket / connect timeout
``EVENTS_RETRY_MAX_S``           ``5``                      backoff cap while Redis is down
``EVENTS_LAG_POLL_S``            ``2``                      consumer-info poll (lag gauge)
``EVENTS_LOG_LEVEL`` / ``JSON_LOGS`` ``INFO`` / ``true``    logging
================================ ========================== ==========================================
"""

from __future__ import annotations

import os

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cascade.runtime import feature_names as names
from events.contract import MAX_BATCH, MAX_PARTITIONS, PARTITIONS
from events.state import key_prefix


def _default_dataset() -> str:
    return os.environ.get("CASCADE_DATASET") or "demo"


class EventsSettings(BaseSettings):
    """Configuration of one consumer process (see the module docstring for the table)."""

    model_config = SettingsConfigDict(env_prefix="EVENTS_", extra="forbid", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8020, ge=1, le=65535)
    nats_url: str = "nats://127.0.0.1:4222"
    connect_timeout_s: float = Field(default=2.0, gt=0, le=60)
    redis_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "redis_url")
    )
    dataset: str = Field(
        default_factory=_default_dataset,
        validation_alias=AliasChoices("EVENTS_DATASET", "CASCADE_DATASET", "dataset"),
    )
    partitions: int = Field(default=PARTITIONS, ge=1, le=MAX_PARTITIONS)
    replicas: int = Field(default=1, ge=1, le=MAX_PARTITIONS)
    replica_index: int = Field(default=0, ge=0)
    durable: str = Field(default="cascade-events", pattern=r"[A-Za-z0-9_-]{1,64}")
    batch: int = Field(default=MAX_BATCH, ge=1, le=10_000)
    fetch_wait_s: float = Field(default=0.1, gt=0, le=30)
    max_ack_pending: int = Field(default=20_000, ge=1)
    ack_wait_s: float = Field(default=30.0, ge=1, le=3600)
    dedup_ttl_s: int = Field(default=21_600, ge=60)
    state_ttl_s: int = Field(default=7 * 86_400, ge=0)
    served_ttl_s: int = Field(default=3_600, ge=1)
    offline_flush_s: float = Field(default=5.0, gt=0, le=600)
    offline_flush_rows: int = Field(default=10_000, ge=1)
    stream_replicas: int = Field(default=1, ge=1, le=5)
    stream_max_age_s: float = Field(default=7 * 86_400.0, gt=0)
    stream_max_bytes: int = Field(default=-1, ge=-1)
    duplicate_window_s: float = Field(default=120.0, gt=0)
    redis_timeout_s: float = Field(default=2.0, gt=0, le=60)
    retry_max_s: float = Field(default=5.0, gt=0, le=300)
    lag_poll_s: float = Field(default=2.0, gt=0, le=300)
    log_level: str = "INFO"
    json_logs: bool = True

    @model_validator(mode="after")
    def _check(self) -> EventsSettings:
        if self.replica_index >= self.replicas:
            raise ValueError(f"replica_index {self.replica_index} >= replicas {self.replicas}")
        if self.replicas > self.partitions:
            raise ValueError("more replicas than partitions: some would get nothing")
        # Rows wait for the offline flush unacked: the consumer must be allowed that many.
        if self.max_ack_pending < self.offline_flush_rows + self.batch:
            raise ValueError("max_ack_pending must be >= offline_flush_rows + batch")
        if self.ack_wait_s <= self.offline_flush_s * 2:
            raise ValueError("ack_wait_s must exceed twice offline_flush_s")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {self.log_level!r}")
        return self

    @property
    def project(self) -> str:
        """The Feast project (``CASCADE_FEAST_PROJECT``, else ``cascade_<dataset>``)."""
        return names.project_name(self.dataset)

    @property
    def key_prefix(self) -> str:
        """Redis key prefix of the consumer's own keys (state, dedup, served, CTR)."""
        return key_prefix(self.project)

    @property
    def owned_partitions(self) -> list[int]:
        return [p for p in range(self.partitions) if p % self.replicas == self.replica_index]

    @property
    def durable_name(self) -> str:
        if self.replicas == 1:
            return self.durable
        return f"{self.durable}-{self.replica_index}-of-{self.replicas}"
