"""The ``uniform`` profile: independent draws at uniform times (the generator before sessions).

Each interaction picks one of the user's clusters by weight, then an item within it by power-law
weight (one ``searchsorted`` on per-cluster cumulative weights), or with probability ``noise`` an
item by global popularity. Timestamps are uniform between max(window start, signup, release) and
the window end. Users still short of their activity after repeats are dropped get a few top-up
rounds; the result is thinned at random to the scale's count. Kept draw for draw as it was, so a
seed gives the same rows as before the profiles existed.
"""

from __future__ import annotations

import logging

import numpy as np

from cascade.data.synthetic.world import (
    WINDOW_END_S,
    WINDOW_START_S,
    Scale,
    World,
    activity,
    seconds,
)

logger = logging.getLogger(__name__)

_ROUNDS = 4


class _Sampler:
    """Draws (item, taste slot, is-noise) for a batch of interactions of given users."""

    def __init__(
        self,
        sc: Scale,
        item_cluster: np.ndarray,
        item_w: np.ndarray,
        taste: np.ndarray,
        taste_cum: np.ndarray,
    ) -> None:
        self.sc, self.taste, self.taste_cum = sc, taste, taste_cum
        # Items sorted by cluster; key = cluster + cumulative weight within the cluster (0, 1].
        self.by_cluster = np.argsort(item_cluster, kind="stable").astype(np.int32)
        cl = item_cluster[self.by_cluster]
        w = item_w[self.by_cluster]
        total = np.bincount(cl, weights=w, minlength=sc.clusters)
        start = np.r_[0.0, np.cumsum(total)[:-1]]
        self.keys = cl + (np.cumsum(w) - start[cl]) / total[cl]
        self.global_cum = np.cumsum(item_w) / item_w.sum()

    def sample(
        self, rng: np.random.Generator, user: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(user)
        u = rng.random(n, dtype=np.float32)
        slot = (u > self.taste_cum[user, 0]).astype(np.int8)
        slot += (u > self.taste_cum[user, 1]).astype(np.int8)
        q = self.taste[user, slot] + rng.random(n)
        pos = np.minimum(np.searchsorted(self.keys, q, side="right"), len(self.keys) - 1)
        item = self.by_cluster[pos]
        noise = rng.random(n, dtype=np.float32) < self.sc.noise
        g = np.searchsorted(self.global_cum, rng.random(int(noise.sum())), side="right")
        item[noise] = np.minimum(g, self.sc.items - 1)
        return item, slot, noise


def _timestamps(
    rng: np.random.Generator, signup_s: np.ndarray, release_s: np.ndarray
) -> np.ndarray:
    """Uniform between the latest of window start, signup and release, and the window end."""
    lo = np.maximum(np.maximum(signup_s, release_s), WINDOW_START_S)
    out: np.ndarray = lo + (rng.random(len(lo)) * (WINDOW_END_S - lo)).astype(np.int64)
    return out


def _concat(
    parts: list[tuple[np.ndarray, ...]], new: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, ...]:
    if not parts:
        return new
    return tuple(np.concatenate([p[i] for p in parts] + [new[i]]) for i in range(len(new)))


_TS_BITS = 25  # seconds within the window (180 days < 2**24 s) fit below the pair id


def _dedupe(
    user: np.ndarray, item: np.ndarray, ts: np.ndarray, rating: np.ndarray, *, n_items: int
) -> tuple[np.ndarray, ...]:
    """Rows in time order with repeated (user, item) pairs dropped, keeping the earliest."""
    pair = user.astype(np.int64) * n_items + item
    offset = ts - WINDOW_START_S
    if int(pair.max()) < 2 ** (62 - _TS_BITS):
        # One int64 sort on (pair, time) instead of two stable sorts: about twice as fast.
        order = np.argsort((pair << _TS_BITS) | offset)
    else:
        order = np.lexsort((offset, pair))
    p = pair[order]
    first = order[np.r_[True, p[1:] != p[:-1]]]
    keep = first[np.argsort(ts[first], kind="stable")]
    return user[keep], item[keep], ts[keep], rating[keep]


def uniform_log(
    rng: np.random.Generator, sc: Scale, world: World
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, unix seconds, rating) of the uniform profile, in time order."""
    sampler = _Sampler(sc, world.item_cluster, world.item_w, world.taste, world.taste_cum)
    signup_s = seconds(world.users["signup_date"])
    release_s = seconds(world.items["release_date"])
    want = activity(rng, sc, int(sc.interactions * 1.1))
    have = np.zeros(sc.users, dtype=np.int64)
    parts: list[tuple[np.ndarray, ...]] = []
    # Repeats are dropped, so top up the users still short of their activity, a few rounds.
    for _ in range(_ROUNDS):
        need = np.ceil(np.maximum(want - have, 0) * 1.3).astype(np.int64)
        if need.sum() == 0:
            break
        user = np.repeat(np.arange(sc.users, dtype=np.int32), need)
        item, slot, noise = sampler.sample(rng, user)
        ts = _timestamps(rng, signup_s[user], release_s[item])
        base = np.where(noise, 2.8, np.where(slot == 0, 4.2, 3.6)).astype(np.float32)
        noise_r = rng.normal(0.0, 0.8, size=len(user)).astype(np.float32)
        rating = np.clip(np.rint(base + noise_r), 1, 5).astype(np.float32)
        parts.append(_dedupe(*_concat(parts, (user, item, ts, rating)), n_items=sc.items))
        parts = parts[-1:]
        have = np.bincount(parts[0][0], minlength=sc.users)
        if len(parts[0][0]) >= sc.interactions:
            break
    user, item, ts, rating = parts[0]
    keep = np.ones(len(user), dtype=bool)
    if len(user) > sc.interactions:
        keep[rng.choice(len(user), size=len(user) - sc.interactions, replace=False)] = False
    else:
        logger.info("generated %d interactions (asked %d)", len(keep), sc.interactions)
    return user[keep], item[keep], ts[keep], rating[keep]
