"""Event-time history: each row's history equals ``user_state`` of the user's earlier events.

The oracle is a plain Python reading of the definition (cascade.data.history's docstring); the
logs have the cases that make it tricky: equal timestamps, repeated (user, item) pairs, exact
duplicate rows, shuffled row order, histories longer than the caps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cascade.data.features import user_state
from cascade.data.history import PAD, EventHistory, count_before, event_order, timestamps_us
from cascade.runtime.schema import MAX_SEEN_ITEMS, RECENT_ITEMS_LEN

T0 = pd.Timestamp("2026-01-01", tz="UTC")


def _log(users: list[int], items: list[int], minutes: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": np.asarray(users, dtype=np.int64),
            "item_id": np.asarray(items, dtype=np.int64),
            "timestamp": T0 + pd.to_timedelta(minutes, unit="min"),
        }
    )


def _oracle(log: pd.DataFrame, row: int) -> tuple[int, list[int], list[int]]:
    """count, recent_items, seen_items of ``row`` by the definition, one row at a time."""
    user, ts = log.user_id.iloc[row], log.timestamp.iloc[row]
    before = log[(log.user_id == user) & (log.timestamp < ts)]
    newest_first = before.sort_values(["timestamp", "item_id"], ascending=False)
    items = newest_first.item_id.tolist()
    return len(items), items[:RECENT_ITEMS_LEN], list(dict.fromkeys(items))[:MAX_SEEN_ITEMS]


def _unpad(row: np.ndarray) -> list[int]:
    assert (row[row == PAD] == PAD).all() and not (row[: (row != PAD).sum()] == PAD).any()
    return [int(i) for i in row if i != PAD]


def _bursty_log(seed: int = 0, users: int = 30) -> pd.DataFrame:
    """Users acting in bursts: several events per minute (equal timestamps), repeated items,
    exact duplicate rows; rows shuffled."""
    rng = np.random.default_rng(seed)
    n = 3000
    log = _log(
        rng.integers(0, users, n).tolist(),
        rng.integers(0, 40, n).tolist(),  # few items: many repeats
        rng.integers(0, 400, n).tolist(),  # few minutes: many equal timestamps
    )
    log = pd.concat([log, log.head(50)], ignore_index=True)  # exact duplicates
    return log.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def test_histories_equal_the_definition_row_by_row() -> None:
    log = _bursty_log()
    history = EventHistory.from_interactions(log)
    rows = np.arange(len(log))
    recent, seen, counts = history.recent(rows), history.seen(rows), history.counts(rows)
    assert recent.shape == (len(log), RECENT_ITEMS_LEN) and seen.shape == (len(log), MAX_SEEN_ITEMS)
    for row in np.random.default_rng(1).choice(len(log), 400, replace=False):
        count, want_recent, want_seen = _oracle(log, int(row))
        assert counts[row] == count, row
        assert _unpad(recent[row]) == want_recent, row
        assert _unpad(seen[row]) == want_seen, row


def test_history_equals_user_state_of_the_earlier_events() -> None:
    """The offline history and the online state (``user_state``, what is materialized) agree."""
    log = _bursty_log(seed=2)
    history = EventHistory.from_interactions(log)
    for row in np.random.default_rng(3).choice(len(log), 100, replace=False):
        user, ts = log.user_id.iloc[row], log.timestamp.iloc[row]
        before = log[(log.user_id == user) & (log.timestamp < ts)]
        rows = np.array([row])
        if before.empty:
            assert history.counts(rows)[0] == 0 and (history.seen(rows) == PAD).all()
            continue
        state = user_state(before).iloc[0]
        assert history.counts(rows)[0] == state.interaction_count
        assert _unpad(history.recent(rows)[0]) == state.recent_items.tolist()
        assert _unpad(history.seen(rows)[0]) == state.seen_items.tolist()


def test_row_order_does_not_matter() -> None:
    log = _bursty_log(seed=4)
    shuffled = log.sample(frac=1.0, random_state=9)
    a = EventHistory.from_interactions(log)
    b = EventHistory.from_interactions(shuffled.reset_index(drop=True))
    back = np.argsort(shuffled.index.to_numpy())  # row of b holding row i of log
    rows = np.arange(len(log))
    np.testing.assert_array_equal(a.recent(rows), b.recent(back))
    np.testing.assert_array_equal(a.seen(rows, 50), b.seen(back, 50))
    np.testing.assert_array_equal(a.counts(rows), b.counts(back))
    state_a, state_b = user_state(log), user_state(shuffled)
    for x, y in zip(state_a.seen_items, state_b.seen_items, strict=True):
        np.testing.assert_array_equal(x, y)


def test_equal_timestamps_by_hand() -> None:
    """Events at one instant are not in each other's history; among earlier events at one
    instant the larger item id is the newer; a repeated pair is seen once, at its newest."""
    log = _log(
        users=[1, 1, 1, 1, 1, 1, 2],
        items=[5, 3, 9, 3, 7, 7, 3],
        minutes=[0, 0, 0, 1, 2, 2, 0],
    )
    history = EventHistory.from_interactions(log)
    rows = np.arange(len(log))
    assert history.counts(rows).tolist() == [0, 0, 0, 3, 4, 4, 0]
    assert _unpad(history.recent(rows)[3]) == [9, 5, 3]  # minute 0, larger item id newer
    assert _unpad(history.recent(rows)[4]) == [3, 9, 5, 3]
    assert _unpad(history.seen(rows)[4]) == [3, 9, 5]  # item 3 once, at its newest place
    assert history.empty_share() == pytest.approx(4 / 7)
    state = user_state(log).set_index("user_id")
    assert state.loc[1, "recent_items"].tolist() == [7, 7, 3, 9, 5, 3]
    assert state.loc[1, "seen_items"].tolist() == [7, 3, 9, 5]


def test_caps_and_long_histories_with_repeats() -> None:
    """Histories longer than the caps; repeats inside the seen window widen it."""
    n = 3 * MAX_SEEN_ITEMS + 300
    items = [i // 3 for i in range(n)]  # each item three times in a row
    log = _log([7] * n, items, list(range(n)))
    history = EventHistory.from_interactions(log)
    last = np.array([n - 1])
    count, want_recent, want_seen = _oracle(log, n - 1)
    assert history.counts(last)[0] == count == n - 1
    assert _unpad(history.recent(last)[0]) == want_recent
    assert _unpad(history.seen(last)[0]) == want_seen and len(want_seen) == MAX_SEEN_ITEMS
    assert _unpad(history.seen(last, 3)[0]) == want_seen[:3]


def test_memory_is_linear_in_the_log() -> None:
    small = EventHistory.from_interactions(_bursty_log(users=30))
    big = EventHistory.from_interactions(
        pd.concat([_bursty_log(seed=s, users=30) for s in range(4)], ignore_index=True)
    )
    per_row = small.nbytes / len(small)
    assert big.nbytes / len(big) == pytest.approx(per_row)
    assert per_row <= 8 + 6 * 4  # int64 items, six int32 offsets


def test_empty_log() -> None:
    log = _log([], [], [])
    history = EventHistory.from_interactions(log)
    assert len(history) == 0 and history.empty_share() == 0.0
    assert history.recent(np.zeros(0, np.int64)).shape == (0, RECENT_ITEMS_LEN)
    assert history.seen(np.zeros(0, np.int64), 4).shape == (0, 4)


def test_count_before_and_event_order() -> None:
    keys = np.array([1, 1, 2, 1, 1])
    ts = np.array([5, 3, 3, 5, 9])
    assert count_before(keys, ts).tolist() == [1, 0, 0, 1, 3]
    order = event_order(np.array([2, 1, 1, 1]), np.array([0, 4, 4, 1]), np.array([0, 9, 2, 5]))
    assert order.tolist() == [3, 2, 1, 0]
    assert timestamps_us(pd.Series([T0])).tolist() == [T0.value // 1000]


def test_future_draws_the_row_or_one_of_the_users_next_events() -> None:
    users = np.array([2, 1, 2, 1, 2, 1, 1])
    items = np.array([10, 20, 11, 21, 12, 22, 23])
    ts = np.array([5, 1, 6, 2, 6, 3, 9])  # user 2's last two events share an instant
    history = EventHistory.from_log(users, items, ts)
    rows = np.arange(len(users))
    assert np.array_equal(history.future(rows, 1, np.random.default_rng(0)), rows)
    rng = np.random.default_rng(0)
    reached: dict[int, set[int]] = {int(r): set() for r in rows}
    for _ in range(200):
        for row, drawn in zip(rows, history.future(rows, 3, rng), strict=True):
            reached[int(row)].add(int(drawn))
    # user 1 in time order: rows 1, 3, 5, 6; user 2: rows 0, 2, 4 (2 and 4 at one instant,
    # item 11 before 12 by the tie rule)
    assert reached == {
        1: {1, 3, 5},
        3: {3, 5, 6},
        5: {5, 6},
        6: {6},
        0: {0, 2, 4},
        2: {2, 4},
        4: {4},
    }
