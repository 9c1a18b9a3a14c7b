"""Settings of the fallback MF service: one pydantic-settings class, env prefix ``MF_``.

Built by the entry point or by ``create_app``, never at import time.

========================== ======================= ==================================================
variable                   default                 meaning
========================== ======================= ==================================================
``MF_HOST``                ``127.0.0.1``           bind address (``0.0.0.0`` in containers)
``MF_PORT``                ``8001``                HTTP port (API, probes, metrics, admin)
``MF_ARTIFACTS_DIR``       ``$CASCADE_HOME/artifacts/als``  folder holding ``<version>/`` dirs
                                                   and the ``latest`` pointer (text file or
                                                   symlink: ``fallback_mf.artifact_format``)
``MF_VERSION``             unset                   pin one version; unset follows ``latest``
``MF_MAX_K``               ``100``                 largest ``k`` a request may ask for
``MF_DEFAULT_K``           ``20``                  ``k`` when the request names none
``MF_MAX_EXCLUDE``         ``1000``                most ids in one ``exclude`` list
``MF_INLINE_MAX_ITEMS``    ``10000``               catalogues up to this size are scored on the event
                                                   loop; larger ones in a worker thread
``MF_RELOAD_INTERVAL_S``   ``30``                  how often ``latest`` is checked; ``0`` disables
``MF_ADMIN_TOKEN``         unset                   bearer token for ``POST /admin/reload``; unset:
                                                   loopback peers only (403 for anyone else)
``MF_RELOAD_MIN_INTERVAL_S`` ``10``                at most one ``/admin/reload`` per this many
                                                   seconds (429 + ``Retry-After``); ``0``: no limit
``MF_DATASET``             unset                   the data set this service serves: an artifact
                                                   trained on another one (its ``data.dataset``)
                                                   is refused, the old model keeps serving
``MF_DATA_CHECKSUM``       unset                   with ``MF_DATASET``: also the data's checksum
                                                   (``data.checksum``), so a rebuilt data set of
                                                   the same name is told apart
``MF_LOG_LEVEL``           ``INFO``                root log level
``MF_JSON_LOGS``           ``true``                JSON lines on stderr (false: plain text)
========================== ======================= ==================================================
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cascade.runtime.paths import Layout
from fallback_mf.artifact_format import als_root

ABSOLUTE_MAX_K = 1000  # a response this long is already ~40 KB of JSON


def default_artifacts_dir() -> Path:
    """``$CASCADE_HOME/artifacts/als``: where ``cascade train mf`` writes its versions."""
    return als_root(Layout.from_env().artifacts_dir)


class MfSettings(BaseSettings):
    """Configuration of one MF service process (see the module docstring for the table)."""

    model_config = SettingsConfigDict(env_prefix="MF_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=1, le=65535)
    artifacts_dir: Path = Field(default_factory=default_artifacts_dir)
    version: str | None = None
    max_k: int = Field(default=100, ge=1, le=ABSOLUTE_MAX_K)
    default_k: int = Field(default=20, ge=1, le=ABSOLUTE_MAX_K)
    max_exclude: int = Field(default=1000, ge=0, le=100_000)
    inline_max_items: int = Field(default=10_000, ge=0)
    reload_interval_s: float = Field(default=30.0, ge=0.0)
    admin_token: SecretStr | None = None
    reload_min_interval_s: float = Field(default=10.0, ge=0.0, le=3600.0)
    dataset: str | None = None
    data_checksum: str | None = None
    log_level: str = "INFO"
    json_logs: bool = True

    @field_validator("admin_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _check(self) -> MfSettings:
        if self.admin_token is not None and len(self.admin_token.get_secret_value()) < 16:
            raise ValueError("admin_token must have at least 16 characters")
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) must not exceed max_k ({self.max_k})")
        if self.version is not None and ("/" in self.version or self.version in {"", ".", ".."}):
            raise ValueError(f"version must be a folder name, got {self.version!r}")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {self.log_level!r}")
        return self
