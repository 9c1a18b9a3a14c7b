"""The ``sessions`` profile: interactions come in sessions, follow each other, and drift in time.

- **Who comes when.** A user's activity (log-normal, as before) is split into sessions. With
  probability ``one_day_share`` the user is a one-day user: 1 + Poisson(0.5) sessions (more when
  the activity exceeds ``max_session_len`` per session), back to back on one day, 35 min to 5 h
  apart. Everyone else returns: 2 + Poisson(activity / 10) sessions (at most 100) at uniform
  times between signup (or the window start) and the window end, so these users span weeks to
  months. Session sizes split the activity by Dirichlet(1) shares, at least one each.
- **Bursts.** Within a session consecutive interactions are log-normal seconds apart (median
  40 s, at most 20 min); sessions of one user never overlap and are at least 35 min apart, so
  splitting a user's log at 30-minute gaps recovers the sessions.
- **What comes next.** Items come from :class:`~cascade.data.synthetic.catalogue.Catalogue`:
  a step draws the next item of every active session at once (a neighbour of the previous item,
  or a fresh draw from the user's taste at the session's epoch). Sessions are walked longest
  first, so the sessions active at step j are a prefix of the table.
- **No repeats.** A repeated (user, item) pair keeps its earliest row. The dropped rows leave
  holes; each session's kept rows move up to close them and the session is walked on from its
  last kept item to refill its planned length, for a few rounds. Timestamps belong to slots (the
  session start plus its gaps), so a session keeps its rhythm whatever was dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from cascade.data.synthetic.catalogue import Catalogue, SessionModel
from cascade.data.synthetic.world import (
    WINDOW_END_S,
    WINDOW_START_S,
    Scale,
    World,
    activity,
    seconds,
)

logger = logging.getLogger(__name__)

_ROUNDS = 6  # walks: the first and five refills
_ASK = 1.1  # plan this share of the scale's count: heavy users cannot refill every repeat


@dataclass(frozen=True)
class _Plan:
    """Sessions grouped by user, in time order within a user; slots are planned interactions."""

    user: np.ndarray  # (S,) int32
    start: np.ndarray  # (S,) int64 unix seconds
    epoch: np.ndarray  # (S,) int32
    length: np.ndarray  # (S,) int64 planned interactions
    slot_off: np.ndarray  # (S,) int64 index of the session's first slot
    rel: np.ndarray  # (slots,) int32 seconds from the session start
    slot_cum: np.ndarray  # (S, 2) float32 taste-slot probabilities at the session's epoch


def _exclusive_cumsum(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.cumsum(x) - x
    return out


def _plan(
    rng: np.random.Generator,
    m: SessionModel,
    cat: Catalogue,
    world: World,
    want: np.ndarray,
    lo: np.ndarray,
) -> _Plan:
    """Sessions for users wanting ``want`` interactions from unix time ``lo`` on: counts,
    sizes, slot times and starts (the last session ends before the window does whenever the
    user's sessions fit after ``lo``: always at these scales, where they take a few days)."""
    n_users = len(want)
    one_day = rng.random(n_users) < m.one_day_share
    by_len = np.ceil(want / m.max_session_len).astype(np.int64)
    day = np.maximum(by_len, 1 + rng.poisson(m.day_extra_sessions, size=n_users))
    back = np.maximum(by_len, 2 + rng.poisson(want / m.per_session))
    n = np.minimum(np.where(one_day, day, back), np.maximum(m.max_sessions, by_len))
    n = np.minimum(n, want)
    user = np.repeat(np.arange(n_users, dtype=np.int32), n)
    first = _exclusive_cumsum(n)
    # Sizes: Dirichlet(1) shares of what is left after one each, rounded stochastically.
    share = rng.exponential(size=len(user))
    share /= np.bincount(user, weights=share, minlength=n_users)[user]
    length = 1 + np.floor(share * (want - n)[user] + rng.random(len(user))).astype(np.int64)
    # Slots: gaps within a session; a session's duration is its last slot's offset.
    slot_off = _exclusive_cumsum(length)
    gap = rng.lognormal(np.log(m.gap_median_s), m.gap_sigma, size=int(length.sum()))
    gap = np.clip(np.rint(gap), 2, m.gap_max_s).astype(np.int64)
    gap[slot_off] = 0
    rel = np.cumsum(gap)
    rel -= np.repeat(rel[slot_off], length)
    duration = rel[slot_off + length - 1]
    rel32 = rel.astype(np.int32)
    del gap, rel
    # Breaks after each session, then chained starts that never overlap: with P the time the
    # user's earlier sessions and breaks take, start_k = P_k + max over j <= k of (S_j - P_j),
    # S the wanted starts: one day for a one-day user, sorted uniform times for the others.
    brk = rng.lognormal(np.log(m.day_break_median_s), 0.5, size=len(user))
    brk = np.clip(np.rint(brk), m.break_min_s, m.day_break_max_s).astype(np.int64)
    brk = np.where(one_day[user], brk, m.break_min_s)
    step = duration + brk
    before = _exclusive_cumsum(step)
    before -= before[first][user]
    last = first + n - 1
    busy = before[last] + duration[last]
    avail = np.maximum(WINDOW_END_S - lo - busy, 0)
    u = rng.random(len(user)) + user  # sorted within each user below
    u = np.sort(u) - user
    u = np.where(one_day[user], rng.random(n_users)[user], u)
    wanted = lo[user] + (u * avail[user]).astype(np.int64)
    base = np.int64(1) << np.int64(32)
    key = user.astype(np.int64) * base + (wanted - WINDOW_START_S - before + (1 << 30))
    latest = np.maximum.accumulate(key) - user.astype(np.int64) * base - (1 << 30)
    start = WINDOW_START_S + latest + before
    epoch = cat.epoch_of(start)
    return _Plan(
        user=user,
        start=start,
        epoch=epoch,
        length=length,
        slot_off=slot_off,
        rel=rel32,
        slot_cum=cat.slot_cum(user, epoch, world.taste_cum),
    )


def _walk(
    rng: np.random.Generator,
    cat: Catalogue,
    plan: _Plan,
    sess: np.ndarray,
    count: np.ndarray,
    pos0: np.ndarray,
    prev1: np.ndarray,
    prev2: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Walk ``count[i]`` steps of session ``sess[i]`` from slot ``pos0[i]`` after the items
    ``prev1`` (last) and ``prev2``; (session, slot, item) rows, sorted by session and slot."""
    order = np.argsort(-count, kind="stable")
    s, c = sess[order], count[order]
    off = _exclusive_cumsum(c)
    item = np.empty(int(c.sum()), dtype=np.int32)
    p1, p2 = prev1[order].copy(), prev2[order].copy()
    user, epoch, slot_cum = plan.user[s], plan.epoch[s], plan.slot_cum[s]
    active = len(c) - np.cumsum(np.bincount(c, minlength=int(c[0]) + 1))  # sessions longer than j
    for j in range(int(c[0])):
        a = int(active[j])
        nxt = cat.step(rng, user[:a], epoch[:a], slot_cum[:a], p1[:a], p2[:a])
        item[off[:a] + j] = nxt
        p2[:a] = p1[:a]
        p1[:a] = nxt
    rows = np.repeat(s, c)
    slot = np.repeat(pos0[order] - off, c) + np.arange(len(item))
    by_slot = np.argsort(plan.slot_off[rows] + slot, kind="stable")
    return rows[by_slot], slot[by_slot], item[by_slot]


def _first_pairs(user: np.ndarray, item: np.ndarray, g: np.ndarray, n_items: int) -> np.ndarray:
    """Mask of the earliest row of each (user, item) pair; ``g`` orders a user's rows in time."""
    pair = user.astype(np.int64) * n_items + item
    n = int(g.max()) + 1
    if int(pair.max()) < np.iinfo(np.int64).max // n - 1:
        order = np.argsort(pair * n + g)
    else:
        order = np.lexsort((g, pair))
    p = pair[order]
    keep = np.zeros(len(pair), dtype=bool)
    keep[order[np.r_[True, p[1:] != p[:-1]]]] = True
    return keep


def session_log(
    rng: np.random.Generator, sc: Scale, world: World, model: SessionModel | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, unix seconds, rating) of the sessions profile, in time order."""
    m = model or SessionModel()
    cat = Catalogue(rng, m, sc, world)
    want = activity(rng, sc, int(sc.interactions * _ASK))
    lo = np.maximum(seconds(world.users["signup_date"]), WINDOW_START_S)
    plan = _plan(rng, m, cat, world, want, lo)
    n_sess = len(plan.user)
    none = np.full(n_sess, -1, dtype=np.int32)
    sess, slot, item = _walk(
        rng, cat, plan, np.arange(n_sess), plan.length, np.zeros(n_sess, np.int64), none, none
    )
    for done in range(1, _ROUNDS + 1):
        # Rows are in slot order (a user's rows in time order): keep first pairs, close the holes.
        keep = _first_pairs(plan.user[sess], item, plan.slot_off[sess] + slot, sc.items)
        sess, item = sess[keep], item[keep]
        kept = np.bincount(sess, minlength=n_sess)
        first = _exclusive_cumsum(kept)
        slot = np.arange(len(sess)) - first[sess]
        short = np.flatnonzero(kept < plan.length)
        if done == _ROUNDS or len(short) == 0:
            break
        k = kept[short]
        tail = first[short] + k - 1
        p1 = np.where(k > 0, item[np.maximum(tail, 0)], -1).astype(np.int32)
        p2 = np.where(k > 1, item[np.maximum(tail - 1, 0)], -1).astype(np.int32)
        more = _walk(rng, cat, plan, short, plan.length[short] - k, k, p1, p2)
        merged = np.argsort(
            np.r_[plan.slot_off[sess] + slot, plan.slot_off[more[0]] + more[1]], kind="stable"
        )
        sess = np.r_[sess, more[0]][merged]
        slot = np.r_[slot, more[1]][merged]
        item = np.r_[item, more[2]][merged]
    user = plan.user[sess]
    ts = plan.start[sess] + plan.rel[plan.slot_off[sess] + slot]
    # Ratings: higher for the user's main cluster, then their other clusters, lowest outside.
    cl = world.item_cluster[item]
    taste = world.taste[user]
    base = np.where(
        cl == taste[:, 0], 4.2, np.where((cl == taste[:, 1]) | (cl == taste[:, 2]), 3.6, 2.8)
    )
    noise = rng.normal(0.0, 0.8, size=len(user))
    rating = np.clip(np.rint(base + noise), 1, 5).astype(np.float32)
    keep = np.ones(len(user), dtype=bool)
    if len(user) > sc.interactions:
        keep[rng.choice(len(user), size=len(user) - sc.interactions, replace=False)] = False
    else:
        logger.info("generated %d interactions (asked %d)", len(user), sc.interactions)
    order = np.flatnonzero(keep)[np.argsort(ts[keep], kind="stable")]
    return user[order], item[order], ts[order], rating[order]
