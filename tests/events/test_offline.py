"""The offline event log: date partitions written atomically, read back once per event_id, and
merged into the next data build as interactions with the one history definition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cascade.data.dataset import read_dataset, read_manifest
from cascade.data.event_log import log_fingerprint, read_event_log
from cascade.data.features import user_state
from cascade.data.resolve import resolve_dataset
from cascade.runtime.paths import Layout
from cascade.runtime.schema import ITEM_ID, USER_ID
from events.contract import EVENTS_DIR, OFFLINE_COLUMNS, POSITIVE_RATING, Event
from events.offline import OfflineBuffer

DAY1 = 1_780_000_000.0  # 2026-05-28 UTC


def ev(i: int, **over: object) -> Event:
    fields: dict[str, object] = {
        "event_id": f"e{i}",
        "user_id": i % 3,
        "item_id": i % 11,
        "type": "view",
        "timestamp": DAY1 + i * 3600.0,
    }
    fields.update(over)
    return Event.model_validate(fields)


def test_partitions_by_date_and_reads_each_event_once(tmp_path: Path) -> None:
    buf = OfflineBuffer(tmp_path, consumer="c0", flush_rows=1000, flush_s=5.0)
    batch = [(ev(i), 100 + i) for i in range(40)]  # 40 hours: two or three dates
    buf.add(batch, now=0.0)
    assert not buf.due(now=1.0) and buf.due(now=5.0)
    first = buf.flush()
    assert buf.count == 0 and len(first) >= 2
    assert all(p.parent.name.startswith("date=2026-") for p in first)
    # a redelivery writes some of the same events again, with new sequence numbers
    buf.add(
        [(ev(i), 500 + i) for i in range(10)] + [(ev(99, type="rating", value=2.0), 700)], now=9.0
    )
    buf.flush()
    assert not list(tmp_path.rglob(".*.tmp"))
    log = read_event_log(tmp_path)
    assert tuple(log.columns) == OFFLINE_COLUMNS
    assert len(log) == 41 and log["event_id"].is_unique
    assert log.loc[log.event_id == "e3", "stream_seq"].item() == 103  # the first write wins
    assert str(log["timestamp"].dtype) == "datetime64[us, UTC]"
    assert log["timestamp"].is_monotonic_increasing
    assert log.loc[log.event_id == "e99", "value"].item() == 2.0
    assert pd.isna(log.loc[log.event_id == "e1", "request_id"].item())


def test_an_empty_log_reads_as_an_empty_frame(tmp_path: Path) -> None:
    log = read_event_log(tmp_path / "nothing")
    assert log.empty and tuple(log.columns) == OFFLINE_COLUMNS
    assert log_fingerprint(tmp_path / "nothing") is None


def test_the_next_data_build_sees_consumption_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    layout = Layout(home=tmp_path)
    directory = resolve_dataset("synthetic:tiny", layout=layout, seed=7)
    before = read_dataset(directory)
    users = before.interactions[USER_ID].to_numpy()
    items = before.items[ITEM_ID].to_numpy()
    t = before.interactions["timestamp"].max().timestamp() + 3600
    new_user = int(users.max()) + 1000
    events = [
        ev(1, user_id=int(users[0]), item_id=int(items[3]), type="click", timestamp=t),
        ev(2, user_id=int(users[0]), item_id=int(items[4]), type="impression", timestamp=t + 1),
        ev(
            3,
            user_id=int(users[0]),
            item_id=int(items[5]),
            type="rating",
            value=2.0,
            timestamp=t + 2,
        ),
        ev(
            4,
            user_id=int(users[0]),
            item_id=int(items[6]),
            type="rating",
            value=5.0,
            timestamp=t + 3,
        ),
        ev(5, user_id=new_user, item_id=int(items[7]), type="purchase", timestamp=t + 4),
        ev(6, user_id=new_user, item_id=10**9, type="view", timestamp=t + 5),  # unknown item
    ]
    buf = OfflineBuffer(directory / EVENTS_DIR, consumer="c0")
    buf.add([(e, i) for i, e in enumerate(events)], now=0.0)
    buf.flush()
    fingerprint = log_fingerprint(directory / EVENTS_DIR)

    # Serving and evaluation reuse the data set as built: live traffic never forces a rebuild.
    kept = resolve_dataset("synthetic:tiny", layout=layout, seed=7)
    assert len(read_dataset(kept).interactions) == len(before.interactions)
    # An explicit data build (`cascade data`, the retraining job) folds the log in.
    rebuilt = resolve_dataset("synthetic:tiny", layout=layout, seed=7, fold_event_log=True)
    after = read_dataset(rebuilt)
    assert read_manifest(rebuilt)["event_log"] == fingerprint
    assert (rebuilt / EVENTS_DIR).is_dir()  # the log survives the rebuild
    assert len(after.interactions) == len(before.interactions) + 3  # click, rating 5, purchase
    added = after.interactions.tail(3)
    assert list(added[ITEM_ID]) == [int(items[3]), int(items[6]), int(items[7])]
    assert list(added["rating"]) == [POSITIVE_RATING, 5.0, POSITIVE_RATING]
    state = user_state(after.interactions).set_index(USER_ID)
    assert list(state.loc[int(users[0]), "recent_items"][:2]) == [int(items[6]), int(items[3])]
    assert np.array_equal(state.loc[new_user, "seen_items"], [int(items[7])])
    # up to date now: no rebuild, same data
    assert resolve_dataset("synthetic:tiny", layout=layout, seed=7, fold_event_log=True) == rebuilt
    assert len(read_dataset(rebuilt).interactions) == len(after.interactions)
