"""Apply, materialize and read back, on real SQLite and real Redis online stores."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cascade.features import store
from cascade.runtime import feature_names as names
from cascade.runtime import feature_online as online
from cascade.runtime import feature_store, schema
from cascade.runtime.paths import Layout
from tests.features.conftest import DATASET, REDIS_URL, delete_project_keys, write_tables

pytestmark = pytest.mark.integration


def _latest(features_dir: Path, view: str) -> pd.DataFrame:
    """Newest offline row per entity: what serving must see after a full materialization."""
    df = pd.read_parquet(features_dir / names.VIEW_FILES[view])
    key = names.VIEW_JOIN_KEYS[view]
    return df.sort_values(schema.EVENT_TIMESTAMP).groupby(key).tail(1).set_index(key)


def test_redis_connection_string() -> None:
    assert (
        feature_store.redis_connection_string("redis://127.0.0.1:6379/0") == "127.0.0.1:6379,db=0"
    )
    assert (
        feature_store.redis_connection_string("redis://:s3cret@cache:6380/2")
        == "cache:6380,db=2,password=s3cret"
    )
    assert feature_store.redis_connection_string("rediss://cache") == "cache:6379,db=0,ssl=true"
    with pytest.raises(feature_store.FeatureStoreError):
        feature_store.redis_connection_string("http://cache:6379")


def test_config_follows_environment(
    layout: Layout, project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    config = feature_store.store_config(layout=layout, dataset="x")
    assert config.project == project
    assert config.online_store.type == "sqlite"
    assert config.online_store.path == str(layout.feast_dir / "x" / "online.db")
    assert config.registry.path == str(layout.feast_dir / "x" / "registry.db")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/3")
    config = feature_store.store_config(layout=layout, dataset="x")
    assert config.online_store.type == "redis"
    assert config.online_store.connection_string == "127.0.0.1:6379,db=3"
    config = feature_store.store_config(layout=layout, dataset="x", redis_timeout_s=0.05)
    assert config.online_store.connection_string.endswith(
        ",socket_timeout=0.05,socket_connect_timeout=0.05"
    )
    monkeypatch.delenv(names.PROJECT_ENV)
    assert feature_store.store_config(layout=layout, dataset="x").project == "cascade_x"
    assert names.project_name("a-b.c") == "cascade_a_b_c"


@pytest.mark.parametrize("engine", ["feast", "direct"])
def test_skew_online_equals_latest_offline(
    online_kind: str, engine: str, layout: Layout, tiny_dataset: Path
) -> None:
    """No training/serving skew: after materialization, online features of sampled users equal
    their newest offline rows, lists included; an unknown user comes back all None."""
    store.apply(layout=layout, dataset=DATASET)
    report = store.materialize(layout=layout, dataset=DATASET, engine=engine)
    assert report.online_store == online_kind
    assert {v.engine for v in report.views} == {engine}
    profile = _latest(tiny_dataset, names.USER_PROFILE)
    activity = _latest(tiny_dataset, names.USER_ACTIVITY)
    assert {v.view: v.rows for v in report.views}[names.USER_ACTIVITY] == len(activity)

    rng = np.random.default_rng(0)
    users = [int(u) for u in rng.choice(activity.index.to_numpy(), size=25, replace=False)]
    unknown = int(profile.index.max()) + 1000
    fs = feature_store.open_store(layout=layout, dataset=DATASET, redis_timeout_s=2.0)
    got = online.read_user_features(fs, [*users, unknown])

    async def read_async() -> dict[int, dict]:
        try:
            return await online.read_user_features_async(fs, [*users, unknown])
        finally:
            await online.aclose(fs)

    got_async = asyncio.run(read_async())
    assert got == got_async
    for u in users:
        assert got[u]["age_bucket"] == profile.loc[u, "age_bucket"]
        assert got[u]["country"] == profile.loc[u, "country"]
        assert got[u]["interaction_count"] == activity.loc[u, "interaction_count"]
        assert got[u]["recent_items"] == [int(x) for x in activity.loc[u, "recent_items"]]
        assert got[u]["seen_items"] == [int(x) for x in activity.loc[u, "seen_items"]]
    assert got[unknown] == {name.split(":")[1]: None for name in names.USER_ONLINE_FEATURES}

    items = _latest(tiny_dataset, names.ITEM_FEATURES)
    item = int(items.index[0])
    row = fs.get_online_features(
        features=names.ITEM_FEATURE_REFS, entity_rows=[{"item_id": item}]
    ).to_dict()
    assert row["category"] == [items.loc[item, "category"]]
    assert row["popularity"] == [items.loc[item, "popularity"]]
    assert row["age_days"][0] == pytest.approx(float(items.loc[item, "age_days"]), rel=1e-6)


def _activity(users: list[int], stamp: datetime, count: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            schema.USER_ID: users,
            schema.EVENT_TIMESTAMP: stamp,
            "interaction_count": count,
            "recent_items": [[count, u] for u in users],
            "seen_items": [[u] for u in users],
        }
    )


def _small_tables(activity: pd.DataFrame) -> dict[str, pd.DataFrame]:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    users = sorted(activity[schema.USER_ID].unique())
    return {
        schema.USER_PROFILE_FILE: pd.DataFrame(
            {schema.USER_ID: users, schema.EVENT_TIMESTAMP: t0, "age_bucket": 1, "country": "US"}
        ),
        schema.USER_ACTIVITY_FILE: activity,
        schema.ITEM_FEATURES_FILE: pd.DataFrame(
            {
                schema.ITEM_ID: [0, 1],
                schema.EVENT_TIMESTAMP: t0,
                "category": ["a", "b"],
                "price_bucket": [1, 2],
                "popularity": [3, 4],
                "age_days": np.array([1.5, 2.5], dtype=np.float32),
            }
        ),
    }


@pytest.mark.parametrize("engine", ["feast", "direct"])
def test_incremental_moves_only_new_rows(
    online_kind: str, engine: str, layout: Layout, project: str
) -> None:
    folder = layout.dataset_dir(DATASET) / schema.FEATURES_DIR
    t1 = datetime(2026, 2, 1, tzinfo=UTC)
    t2 = t1 + timedelta(days=7)
    first = _activity([1, 2, 3, 4], t1, 10)
    write_tables(folder, _small_tables(first))
    store.apply(layout=layout, dataset=DATASET)
    report = store.materialize(
        layout=layout, dataset=DATASET, engine=engine, end=t1 + timedelta(hours=1)
    )
    assert {v.view: v.rows for v in report.views} == {
        names.USER_PROFILE: 4,
        names.USER_ACTIVITY: 4,
        names.ITEM_FEATURES: 2,
    }

    # A new snapshot changes users 2 and 3 only.
    write_tables(
        folder, _small_tables(pd.concat([first, _activity([2, 3], t2, 20)], ignore_index=True))
    )
    report = store.materialize(
        layout=layout, dataset=DATASET, engine=engine, end=t2 + timedelta(hours=1)
    )
    assert report.rows == 2
    assert {v.view: v.start for v in report.views}[names.USER_ACTIVITY] == t1 + timedelta(hours=1)
    fs = feature_store.open_store(layout=layout, dataset=DATASET)
    got = online.read_user_features(fs, [1, 2])
    assert got[1]["interaction_count"] == 10
    assert got[2]["interaction_count"] == 20
    assert got[2]["recent_items"] == [20, 2]

    # Nothing new: nothing moves.
    assert (
        store.materialize(
            layout=layout, dataset=DATASET, engine=engine, end=t2 + timedelta(hours=2)
        ).rows
        == 0
    )

    if online_kind == "redis":
        # An emptied Redis: incremental restores nothing, --full restores everything.
        delete_project_keys(REDIS_URL, project)
        assert online.read_user_features(fs, [2])[2]["interaction_count"] is None
        report = store.materialize(
            layout=layout, dataset=DATASET, engine=engine, end=t2 + timedelta(hours=3), full=True
        )
        assert report.full and report.rows == 4 + 4 + 2
        assert online.read_user_features(fs, [2])[2]["interaction_count"] == 20


def test_missing_dataset_is_a_clear_error(sqlite_store: str, layout: Layout) -> None:
    with pytest.raises(feature_store.FeatureStoreError, match="run `cascade data` first"):
        store.apply(layout=layout, dataset="nope")
    with pytest.raises(feature_store.FeatureStoreError, match="no feature files"):
        store.materialize(layout=layout, dataset="nope")
