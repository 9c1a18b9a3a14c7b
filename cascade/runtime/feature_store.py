"""Opening the Feast feature store: the config every reader and writer shares.

Feast stays the system of record (definitions, registry, materialization, the online store);
this module only builds its ``RepoConfig`` (file registry, file offline store, Redis online store
when ``REDIS_URL`` is set, else SQLite) and opens it, so the gateway's online read and the
offline tooling (``cascade.features.store``: apply, materialize) open the same store. Feast
itself is imported only when a store is opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from cascade.runtime import feature_names as names
from cascade.runtime.paths import Layout
from cascade.runtime.redact import redact_url

if TYPE_CHECKING:
    from feast import FeatureStore, RepoConfig

REDIS_URL_ENV = "REDIS_URL"


class FeatureStoreError(Exception):
    """A problem the user can fix (missing data set, unreachable Redis); the CLI prints it."""


def redis_connection_string(url: str) -> str:
    """Turn ``redis://[:password@]host:port/db`` into Feast's ``host:port,db=N[,...]`` form."""
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss"):
        raise FeatureStoreError(
            f"{REDIS_URL_ENV}={redact_url(url)!r}: expected redis://host:port/db"
        )
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or 6379
    path = parsed.path.strip("/")
    db = int(path) if path.isdigit() else 0
    parts = [f"{host}:{port}", f"db={db}"]
    if parsed.password:
        parts.append(f"password={unquote(parsed.password)}")
    if parsed.username and parsed.username != "default":
        parts.append(f"username={unquote(parsed.username)}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def online_store_kind() -> str:
    """``redis`` when ``REDIS_URL`` is set, else ``sqlite``."""
    return "redis" if os.environ.get(REDIS_URL_ENV) else "sqlite"


def store_dir(*, layout: Layout, dataset: str) -> Path:
    """Folder of this data set's Feast registry (and SQLite online store)."""
    return layout.feast_dir / dataset


def store_config(
    *,
    layout: Layout,
    dataset: str,
    project: str | None = None,
    redis_timeout_s: float | None = None,
) -> RepoConfig:
    """Feast config for ``dataset``: file registry, file offline store, Redis or SQLite online.

    ``project`` overrides ``names.project_name(dataset)`` (env ``CASCADE_FEAST_PROJECT``, else
    ``cascade_<dataset>``).
    ``redis_timeout_s`` sets redis-py's socket and connect timeouts (serving path: tens of ms;
    redis-py's defaults wait seconds against a stopped Redis, docs/platform-notes.md).
    """
    from feast import RepoConfig

    folder = store_dir(layout=layout, dataset=dataset)
    folder.mkdir(parents=True, exist_ok=True)
    url = os.environ.get(REDIS_URL_ENV)
    online: dict[str, Any]
    if url:
        connection = redis_connection_string(url)
        if redis_timeout_s is not None:
            connection += (
                f",socket_timeout={redis_timeout_s},socket_connect_timeout={redis_timeout_s}"
            )
        online = {"type": "redis", "connection_string": connection}
    else:
        online = {"type": "sqlite", "path": str(folder / "online.db")}
    return RepoConfig(
        project=project or names.project_name(dataset),
        provider="local",
        registry=str(folder / "registry.db"),
        online_store=online,
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=folder,
    )


def open_store(
    *,
    layout: Layout,
    dataset: str,
    project: str | None = None,
    redis_timeout_s: float | None = None,
) -> FeatureStore:
    """A ``FeatureStore`` for ``dataset`` (see ``store_config``)."""
    from feast import FeatureStore

    config = store_config(
        layout=layout, dataset=dataset, project=project, redis_timeout_s=redis_timeout_s
    )
    return FeatureStore(config=config)
