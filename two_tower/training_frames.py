"""Point-in-time training rows, one per interaction, with the columns of feature service
``two_tower_v1``: read from the Feast offline store (what the pipeline trains on), or computed
directly from the interactions (tests and small in-memory runs).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from cascade.features.store import apply
from cascade.features.training import training_frame
from cascade.runtime import feature_names as names
from cascade.runtime.feature_store import open_store
from cascade.runtime.paths import Layout
from cascade.runtime.schema import ITEM_ID, MAX_SEEN_ITEMS, RECENT_ITEMS_LEN, TIMESTAMP, USER_ID

logger = logging.getLogger(__name__)


def feast_training_frame(
    *, layout: Layout, dataset: str, interactions: pd.DataFrame, engine: str
) -> pd.DataFrame:
    """Point-in-time rows of feature service ``two_tower_v1`` for each interaction."""
    store = open_store(layout=layout, dataset=dataset)
    try:
        store.get_feature_service(names.TWO_TOWER_SERVICE)
    except Exception:
        logger.info(
            "feature service %s not registered for %s: applying definitions",
            names.TWO_TOWER_SERVICE,
            dataset,
        )
        apply(layout=layout, dataset=dataset)
        store = open_store(layout=layout, dataset=dataset)
    entity = pd.DataFrame(
        {
            USER_ID: interactions[USER_ID].to_numpy(np.int64),
            ITEM_ID: interactions[ITEM_ID].to_numpy(np.int64),
            names.EVENT_TIMESTAMP: interactions[TIMESTAMP].to_numpy(),
        }
    )
    return training_frame(store, entity, feature_service=names.TWO_TOWER_SERVICE, engine=engine)  # type: ignore[arg-type]


def frame_from_interactions(
    interactions: pd.DataFrame,
    *,
    users: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Training rows computed directly from ``interactions``, exactly as of each event.

    For tests and small in-memory runs (a Python loop over rows): the pipeline itself reads the
    point-in-time rows from Feast. User state = every earlier interaction of the user (same
    rules as ``user_state``), item popularity = earlier interactions with the item.
    """
    df = interactions.sort_values([TIMESTAMP, USER_ID, ITEM_ID], kind="mergesort").reset_index(
        drop=True
    )
    history: dict[int, list[int]] = {}
    popularity: dict[int, int] = {}
    counts, recent, seen, pop = [], [], [], []
    for user, item in zip(
        df[USER_ID].to_numpy(np.int64), df[ITEM_ID].to_numpy(np.int64), strict=True
    ):
        past = history.setdefault(int(user), [])
        counts.append(len(past))
        newest = past[::-1]
        recent.append(np.asarray(newest[:RECENT_ITEMS_LEN], dtype=np.int64))
        seen.append(np.asarray(list(dict.fromkeys(newest))[:MAX_SEEN_ITEMS], dtype=np.int64))
        pop.append(popularity.get(int(item), 0))
        past.append(int(item))
        popularity[int(item)] = popularity.get(int(item), 0) + 1
    out = df[[USER_ID, ITEM_ID, TIMESTAMP]].copy()
    out["interaction_count"], out["recent_items"], out["seen_items"], out["popularity"] = (
        counts,
        recent,
        seen,
        pop,
    )
    if users is not None:
        out = out.merge(users[[USER_ID, "age_bucket", "country"]], on=USER_ID, how="left")
    else:
        out["age_bucket"], out["country"] = -1, None
    if items is not None:
        out = out.merge(items[[ITEM_ID, "category", "price_bucket"]], on=ITEM_ID, how="left")
    else:
        out["category"], out["price_bucket"] = None, -1
    out["age_days"] = 0.0
    return out
