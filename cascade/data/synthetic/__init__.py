"""Synthetic interactions with planted structure, deterministic by seed, fully vectorised.

What every profile shares (:mod:`.world`), so that a personalized model measurably beats
popularity:

- Items fall into ``clusters`` taste clusters; an item's category follows its cluster (85%).
  Item weights follow a power law (Zipf over a random ranking), giving a long-tailed catalogue;
  80% of items are released before the 180-day window, the rest inside it.
- Each user likes three clusters with Dirichlet weights. The strongest one is drawn from a prior
  that depends on the user's (age_bucket, country) group, so side features carry signal too.
- Per-user activity is log-normal (heavy-tailed). Ratings are 1 to 5, higher for the user's main
  cluster, lower outside their taste. Nobody interacts before signing up or before the item's
  release. Repeated (user, item) pairs are dropped, keeping the earliest, so a time split never
  puts an item in a user's test set that is already in their train set.

How interactions are drawn is the profile (:class:`~cascade.data.profiles.Profile`):

- ``sessions`` (the default, :mod:`.sessions` and :mod:`.catalogue`): what real logs have. Most
  users do everything in a burst on one day, the rest come back in sessions over weeks or
  months; within a session the next item is often one of a few "next" neighbours of the
  previous item in its cluster; item popularity drifts (new releases are hot for a few weeks,
  some clusters trend up, others fade).
- ``uniform`` (:mod:`.uniform`): independent draws from the user's taste at uniform times: the
  generator as it was before profiles, draw for draw.

One seed gives the same users and items for every profile. Everything is whole-array numpy (no
per-user Python loop).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from cascade.data.dataset import Dataset, conform_dataset
from cascade.data.profiles import DEFAULT_PROFILE, Profile, parse_profile
from cascade.data.synthetic.sessions import session_log
from cascade.data.synthetic.uniform import uniform_log
from cascade.data.synthetic.world import (
    CATEGORIES,
    COUNTRIES,
    SCALES,
    WINDOW_DAYS,
    WINDOW_START,
    Scale,
    build_world,
)

__all__ = [
    "CATEGORIES",
    "COUNTRIES",
    "DEFAULT_PROFILE",
    "SCALES",
    "WINDOW_DAYS",
    "WINDOW_START",
    "Profile",
    "Scale",
    "generate",
]

logger = logging.getLogger(__name__)


def generate(*, scale: str, seed: int = 42, profile: Profile | str = DEFAULT_PROFILE) -> Dataset:
    """A synthetic data set at ``scale`` (tiny, demo or large), the same for the same seed and
    profile. ValueError names the choices for an unknown scale or profile."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    kind = parse_profile(profile)
    sc = SCALES[scale]
    rng = np.random.default_rng(seed)
    world = build_world(rng, sc)
    if kind is Profile.UNIFORM:
        user, item, ts, rating = uniform_log(rng, sc, world)
    else:
        user, item, ts, rating = session_log(rng, sc, world)
    interactions = pd.DataFrame(
        {
            "user_id": user.astype(np.int64),
            "item_id": item.astype(np.int64),
            "timestamp": pd.to_datetime(ts.astype("datetime64[s]")).tz_localize("UTC"),
            "rating": rating.astype(np.float32),
        }
    )
    ds = Dataset(
        name=scale,
        interactions=interactions,
        users=world.users,
        items=world.items,
        source=f"synthetic:{scale}",
        scale=scale,
        seed=seed,
        extra={"profile": kind.value},
    )
    logger.info(
        "generated %s (%s): %d users, %d items, %d interactions",
        scale, kind.value, sc.users, sc.items, len(interactions),
    )  # fmt: skip
    return conform_dataset(ds)
