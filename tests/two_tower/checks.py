"""Assertions shared by the Two-Tower tests."""

from __future__ import annotations


def assert_ranks_first(trained, interactions, item: int) -> None:
    """Every user (up to 5) who has not seen ``item`` gets it first from the offline
    recommender built on ``trained``."""
    import numpy as np

    from cascade.runtime.schema import ITEM_ID, USER_ID
    from two_tower.recommender import TwoTowerRecommender

    rec = TwoTowerRecommender.from_trained(trained, interactions=interactions)
    seen = set(interactions.loc[interactions[ITEM_ID] == item, USER_ID])
    users = np.array([u for u in np.unique(interactions[USER_ID]) if u not in seen][:5])
    ids, _ = rec.recommend(users, k=5)
    assert len(users) and (ids[:, 0] == item).all()
