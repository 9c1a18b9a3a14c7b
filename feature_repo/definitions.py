"""Cascade's Feast objects: entities, feature views over parquet sources, feature services.

``definitions(features_dir)`` builds them for one data set's features folder; ``cascade features
apply`` calls it. The module-level objects below exist for the plain ``feast`` CLI run in this
folder (``feast apply`` imports every .py here and registers what it finds at module level):
they read the folder from env ``CASCADE_FEATURES_DIR`` (default: the ``demo`` data set under
``CASCADE_HOME``). Names come from ``cascade.runtime.feature_names``.

TTLs (see ``names`` for the reasoning): a point-in-time join takes the newest snapshot at or
before the event and no older than the TTL, so each TTL exceeds the time a snapshot stays
current: profile and activity 10 years (activity rows are written only when a user's state
changes), items none (``ttl=0``: an item row is written only when a value changes, and stays
current until the next one).

``age_days`` is Float32 because ``cascade.data.features`` writes it as float32 (fractional days).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float32, Int64, String

from cascade.runtime import feature_names as n


def definitions(features_dir: Path) -> list[object]:
    """Build every Feast object for the parquet sources in ``features_dir``."""
    features_dir = Path(features_dir).resolve()
    user = Entity(
        name=n.USER_ENTITY,
        join_keys=[n.USER_JOIN_KEY],
        value_type=ValueType.INT64,
        description="A user, by the data set's own user id.",
    )
    item = Entity(
        name=n.ITEM_ENTITY,
        join_keys=[n.ITEM_JOIN_KEY],
        value_type=ValueType.INT64,
        description="An item, by the data set's own item id.",
    )

    def source(view: str) -> FileSource:
        return FileSource(
            name=f"{view}_source",
            path=str(features_dir / n.VIEW_FILES[view]),
            timestamp_field=n.EVENT_TIMESTAMP,
        )

    user_profile = FeatureView(
        name=n.USER_PROFILE,
        entities=[user],
        ttl=timedelta(days=n.USER_PROFILE_TTL_DAYS),
        schema=[Field(name="age_bucket", dtype=Int64), Field(name="country", dtype=String)],
        source=source(n.USER_PROFILE),
        online=True,
        description="Static user profile.",
    )
    user_activity = FeatureView(
        name=n.USER_ACTIVITY,
        entities=[user],
        ttl=timedelta(days=n.USER_ACTIVITY_TTL_DAYS),
        schema=[
            Field(name="interaction_count", dtype=Int64),
            Field(name="recent_items", dtype=Array(Int64)),
            Field(name="seen_items", dtype=Array(Int64)),
        ],
        source=source(n.USER_ACTIVITY),
        online=True,
        description="Activity snapshots, from interactions strictly before each snapshot.",
    )
    item_features = FeatureView(
        name=n.ITEM_FEATURES,
        entities=[item],
        ttl=timedelta(days=n.ITEM_FEATURES_TTL_DAYS),
        schema=[
            Field(name="category", dtype=String),
            Field(name="price_bucket", dtype=Int64),
            Field(name="popularity", dtype=Int64),
            Field(name="age_days", dtype=Float32),
        ],
        source=source(n.ITEM_FEATURES),
        online=True,
        description="Item attributes, popularity and age; a row when a bucketed value changes.",
    )
    two_tower = FeatureService(
        name=n.TWO_TOWER_SERVICE,
        features=[user_profile, user_activity, item_features],
        description="Inputs of the Two-Tower model (user and item towers).",
    )
    als = FeatureService(
        name=n.ALS_SERVICE,
        features=[user_activity],
        description="What the ALS fallback reads (seen items to exclude).",
    )
    return [user, item, user_profile, user_activity, item_features, two_tower, als]


def _default_features_dir() -> Path:
    env = os.environ.get("CASCADE_FEATURES_DIR")
    if env:
        return Path(env)
    home = Path(os.environ.get("CASCADE_HOME", "var"))
    return home / "datasets" / os.environ.get("CASCADE_DATASET", "demo") / "features"


# Module-level objects for the plain `feast` CLI (see the module docstring).
(
    user,
    item,
    user_profile,
    user_activity,
    item_features,
    two_tower_v1,
    als_v1,
) = definitions(_default_features_dir())
