"""Training/serving consistency, replayed: the offline event-time history of an event equals what
the gateway reads from Redis after the log up to just before that event was materialized.

For each sampled event (time ``t``), in time order: the feature tables of the log strictly before
``t`` are built (``cascade.data.features.build_feature_tables``, as ``cascade data`` does),
materialized incrementally into the real Redis under a fresh Feast project
(``cascade.features.store.materialize``, as ``cascade features materialize`` does), and read
back with the gateway's reader (``gateway.tiers.features.FeastFeatureReader``: one ``HMGET`` of
Feast's layout, ``cascade.runtime.feast_redis``). For the sampled event, and for every other
user's next event at or after ``t`` (nothing of theirs happens in between, so the same online
state serves it), the online ``interaction_count``, ``recent_items`` and ``seen_items`` must
equal :class:`cascade.data.history.EventHistory`'s, which is what training uses.

The log is the synthetic ``tiny`` one plus what real logs have and the generator avoids: a user's
events at one instant, repeated (user, item) pairs, exact duplicate rows.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cascade.data.dataset import Dataset
from cascade.data.features import build_feature_tables, write_feature_tables
from cascade.data.history import PAD, EventHistory, event_order, timestamps_us
from cascade.features import store
from cascade.runtime import feature_names as names
from cascade.runtime.paths import Layout
from cascade.runtime.schema import ITEM_ID, MAX_SEEN_ITEMS, TIMESTAMP, USER_ID
from gateway.tiers.features import FeastFeatureReader
from tests.features.conftest import DATASET

pytestmark = pytest.mark.integration

USER_VIEWS = [names.USER_PROFILE, names.USER_ACTIVITY]  # what the gateway reads


def _log_with_real_quirks() -> tuple[pd.DataFrame, Dataset]:
    from cascade.data.synthetic import generate

    ds = generate(scale="tiny", seed=7)
    log = ds.interactions
    rng = np.random.default_rng(0)
    again = log.sample(300, random_state=1).assign(
        timestamp=lambda d: d.timestamp + pd.Timedelta(days=2)
    )
    same_instant = log.sample(300, random_state=2)
    same_instant = same_instant.assign(item_id=rng.choice(ds.items[ITEM_ID].to_numpy(), 300))
    log = pd.concat([log, again, same_instant, log.head(20)], ignore_index=True)
    log = log.sample(frac=1.0, random_state=3).reset_index(drop=True)
    return log, Dataset("replay", log, ds.users, ds.items, "test")


def _cut_events(log: pd.DataFrame, history: EventHistory) -> list[int]:
    """Rows to replay up to: random ones, one sharing its instant with another event of its
    user, one whose history repeats an item; in time order."""
    rng = np.random.default_rng(4)
    counts = history.counts()
    ties = log.duplicated([USER_ID, TIMESTAMP], keep=False).to_numpy() & (counts > 0)
    seen = history.seen(np.arange(len(log)), MAX_SEEN_ITEMS)
    repeats = (counts > (seen != PAD).sum(axis=1)) & (counts < 30)
    rows = [*rng.choice(len(log), 4, replace=False), rng.choice(np.flatnonzero(ties))]
    rows.append(rng.choice(np.flatnonzero(repeats)))
    return sorted((int(r) for r in rows), key=lambda r: log[TIMESTAMP].iloc[r])


def _next_events(log: pd.DataFrame, ts_us: np.ndarray, cut_us: int) -> dict[int, int]:
    """Each user's first row at or after ``cut_us`` (the event the online state serves next)."""
    users = log[USER_ID].to_numpy(np.int64)
    order = event_order(users, ts_us, log[ITEM_ID].to_numpy(np.int64))
    later = order[ts_us[order] >= cut_us]
    first = np.r_[True, users[later][1:] != users[later][:-1]]
    return {int(users[r]): int(r) for r in later[first]}


def _offline(history: EventHistory, row: int) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    rows = np.array([row])
    recent, seen = history.recent(rows)[0], history.seen(rows, MAX_SEEN_ITEMS)[0]
    return (
        int(history.counts(rows)[0]),
        tuple(int(i) for i in recent[recent != PAD]),
        tuple(int(i) for i in seen[seen != PAD]),
    )


def _online(row: Any) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    if row is None:  # the store has nothing for the user: a cold start, no history
        return (0, (), ())
    return (row.interaction_count, row.recent_items, row.seen_items)


def test_offline_history_equals_the_online_read_after_replaying_the_log(
    redis_store: str, layout: Layout
) -> None:
    log, ds = _log_with_real_quirks()
    history = EventHistory.from_interactions(log)  # what training computes, from the whole log
    checked, nonempty, repeats = asyncio.run(_replay(layout, log, ds, history))
    assert checked > 500 and nonempty > 100 and repeats > 10, (checked, nonempty, repeats)


async def _replay(
    layout: Layout, log: pd.DataFrame, ds: Dataset, history: EventHistory
) -> tuple[int, int, int]:
    """Materialize up to each cut and compare; (events checked, with a history, with repeats).
    Runs in one event loop: the reader's Redis client belongs to it."""
    ts_us = timestamps_us(log[TIMESTAMP])
    reader: FeastFeatureReader | None = None
    checked = nonempty = repeats = 0
    try:
        for cut_row in _cut_events(log, history):
            cut_us = int(ts_us[cut_row])
            prefix = log[ts_us < cut_us]
            tables = build_feature_tables(Dataset("replay", prefix, ds.users, ds.items, "test"))
            write_feature_tables(tables, layout.dataset_dir(DATASET))
            if reader is None:
                store.apply(layout=layout, dataset=DATASET)
            final = tables[names.VIEW_FILES[names.USER_ACTIVITY]][names.EVENT_TIMESTAMP].max()
            report = store.materialize(
                layout=layout, dataset=DATASET, end=final.to_pydatetime(), views=USER_VIEWS
            )
            assert report.online_store == "redis"
            if reader is None:
                reader = FeastFeatureReader.open(
                    layout=layout, dataset=DATASET, socket_timeout_s=2.0
                )
                assert reader.direct is not None  # the gateway's direct HMGET path
                await reader.start()
            upcoming = _next_events(log, ts_us, cut_us)
            cut_user = int(log[USER_ID].iloc[cut_row])
            assert ts_us[upcoming[cut_user]] == cut_us  # the sampled event's instant is checked
            for user, row in upcoming.items():
                want = _offline(history, row)
                got = _online(await reader.read(user, timeout_s=5.0))
                assert got == want, (user, row, cut_row)
                checked += 1
                nonempty += want[0] > 0
                repeats += want[0] > len(want[2])
    finally:
        if reader is not None:
            await reader.close()
    return checked, nonempty, repeats
