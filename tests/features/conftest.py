"""Fixtures for the feature store tests: an isolated Feast project, tiny data, real stores.

Each test gets its own CASCADE_HOME (tmp_path) and its own Feast project name, so Redis keys
(which end with the project name) never collide with another test or a real deployment; the
Redis fixture deletes the project's keys afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from cascade.runtime import feature_names as names
from cascade.runtime import schema
from cascade.runtime.paths import Layout

REDIS_URL = "redis://127.0.0.1:6379/0"
DATASET = "tiny"


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Layout:
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    return Layout(home=tmp_path)


@pytest.fixture
def project(monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"cascade_test_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv(names.PROJECT_ENV, name)
    return name


def delete_project_keys(url: str, project: str) -> int:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=b"*" + project.encode(), count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


@pytest.fixture
def redis_store(project: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point the online store at the real Redis; delete this project's keys afterwards."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    finally:
        client.close()
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    yield REDIS_URL
    delete_project_keys(REDIS_URL, project)


@pytest.fixture
def sqlite_store(project: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("REDIS_URL", raising=False)
    return "sqlite"


@pytest.fixture(params=["sqlite", "redis"])
def online_kind(request: pytest.FixtureRequest) -> str:
    """Run a test against both online stores."""
    fixture = "redis_store" if request.param == "redis" else "sqlite_store"
    request.getfixturevalue(fixture)
    return str(request.param)


@pytest.fixture
def tiny_dataset(layout: Layout) -> Path:
    """The synthetic ``tiny`` data set's feature tables, written where the store reads them."""
    from cascade.data.features import build_feature_tables, write_feature_tables
    from cascade.data.synthetic import generate

    ds = generate(scale="tiny", seed=7)
    directory = layout.dataset_dir(DATASET)
    write_feature_tables(build_feature_tables(ds), directory)
    return directory / schema.FEATURES_DIR


def write_tables(features_dir: Path, tables: dict[str, pd.DataFrame]) -> None:
    """Write hand-built feature tables (schema.py columns) as the parquet sources."""
    features_dir.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        out = df.copy()
        out[schema.EVENT_TIMESTAMP] = pd.to_datetime(out[schema.EVENT_TIMESTAMP], utc=True).astype(
            "datetime64[us, UTC]"
        )
        out.to_parquet(features_dir / name, index=False)
