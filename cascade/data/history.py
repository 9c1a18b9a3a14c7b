"""Event-time user history: what the online store holds for a user just before each of their events.

One definition, offline and online:

- a user's events are ordered by ``(timestamp, item_id)`` (:func:`event_order`): on equal
  timestamps the larger item id counts as the newer event. Row order plays no part, so a log read
  in another order, or split and concatenated again, gives the same histories;
- the history of an event at time ``t`` is the user's events with a timestamp strictly before
  ``t``: two events at the same instant are not in each other's history. That is the state the
  online store holds once the log up to just before ``t`` is materialized, i.e. right after the
  user's previous event (previous instant);
- ``interaction_count``: the number of those events, repeats counted;
- ``recent_items``: the newest ``RECENT_ITEMS_LEN`` item ids, newest first, repeats kept;
- ``seen_items``: distinct item ids, newest first, each at the place of its newest occurrence, at
  most ``MAX_SEEN_ITEMS``. A (user, item) pair that the log repeats (CSV logs can, even at the same
  instant) counts as often as it occurs in ``interaction_count`` and ``recent_items`` and once in
  ``seen_items``.

``cascade.data.features.user_state`` builds the online values (the snapshots Feast materializes)
with the same order and rules; ``tests/features/test_replay.py`` materializes log prefixes into
a real Redis and checks that the gateway's read equals :class:`EventHistory` for sampled events.

:class:`EventHistory` computes the history of every event of a log without a list per event: it
sorts the log once by (user, timestamp, item), O(n log n), and keeps, in memory linear in the log,
the sorted item ids, for each sorted event the position of its pair's next occurrence (the dedup
rule) and, per row, the bounds of the row's history in the sorted array,
``[user_start, history_end)``. :meth:`EventHistory.recent` and :meth:`EventHistory.seen`
materialise the padded lists for the rows of one batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cascade.runtime.schema import ITEM_ID, MAX_SEEN_ITEMS, RECENT_ITEMS_LEN, TIMESTAMP, USER_ID

PAD = -1  # list padding, as the Two-Tower contract pads (two_tower.contract.PAD_ITEM)
_TS_DTYPE = "datetime64[us, UTC]"


def timestamps_us(ts: pd.Series) -> np.ndarray:
    """Timestamps as int64 microseconds since the epoch (UTC)."""
    naive = pd.Series(ts).astype(_TS_DTYPE).dt.tz_localize(None).to_numpy("datetime64[us]")
    out: np.ndarray = naive.view(np.int64)
    return out


def event_order(users: np.ndarray, ts_us: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Row order by (user, timestamp, item), ascending: each user's events oldest first, equal
    timestamps broken by item id. The one tie rule of histories, offline and online."""
    order: np.ndarray = np.lexsort((items, ts_us, users))
    return order


def count_before(keys: np.ndarray, ts_us: np.ndarray) -> np.ndarray:
    """For each row, the rows with the same key and a strictly earlier timestamp (int64)."""
    out = np.zeros(len(keys), dtype=np.int64)
    if len(keys) == 0:
        return out
    order = np.lexsort((ts_us, keys))
    k, t = keys[order], ts_us[order]
    pos = np.arange(len(keys), dtype=np.int64)
    new_key = np.r_[True, k[1:] != k[:-1]]
    new_instant = new_key | np.r_[True, t[1:] != t[:-1]]
    key_start = np.maximum.accumulate(np.where(new_key, pos, 0))
    out[order] = np.maximum.accumulate(np.where(new_instant, pos, 0)) - key_start
    return out


def _index_dtype(n: int) -> type[np.signedinteger]:
    return np.int32 if n < np.iinfo(np.int32).max else np.int64


@dataclass(frozen=True)
class EventHistory:
    """The event-time history of every row of a log (see the module docstring).

    ``items`` and ``next_same`` are indexed by position in the sorted log; ``start`` and ``end``
    by row of the log as given (so they line up with a frame built from the same rows).
    """

    items: np.ndarray  # (n,) int64: item ids sorted by (user, timestamp, item)
    next_same: np.ndarray  # (n,) position of the same (user, item) pair's next event; n if none
    start: np.ndarray  # (rows,) position of the row's user's first event
    end: np.ndarray  # (rows,) end (exclusive) of the row's history: its instant's first event
    position: np.ndarray  # (rows,) the row's own position in the sorted log
    stop: np.ndarray  # (rows,) end (exclusive) of the row's user's events in the sorted log
    row_at: np.ndarray  # (n,) the row at each sorted position (the inverse of ``position``)

    @classmethod
    def from_log(cls, users: np.ndarray, items: np.ndarray, ts_us: np.ndarray) -> EventHistory:
        """Histories of each row of the log (user ids, item ids, int64 µs timestamps)."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        ts_us = np.asarray(ts_us, dtype=np.int64)
        n = len(users)
        idx = _index_dtype(n)
        order = event_order(users, ts_us, items)
        u, t, i = users[order], ts_us[order], items[order]
        pos = np.arange(n, dtype=idx)
        if n:
            new_user = np.r_[True, u[1:] != u[:-1]]
            new_instant = new_user | np.r_[True, t[1:] != t[:-1]]
            user_start = np.maximum.accumulate(np.where(new_user, pos, 0))
            hist_end = np.maximum.accumulate(np.where(new_instant, pos, 0))
            last_of_user = np.r_[u[1:] != u[:-1], True]
            user_stop = np.minimum.accumulate(np.where(last_of_user, pos + 1, n)[::-1])[::-1]
        else:
            user_start = hist_end = user_stop = pos
        del t
        # Next occurrence of the same pair: group by (user, item), positions ascending (lexsort
        # is stable, and positions are already ascending).
        pairs = np.lexsort((i, u)).astype(idx)
        same = (u[pairs[1:]] == u[pairs[:-1]]) & (i[pairs[1:]] == i[pairs[:-1]])
        next_same = np.full(n, n, dtype=idx)
        next_same[pairs[:-1][same]] = pairs[1:][same]
        del pairs, same, u
        start = np.empty(n, dtype=idx)
        end = np.empty(n, dtype=idx)
        stop = np.empty(n, dtype=idx)
        position = np.empty(n, dtype=idx)
        start[order] = user_start
        end[order] = hist_end
        stop[order] = user_stop.astype(idx)
        position[order] = pos
        return cls(
            items=i,
            next_same=next_same,
            start=start,
            end=end,
            position=position,
            stop=stop,
            row_at=order.astype(idx),
        )

    @classmethod
    def from_interactions(cls, interactions: pd.DataFrame) -> EventHistory:
        """:meth:`from_log` over a frame with user_id, item_id and timestamp columns."""
        return cls.from_log(
            interactions[USER_ID].to_numpy(np.int64),
            interactions[ITEM_ID].to_numpy(np.int64),
            timestamps_us(interactions[TIMESTAMP]),
        )

    def __len__(self) -> int:
        return len(self.start)

    @property
    def nbytes(self) -> int:
        arrays = (self.items, self.next_same, self.start, self.end, self.position, self.stop)
        return sum(a.nbytes for a in (*arrays, self.row_at))

    def future(self, rows: np.ndarray, window: int, rng: np.random.Generator) -> np.ndarray:
        """For each row, a row drawn uniformly from the user's events from that row on: the row
        itself and the next ``window - 1`` (fewer near the end of the user's log). ``window`` 1
        gives the rows back. The training target of the "any of the next few items" objective
        (``two_tower.train``), whose history stays the one of ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        if window <= 1:
            return rows
        at = self.position[rows].astype(np.int64)
        span = np.minimum(self.stop[rows].astype(np.int64) - at, window)
        ahead = np.floor(rng.random(len(rows)) * span).astype(np.int64)
        out: np.ndarray = self.row_at[at + ahead].astype(np.int64)
        return out

    def counts(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """``interaction_count`` of ``rows`` (int64)."""
        out: np.ndarray = self.end[rows].astype(np.int64) - self.start[rows]
        return out

    def empty_share(self) -> float:
        """Share of rows whose history is empty (the user's first instant)."""
        return float(np.mean(self.end == self.start)) if len(self) else 0.0

    def recent(self, rows: np.ndarray, length: int = RECENT_ITEMS_LEN) -> np.ndarray:
        """``(len(rows), length)`` int64: each row's newest items, newest first, PAD after."""
        s = self.start[rows].astype(np.int64)
        e = self.end[rows].astype(np.int64)
        pos = e[:, None] - 1 - np.arange(length)
        inside = pos >= s[:, None]
        out: np.ndarray = np.where(inside, self.items[np.where(inside, pos, 0)], PAD)
        return out

    def seen(self, rows: np.ndarray, length: int = MAX_SEEN_ITEMS) -> np.ndarray:
        """``(len(rows), length)`` int64: each row's distinct items, newest first, PAD after.

        Reads each row's history backwards in windows, keeping an item where its pair has no
        later occurrence inside the history; a row that repeats items gets a wider window.
        """
        rows = np.asarray(rows)
        s_all = self.start[rows].astype(np.int64)
        e_all = self.end[rows].astype(np.int64)
        out = np.full((len(rows), length), PAD, dtype=np.int64)
        todo = np.arange(len(rows))
        width = length
        while len(todo) and length > 0:
            s, e = s_all[todo], e_all[todo]
            width = int(min(width, max(int((e - s).max()), 1)))
            pos = e[:, None] - 1 - np.arange(width)
            inside = pos >= s[:, None]
            safe = np.where(inside, pos, 0)
            keep = inside & (self.next_same[safe] >= e[:, None])
            done = (keep.sum(axis=1) >= length) | (e - width <= s)
            rank = np.cumsum(keep[done], axis=1) - 1
            r, c = np.nonzero(keep[done] & (rank < length))
            out[todo[done][r], rank[r, c]] = self.items[safe[done][r, c]]
            todo = todo[~done]
            width *= 2
        return out
