"""What the ``sessions`` profile draws items from: popularity that moves, and item-to-item steps.

- **Drift.** The window is cut into ``epochs`` equal periods. In epoch e an item's weight is its
  static power-law weight, times a release boost ``1 + boost * exp(-age / decay)`` (new items are
  hot for a few weeks, then settle), times its cluster's trend ``exp(slope_c * x_e)`` (x runs
  from -0.5 to 0.5 over the window; slopes are normal, so some clusters rise and some fade), and
  zero before the item's release. One ``searchsorted`` over (epoch, cluster, cumulative weight)
  keys draws an item of a given cluster at a given epoch; another over (epoch, cumulative weight)
  draws by global popularity at that epoch.
- **Transitions.** Every item has ``len(next_p)`` "next" neighbours in its own cluster (drawn
  once, by the static weight to the power ``next_power``, 0.75: popular items are likelier
  neighbours, but not only the cluster's hits).
  Within a session, with probability ``p_next`` the next item is a neighbour of the previous
  item (of the one before it with probability ``p_second_last``), the k-th neighbour with
  probability ``next_p[k]``; a neighbour not yet released at that time, or no previous item,
  means a fresh draw: a taste cluster (weighted by the user's taste and the cluster's trend at
  that epoch) and an item in it, or with probability ``noise`` an item by global popularity.

Everything is whole-array numpy: a step draws the next item of every active session at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cascade.data.synthetic.world import (
    DAY_S,
    WINDOW_DAYS,
    WINDOW_START_S,
    Scale,
    World,
    seconds,
)


@dataclass(frozen=True)
class SessionModel:
    """The knobs of the ``sessions`` profile (the same at every scale)."""

    # sessions (cascade.data.synthetic.sessions)
    one_day_share: float = 0.7  # users whose visits all fall on one day
    day_extra_sessions: float = 0.5  # Poisson mean of further same-day sessions
    max_session_len: int = 150  # more activity than this spreads over more sessions
    per_session: float = 10.0  # returning users: 2 + Poisson(activity / this) sessions
    max_sessions: int = 100
    gap_median_s: float = 40.0  # between two interactions of a session: log-normal
    gap_sigma: float = 1.0
    gap_max_s: int = 20 * 60
    break_min_s: int = 35 * 60  # between two sessions, at least (sessions split at 30 min)
    day_break_median_s: float = 1.5 * 3600  # between the sessions of a one-day user
    day_break_max_s: int = 5 * 3600
    # transitions
    p_next: float = 0.5
    next_p: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)
    p_second_last: float = 0.25
    next_power: float = 0.75  # neighbours drawn by static weight ** this (1: the hits)
    # drift
    epochs: int = 30
    release_boost: float = 8.0
    release_decay_days: float = 30.0
    trend_sigma: float = 1.5


def _group_fractions(
    weights: np.ndarray, group: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative share within its group for each column of (rows x items) ``weights``, and
    which (row, group) cells have any weight.

    Columns must be sorted by ``group``; every group's last column gets exactly 1.0, and an
    all-zero group gets 1.0 everywhere (a draw landing there is redirected by the caller).
    """
    counts = np.bincount(group, minlength=n_groups)
    ends = np.cumsum(counts)
    starts = ends - counts
    cum = np.cumsum(weights, axis=1)
    before = np.concatenate([np.zeros((len(cum), 1)), cum], axis=1)[:, starts]
    total = cum[:, ends - 1] - before
    ok = total > 0
    frac = (cum - before[:, group]) / np.where(ok, total, 1.0)[:, group]
    frac = np.where(ok[:, group], frac, 1.0)
    frac[:, ends - 1] = 1.0
    return frac, ok


class Catalogue:
    """Per-epoch item popularity and the transition table; draws next items for sessions."""

    def __init__(self, rng: np.random.Generator, model: SessionModel, sc: Scale, world: World):
        self.model, self.sc = model, sc
        n, c, e = sc.items, sc.clusters, model.epochs
        self.release = seconds(world.items["release_date"])
        self.epoch_len = WINDOW_DAYS * DAY_S // e
        self.epoch_start = WINDOW_START_S + np.arange(e, dtype=np.int64) * self.epoch_len
        x = (np.arange(e) + 0.5) / e - 0.5
        self.trend = np.exp(np.outer(x, rng.normal(0.0, model.trend_sigma, size=c)))  # (E, C)
        age_days = (self.epoch_start[:, None] - self.release[None, :]) / DAY_S
        boost = 1.0 + model.release_boost * np.exp(
            -np.maximum(age_days, 0.0) / model.release_decay_days
        )
        cluster = world.item_cluster
        weight = np.where(
            age_days >= 0, world.item_w * boost * self.trend[:, cluster], 0.0
        )  # (E, N): zero before release
        # Draw within a cluster: keys (epoch * C + cluster) + share within that (epoch, cluster).
        self.by_cluster = np.argsort(cluster, kind="stable").astype(np.int32)
        cl = cluster[self.by_cluster]
        frac, ok = _group_fractions(weight[:, self.by_cluster], cl, c)
        self.keys = ((np.arange(e)[:, None] * c + cl[None, :]) + frac).ravel()
        self.empty = ~ok.ravel()  # (E * C,): nothing of that cluster released yet
        # Draw by global popularity: keys epoch + cumulative share within the epoch.
        gfrac = np.cumsum(weight, axis=1)
        gfrac /= gfrac[:, -1:]
        gfrac[:, -1] = 1.0
        self.global_keys = (np.arange(e)[:, None] + gfrac).ravel()
        # Transitions: next neighbours within the cluster, by a power of the static weight.
        w = world.item_w[self.by_cluster] ** model.next_power
        self.static_keys = _group_fractions(w[None, :], cl, c)[0][0] + cl
        k = len(model.next_p)
        self.next = self._in_cluster(rng, np.repeat(cluster[:, None], k, axis=1))
        loop = self.next == np.arange(n, dtype=np.int32)[:, None]
        self.next[loop] = self._in_cluster(rng, cluster[np.nonzero(loop)[0]])
        self.next_cum = np.cumsum(model.next_p) / np.sum(model.next_p)
        self.taste = world.taste

    def _in_cluster(self, rng: np.random.Generator, cluster: np.ndarray) -> np.ndarray:
        q = cluster + rng.random(cluster.shape)
        pos = np.minimum(np.searchsorted(self.static_keys, q, side="right"), self.sc.items - 1)
        out: np.ndarray = self.by_cluster[pos]
        return out

    def epoch_of(self, ts: np.ndarray) -> np.ndarray:
        """The epoch each unix time falls in (clipped to the window)."""
        e = (ts - WINDOW_START_S) // self.epoch_len
        out: np.ndarray = np.clip(e, 0, self.model.epochs - 1).astype(np.int32)
        return out

    def slot_cum(self, user: np.ndarray, epoch: np.ndarray, taste_cum: np.ndarray) -> np.ndarray:
        """Cumulative probabilities of taste slots 0 and 1 for (user, epoch) rows: the user's
        taste weights times each cluster's trend at that epoch."""
        tc = taste_cum[user].astype(np.float64)
        w = np.diff(tc, axis=1, prepend=0.0) * self.trend[epoch[:, None], self.taste[user]]
        cum = np.cumsum(w, axis=1)
        out: np.ndarray = (cum[:, :2] / cum[:, 2:]).astype(np.float32)
        return out

    def step(
        self,
        rng: np.random.Generator,
        user: np.ndarray,
        epoch: np.ndarray,
        slot_cum: np.ndarray,
        prev1: np.ndarray,
        prev2: np.ndarray,
    ) -> np.ndarray:
        """The next item of each of a batch of sessions (-1 in ``prev1``: no previous item)."""
        m = len(user)
        model = self.model
        item = np.empty(m, dtype=np.int32)
        fresh = np.ones(m, dtype=bool)
        seq = np.flatnonzero((prev1 >= 0) & (rng.random(m, dtype=np.float32) < model.p_next))
        if len(seq):
            back = (prev2[seq] >= 0) & (
                rng.random(len(seq), dtype=np.float32) < model.p_second_last
            )
            src = np.where(back, prev2[seq], prev1[seq])
            k = np.searchsorted(self.next_cum, rng.random(len(seq)), side="right")
            nb = self.next[src, np.minimum(k, len(self.next_cum) - 1)]
            ok = self.release[nb] <= self.epoch_start[epoch[seq]]
            item[seq[ok]] = nb[ok]
            fresh[seq[ok]] = False
        f = np.flatnonzero(fresh)
        ef = epoch[f].astype(np.int64)
        u = rng.random(len(f), dtype=np.float32)
        slot = (u > slot_cum[f, 0]).astype(np.int8) + (u > slot_cum[f, 1]).astype(np.int8)
        group = ef * self.sc.clusters + self.taste[user[f], slot]
        noise = (rng.random(len(f), dtype=np.float32) < self.sc.noise) | self.empty[group]
        pos = np.searchsorted(self.keys, group + rng.random(len(f)), side="right")
        drawn = self.by_cluster[np.minimum(pos, len(self.keys) - 1) % self.sc.items]
        nz = np.flatnonzero(noise)
        gpos = np.searchsorted(self.global_keys, ef[nz] + rng.random(len(nz)), side="right")
        drawn[nz] = np.minimum(gpos, len(self.global_keys) - 1) % self.sc.items
        item[f] = drawn
        return item
