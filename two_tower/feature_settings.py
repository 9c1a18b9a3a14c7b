"""The feature settings a Two-Tower is trained with, recorded in its artifact and checked on load.

A tower learns from the features exactly as they were defined when it trained: which Feast
features it reads (the feature service's refs), how long the history lists are, and how a
training row's history is taken (event time). A tower trained under other settings would be fed
inputs it never saw (a 10-item ``recent_items`` where it learned 20, a renamed feature), so an
artifact records :func:`current` in ``metadata.json`` (``features``) and loading one whose
settings differ from this build's is refused by :func:`check` with what differs and the command
that fixes it. An artifact from before the settings were recorded has none: it loads with one
warning (its lengths still pass the shape checks of the load and the export).
"""

from __future__ import annotations

import logging
from typing import Any

from cascade.runtime.feature_names import TWO_TOWER_FEATURES, TWO_TOWER_SERVICE
from two_tower.contract import MAX_SEEN_ITEMS, RECENT_ITEMS_LEN

logger = logging.getLogger(__name__)

KEY = "features"  # the metadata.json key
USER_HISTORY = "event_time"  # cascade.data.history: strictly before each interaction


class FeatureSettingsMismatch(ValueError):
    """The artifact was trained with other feature settings (the CLI prints the message)."""


def current() -> dict[str, Any]:
    """This build's feature settings, JSON-safe."""
    return {
        "feature_service": TWO_TOWER_SERVICE,
        "features": list(TWO_TOWER_FEATURES),
        "recent_items_len": RECENT_ITEMS_LEN,
        "max_seen_items": MAX_SEEN_ITEMS,
        "user_history": USER_HISTORY,
    }


def check(meta: dict[str, Any], *, what: str) -> None:
    """Refuse an artifact (``what`` names it) whose recorded settings differ from :func:`current`."""
    recorded = meta.get(KEY)
    if recorded is None:
        logger.warning("%s records no feature settings (trained before they were recorded)", what)
        return
    want = current()
    if not isinstance(recorded, dict):
        raise FeatureSettingsMismatch(f"{what}: its feature settings are not readable")
    differs = [
        f"{name} {recorded.get(name)!r} (this build: {want[name]!r})"
        for name in want
        if recorded.get(name) != want[name]
    ]
    if differs:
        raise FeatureSettingsMismatch(
            f"{what} was trained with other feature settings: {'; '.join(differs)}. "
            "Retrain it with this build: `cascade train two-tower`"
        )
