"""Training rows, one per interaction: profile and item features by Feast's point-in-time join,
the user's history at the exact event time from the interaction log.

- ``user_profile`` and ``item_features`` (the slowly changing features): Feast's point-in-time
  join (``cascade.features.training.training_frame`` over feature service ``two_tower_v1``,
  limited to ``JOINED_VIEWS``);
- the user's history (``interaction_count``, ``recent_items``, ``seen_items``):
  :class:`cascade.data.history.EventHistory` of the same interactions, i.e. the user's events
  strictly before the interaction with the rules of ``user_state``: what the online store holds
  for the user at that moment. Weekly ``user_activity`` snapshots gave most rows of bursty users
  an empty history (issue 14: 86% on a real rating log) while served users have full ones.

:func:`frame_from_interactions` builds the same rows without Feast (tests, in-memory runs):
profile and item columns from the users and items tables, popularity as the exact count of the
item's earlier interactions (Feast's ``item_features`` rows carry the same log2 bucket).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cascade.data.history import EventHistory, count_before, timestamps_us
from cascade.features.store import apply
from cascade.features.training import training_frame
from cascade.runtime import feature_names as names
from cascade.runtime.feature_store import open_store
from cascade.runtime.paths import Layout
from cascade.runtime.schema import ITEM_ID, TIMESTAMP, USER_ID

logger = logging.getLogger(__name__)

JOINED_VIEWS = (names.USER_PROFILE, names.ITEM_FEATURES)
# Above this share of training rows without any earlier interaction of their user, training
# warns: the user tower then learns mostly without history (see empty_history_warning).
EMPTY_HISTORY_WARN_SHARE = 0.5


@dataclass
class TrainingRows:
    """One row per interaction, in the order given: ``frame`` holds user_id, item_id,
    event_timestamp, age_bucket, country, category, price_bucket, popularity and age_days;
    ``history`` the user's history before each row."""

    frame: pd.DataFrame
    history: EventHistory

    def __len__(self) -> int:
        return len(self.frame)


def empty_history_warning(share: float, rows: int) -> str | None:
    """The warning for a training set with many empty histories; None at or below the threshold."""
    if share <= EMPTY_HISTORY_WARN_SHARE:
        return None
    return (
        f"{share:.0%} of the {rows:,} training rows have an empty user history (no earlier "
        "interaction of their user): the user tower learns to score from profile and item "
        "features alone, while served users arrive with their histories, so its quality can "
        "fall to the popularity level. Many users with a single interaction cause this."
    )


def report_empty_history(history: EventHistory) -> float:
    """Log the share of training rows with an empty history (a WARNING above the threshold)."""
    share = history.empty_share()
    logger.info("training rows with an empty user history: %.1f%%", 100 * share)
    warning = empty_history_warning(share, len(history))
    if warning:
        logger.warning("%s", warning)
    return share


def _entity_frame(interactions: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            USER_ID: interactions[USER_ID].to_numpy(np.int64),
            ITEM_ID: interactions[ITEM_ID].to_numpy(np.int64),
            names.EVENT_TIMESTAMP: interactions[TIMESTAMP].to_numpy(),
        }
    )


def feast_training_rows(
    *, layout: Layout, dataset: str, interactions: pd.DataFrame, engine: str
) -> TrainingRows:
    """Training rows for ``interactions``: Feast's point-in-time join of ``JOINED_VIEWS`` and
    the event-time history."""
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
    frame = training_frame(
        store,
        _entity_frame(interactions),
        feature_service=names.TWO_TOWER_SERVICE,
        engine=engine,  # type: ignore[arg-type]
        views=JOINED_VIEWS,
    )
    return TrainingRows(frame=frame, history=EventHistory.from_interactions(interactions))


def frame_from_interactions(
    interactions: pd.DataFrame,
    *,
    users: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
) -> TrainingRows:
    """Training rows computed from ``interactions`` and the side tables alone (no Feast)."""
    out = _entity_frame(interactions)
    ts = timestamps_us(interactions[TIMESTAMP])
    out["popularity"] = count_before(out[ITEM_ID].to_numpy(), ts)
    if users is not None:
        profile = users[[USER_ID, "age_bucket", "country"]].drop_duplicates(USER_ID)
        out = out.merge(profile, on=USER_ID, how="left")  # a left merge keeps the row order
    else:
        out["age_bucket"], out["country"] = -1, None
    if items is not None:
        columns = [ITEM_ID, "category", "price_bucket"]
        has_release = "release_date" in items.columns
        table = items[[*columns, "release_date"] if has_release else columns]
        out = out.merge(table.drop_duplicates(ITEM_ID), on=ITEM_ID, how="left")
        if has_release:
            release = pd.to_datetime(out.pop("release_date"), utc=True)
            age = (pd.to_datetime(out[names.EVENT_TIMESTAMP], utc=True) - release).dt
            out["age_days"] = (age.total_seconds() / 86_400.0).clip(lower=0.0).fillna(0.0)
        else:
            out["age_days"] = 0.0
    else:
        out["category"], out["price_bucket"], out["age_days"] = None, -1, 0.0
    return TrainingRows(frame=out, history=EventHistory.from_interactions(interactions))
