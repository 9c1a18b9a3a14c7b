"""The planted world both profiles share: scales, users with taste, items with clusters, activity.

Every draw here happens in the same order for every profile, so one seed gives the same users and
items tables whatever the profile; only the interactions differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

CATEGORIES = (
    "action", "comedy", "drama", "documentary", "family", "horror",
    "music", "news", "romance", "scifi", "sports", "thriller",
)  # fmt: skip
COUNTRIES = ("US", "IN", "BR", "GB", "DE", "FR", "JP", "MX", "NG", "ID")
_COUNTRY_P = np.array([0.3, 0.15, 0.1, 0.08, 0.08, 0.07, 0.07, 0.06, 0.05, 0.04])
_AGE_P = np.array([0.05, 0.2, 0.28, 0.2, 0.12, 0.09, 0.06])  # 7 buckets: <18 .. 56+
DAY_S = 86_400
WINDOW_START = np.datetime64("2026-01-01T00:00:00", "s")
WINDOW_DAYS = 180
WINDOW_START_S = int(WINDOW_START.astype(np.int64))
WINDOW_END_S = WINDOW_START_S + WINDOW_DAYS * DAY_S


@dataclass(frozen=True)
class Scale:
    """Size of a synthetic data set."""

    users: int
    items: int
    interactions: int
    clusters: int
    zipf: float = 1.0
    noise: float = 0.15
    activity_sigma: float = 1.0
    max_user_share: float = 0.25  # the most of the catalogue one user may touch


SCALES: dict[str, Scale] = {
    "tiny": Scale(
        users=300, items=200, interactions=10_000, clusters=5, zipf=0.8, max_user_share=0.5
    ),
    "demo": Scale(users=20_000, items=3_000, interactions=900_000, clusters=24),
    "large": Scale(users=1_000_000, items=100_000, interactions=20_000_000, clusters=100),
}


@dataclass(frozen=True)
class World:
    """The hidden structure the interactions are drawn from (never written to disk)."""

    users: pd.DataFrame
    items: pd.DataFrame
    cluster_p: np.ndarray  # overall cluster popularity, (clusters,)
    item_cluster: np.ndarray  # (items,) int32
    item_w: np.ndarray  # (items,) static power-law weight
    taste: np.ndarray  # (users, 3) int32 clusters, the main one first
    taste_cum: np.ndarray  # (users, 3) float32 cumulative taste weights


def _categorical_by_group(
    rng: np.random.Generator, cum: np.ndarray, groups: np.ndarray
) -> np.ndarray:
    """Draw one index per row from row ``groups`` of a (groups x k) cumulative table."""
    n_groups, k = cum.shape
    keys = (np.arange(n_groups)[:, None] + cum).ravel()
    q = groups + rng.random(len(groups))
    idx = np.searchsorted(keys, q, side="right")
    out: np.ndarray = np.minimum(idx - groups * k, k - 1).astype(np.int32)
    return out


def _users(
    rng: np.random.Generator, sc: Scale, cluster_p: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    n = sc.users
    age = rng.choice(len(_AGE_P), size=n, p=_AGE_P).astype(np.int64)
    country = rng.choice(len(COUNTRIES), size=n, p=_COUNTRY_P)
    # Signup: 70% in the two years before the window, the rest inside it (not in its last 2 weeks).
    before = rng.random(n) < 0.7
    offset = np.where(
        before,
        -rng.integers(1, 730 * DAY_S, size=n),
        rng.integers(0, (WINDOW_DAYS - 14) * DAY_S, size=n),
    )
    signup = WINDOW_START + offset.astype("timedelta64[s]")
    # Taste: the main cluster comes from the (age, country) group's prior, two more from overall
    # cluster popularity; Dirichlet weights favour the main one.
    group = age * len(COUNTRIES) + country
    n_groups = len(_AGE_P) * len(COUNTRIES)
    prior = rng.dirichlet(np.full(sc.clusters, 0.3), size=n_groups) * 0.7 + cluster_p * 0.3
    main = _categorical_by_group(rng, np.cumsum(prior, axis=1), group)
    others = rng.choice(sc.clusters, size=(n, 2), p=cluster_p).astype(np.int32)
    taste = np.column_stack([main, others])
    weights = rng.dirichlet([3.0, 1.5, 1.0], size=n).astype(np.float32)
    users = pd.DataFrame(
        {
            "user_id": np.arange(n, dtype=np.int64),
            "age_bucket": age,
            "country": np.asarray(COUNTRIES, dtype=object)[country],
            "signup_date": pd.to_datetime(signup).tz_localize("UTC"),
        }
    )
    return users, taste, np.cumsum(weights, axis=1)


def _items(rng: np.random.Generator, sc: Scale) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    n = sc.items
    cluster = rng.permutation(np.arange(n) % sc.clusters).astype(np.int32)
    rank = rng.permutation(n)
    weight = (rank + 1.0) ** -sc.zipf
    same = rng.random(n) < 0.85
    cat_idx = np.where(same, cluster % len(CATEGORIES), rng.integers(0, len(CATEGORIES), size=n))
    price = np.where(rng.random(n) < 0.5, (cluster * 7) % 5, rng.integers(0, 5, size=n))
    before = rng.random(n) < 0.8
    offset = np.where(
        before,
        -rng.integers(1, 3 * 365 * DAY_S, size=n),
        rng.integers(0, (WINDOW_DAYS - 14) * DAY_S, size=n),
    )
    release = WINDOW_START + offset.astype("timedelta64[s]")
    items = pd.DataFrame(
        {
            "item_id": np.arange(n, dtype=np.int64),
            "category": np.asarray(CATEGORIES, dtype=object)[cat_idx],
            "price_bucket": price.astype(np.int64),
            "release_date": pd.to_datetime(release).tz_localize("UTC"),
        }
    )
    return items, cluster, weight


def build_world(rng: np.random.Generator, sc: Scale) -> World:
    """Clusters, items and users with taste: the first draws of every profile, in this order."""
    # Overall cluster popularity: mildly skewed.
    cluster_p = rng.dirichlet(np.full(sc.clusters, 2.0))
    items, item_cluster, item_w = _items(rng, sc)
    users, taste, taste_cum = _users(rng, sc, cluster_p)
    return World(users, items, cluster_p, item_cluster, item_w, taste, taste_cum)


def activity(rng: np.random.Generator, sc: Scale, total: int) -> np.ndarray:
    """Interactions wanted per user: log-normal (heavy-tailed), at least 2, at most the cap."""
    raw = rng.lognormal(0.0, sc.activity_sigma, size=sc.users)
    counts = np.maximum(2, np.round(raw / raw.sum() * total)).astype(np.int64)
    cap = max(5, int(sc.items * sc.max_user_share))
    out: np.ndarray = np.minimum(counts, cap)
    return out


def seconds(column: pd.Series) -> np.ndarray:
    """A timestamp column as int64 unix seconds."""
    out: np.ndarray = column.to_numpy("datetime64[s]").astype(np.int64)
    return out
