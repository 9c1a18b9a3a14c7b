"""The parquet layout of a data set: column names and dtypes shared by every producer and reader.

Imports nothing heavy, so services and tests can name columns without pulling in pandas.

A data set lives in one folder (``cascade.runtime.paths.Layout.dataset_dir``)::

    interactions.parquet   user_id int64, item_id int64, timestamp timestamp[us, UTC], rating float32
    users.parquet          user_id int64, age_bucket int64, country string, signup_date timestamp[us, UTC]
    items.parquet          item_id int64, category string, price_bucket int64, release_date timestamp[us, UTC]
    features/              Feast offline sources (see FEATURE_* below), each with EVENT_TIMESTAMP
    manifest.json          source, scale, seed, row counts, sha256 of interactions.parquet

Ids are the data set's own integer ids (MovieLens ids, CSV ids, synthetic 0..n-1), kept as they
are end to end, so a recommendation CSV can be scored by another tool.
"""

from __future__ import annotations

USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"
RATING = "rating"

INTERACTIONS_FILE = "interactions.parquet"
USERS_FILE = "users.parquet"
ITEMS_FILE = "items.parquet"
MANIFEST_FILE = "manifest.json"
FEATURES_DIR = "features"

INTERACTION_COLUMNS = (USER_ID, ITEM_ID, TIMESTAMP, RATING)
USER_COLUMNS = (USER_ID, "age_bucket", "country", "signup_date")
ITEM_COLUMNS = (ITEM_ID, "category", "price_bucket", "release_date")

# Feast offline sources written by cascade.data.features. Every row is a snapshot of an entity's
# features as of EVENT_TIMESTAMP, computed only from interactions strictly before that moment.
EVENT_TIMESTAMP = "event_timestamp"
USER_PROFILE_FILE = "user_profile.parquet"  # user_id, event_timestamp, age_bucket, country
USER_ACTIVITY_FILE = "user_activity.parquet"  # user_id, event_timestamp, interaction_count,
#                                               recent_items (list<int64>, newest first),
#                                               seen_items (list<int64>, capped at MAX_SEEN_ITEMS)
ITEM_FEATURES_FILE = "item_features.parquet"  # item_id, event_timestamp, category, price_bucket,
#                                               popularity (interactions before the snapshot),
#                                               age_days

RECENT_ITEMS_LEN = 20
MAX_SEEN_ITEMS = 500
