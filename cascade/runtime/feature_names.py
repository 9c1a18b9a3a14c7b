"""Names of the Feast objects, defined once. Imports nothing heavy.

The gateway reads online features by these refs, the Two-Tower contract names its inputs after
them, and ``feature_repo/definitions.py`` builds the Feast objects from them.
"""

from __future__ import annotations

import os
import re

from cascade.runtime import schema

DEFAULT_PROJECT = "cascade"  # the prefix; the project is cascade_<data set> unless overridden
PROJECT_ENV = "CASCADE_FEAST_PROJECT"  # override to isolate tests (Redis keys include the project)

# Entities: name and join key. Both keys are int64 ids, kept as the data set has them.
USER_ENTITY = "user"
ITEM_ENTITY = "item"
USER_JOIN_KEY = schema.USER_ID
ITEM_JOIN_KEY = schema.ITEM_ID
EVENT_TIMESTAMP = schema.EVENT_TIMESTAMP

# Feature views (one per parquet file in the data set's features folder).
USER_PROFILE = "user_profile"
USER_ACTIVITY = "user_activity"
ITEM_FEATURES = "item_features"

VIEW_FILES = {
    USER_PROFILE: schema.USER_PROFILE_FILE,
    USER_ACTIVITY: schema.USER_ACTIVITY_FILE,
    ITEM_FEATURES: schema.ITEM_FEATURES_FILE,
}
VIEW_JOIN_KEYS = {
    USER_PROFILE: USER_JOIN_KEY,
    USER_ACTIVITY: USER_JOIN_KEY,
    ITEM_FEATURES: ITEM_JOIN_KEY,
}

# Feature names per view, in the order of the parquet columns.
USER_PROFILE_FEATURES = ("age_bucket", "country")
USER_ACTIVITY_FEATURES = ("interaction_count", "recent_items", "seen_items")
ITEM_FEATURE_NAMES = ("category", "price_bucket", "popularity", "age_days")
LIST_FEATURES = frozenset({"recent_items", "seen_items"})  # Array(Int64) in Feast

VIEW_FEATURES = {
    USER_PROFILE: USER_PROFILE_FEATURES,
    USER_ACTIVITY: USER_ACTIVITY_FEATURES,
    ITEM_FEATURES: ITEM_FEATURE_NAMES,
}

# Feature services: one per model.
TWO_TOWER_SERVICE = "two_tower_v1"
ALS_SERVICE = "als_v1"


def _refs(view: str) -> list[str]:
    return [f"{view}:{name}" for name in VIEW_FEATURES[view]]


# Fully qualified refs ("view:feature"), as get_online_features / get_historical_features take them.
USER_ONLINE_FEATURES = _refs(USER_PROFILE) + _refs(USER_ACTIVITY)
ITEM_FEATURE_REFS = _refs(ITEM_FEATURES)
TWO_TOWER_FEATURES = USER_ONLINE_FEATURES + ITEM_FEATURE_REFS
ALS_FEATURES = _refs(USER_ACTIVITY)

# TTLs in days. A point-in-time join takes the newest snapshot at or before the event and no
# older than the TTL, so a TTL must exceed the longest time a snapshot stays current:
# - user_profile: one row per user, stamped at signup, never restated -> 10 years.
# - user_activity: cascade.data.features writes a row only when a user's state changed since the
#   previous snapshot (weekly, 30 days at large scale). An inactive user's last row stays true
#   for as long as they are inactive, so the TTL must exceed the longest inactivity gap, not just
#   the snapshot interval -> 10 years (the synthetic window is 180 days; MovieLens spans years).
# - item_features: a row is written only when a value the item tower sees changes (release,
#   a new log2 bucket of popularity or age, and the final state; cascade.data.features), so a
#   row stays current until the next one, however long that takes (an old film's age bucket
#   lasts decades) -> 0: no TTL (Feast: "lives forever").
USER_PROFILE_TTL_DAYS = 3650
USER_ACTIVITY_TTL_DAYS = 3650
ITEM_FEATURES_TTL_DAYS = 0


def project_name(dataset: str) -> str:
    """The Feast project of ``dataset``: env ``CASCADE_FEAST_PROJECT``, else ``cascade_<dataset>``
    (letters, digits and ``_``). Redis keys include the project, so two data sets served from one
    Redis never overwrite each other's features (``SCALE=tiny make up`` beside a demo stack)."""
    override = os.environ.get(PROJECT_ENV)
    if override:
        return override
    return f"{DEFAULT_PROJECT}_{re.sub(r'[^A-Za-z0-9_]', '_', dataset)}"
