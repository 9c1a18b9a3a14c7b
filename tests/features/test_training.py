"""Point-in-time training frames: no leakage, and the Feast and merge_asof engines agree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cascade.features import store, training
from cascade.runtime import feature_names as names
from cascade.runtime import feature_store, schema
from cascade.runtime.paths import Layout
from tests.features.conftest import DATASET, write_tables

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
LIST_COLUMNS = ("recent_items", "seen_items")


def _stamp_id(ts: datetime) -> int:
    """Feature values encode the day of their snapshot, so a row shows which snapshot it got."""
    return (ts - T0) // DAY


def _leakage_tables() -> dict[str, pd.DataFrame]:
    activity = [(1, T0 + 7 * DAY), (1, T0 + 14 * DAY), (1, T0 + 21 * DAY), (2, T0 + 21 * DAY)]
    items = [(i, T0 + d * DAY) for i in (0, 1) for d in (7, 14)]
    return {
        schema.USER_PROFILE_FILE: pd.DataFrame(
            {
                schema.USER_ID: [1, 2],
                schema.EVENT_TIMESTAMP: T0,
                "age_bucket": [3, 4],
                "country": ["US", "DE"],
            }
        ),
        schema.USER_ACTIVITY_FILE: pd.DataFrame(
            {
                schema.USER_ID: [u for u, _ in activity],
                schema.EVENT_TIMESTAMP: [t for _, t in activity],
                "interaction_count": [_stamp_id(t) for _, t in activity],
                "recent_items": [[_stamp_id(t), 100 + u] for u, t in activity],
                "seen_items": [[_stamp_id(t)] for _, t in activity],
            }
        ),
        schema.ITEM_FEATURES_FILE: pd.DataFrame(
            {
                schema.ITEM_ID: [i for i, _ in items],
                schema.EVENT_TIMESTAMP: [t for _, t in items],
                "category": ["c0" if i == 0 else "c1" for i, _ in items],
                "price_bucket": 1,
                "popularity": [_stamp_id(t) for _, t in items],
                "age_days": np.float32(1.0),
            }
        ),
    }


# (user, item, event time, expected activity snapshot day, expected item snapshot day)
LEAKAGE_ROWS = [
    # one second before the first snapshots
    (1, 0, T0 + 7 * DAY - timedelta(seconds=1), None, None),
    (1, 0, T0 + 7 * DAY, 7, 7),  # a snapshot at T covers interactions strictly before T: allowed
    (1, 1, T0 + 14 * DAY - timedelta(microseconds=1), 7, 7),
    (1, 1, T0 + 15 * DAY, 14, 14),
    (1, 1, T0 + 15 * DAY, 14, 14),  # duplicate entity row: kept, same answer
    (2, 0, T0 + 15 * DAY, None, 14),  # user 2's only activity snapshot is later: none
    # item rows have no TTL (written only on change: the newest stays current); activity 10 years
    (1, 0, T0 + 120 * DAY, 21, 14),
]


@pytest.fixture
def leakage_store(sqlite_store: str, layout: Layout):
    write_tables(layout.dataset_dir(DATASET) / schema.FEATURES_DIR, _leakage_tables())
    store.apply(layout=layout, dataset=DATASET)
    return feature_store.open_store(layout=layout, dataset=DATASET)


@pytest.mark.parametrize("engine", ["feast", "asof"])
def test_no_leakage(leakage_store, engine: str) -> None:
    """A feature value stamped after an interaction never appears in that interaction's row."""
    entity_df = pd.DataFrame(
        {
            schema.USER_ID: [r[0] for r in LEAKAGE_ROWS],
            schema.ITEM_ID: [r[1] for r in LEAKAGE_ROWS],
            schema.EVENT_TIMESTAMP: [r[2] for r in LEAKAGE_ROWS],
            "label": np.arange(len(LEAKAGE_ROWS)),
        }
    )
    frame = training.training_frame(leakage_store, entity_df, engine=engine)
    assert len(frame) == len(entity_df)
    assert frame["label"].tolist() == entity_df["label"].tolist()  # order and extra columns kept
    for i, (user, _item, ts, activity_day, item_day) in enumerate(LEAKAGE_ROWS):
        row = frame.iloc[i]
        event_day = (ts - T0) / DAY
        for column in ("interaction_count", "popularity"):
            if not pd.isna(row[column]):
                assert row[column] <= event_day, f"row {i}: {column} from a later snapshot"
        got_activity = None if pd.isna(row["interaction_count"]) else int(row["interaction_count"])
        got_item = None if pd.isna(row["popularity"]) else int(row["popularity"])
        assert (got_activity, got_item) == (activity_day, item_day), f"row {i}"
        if activity_day is None:
            assert row["recent_items"] is None and row["seen_items"] is None
        else:
            assert row["recent_items"].tolist() == [activity_day, 100 + user]
        assert row["age_bucket"] == (3 if user == 1 else 4)  # profile found despite other views


def test_real_data_never_sees_its_own_interaction(
    sqlite_store: str, layout: Layout, tiny_dataset: Path
) -> None:
    """On the synthetic data, the interacted item is never already in the row's seen_items and
    the count never exceeds the user's interactions strictly before the event."""
    store.apply(layout=layout, dataset=DATASET)
    fs = feature_store.open_store(layout=layout, dataset=DATASET)
    from cascade.data.synthetic import generate

    inter = generate(scale="tiny", seed=7).interactions  # what tiny_dataset's features came from
    sample = inter.sample(n=1500, random_state=0).rename(
        columns={schema.TIMESTAMP: schema.EVENT_TIMESTAMP}
    )
    frame = training.training_frame(
        fs, sample[[schema.USER_ID, schema.ITEM_ID, schema.EVENT_TIMESTAMP]]
    )
    before = [
        int(((inter[schema.USER_ID] == u) & (inter[schema.TIMESTAMP] < t)).sum())
        for u, t in zip(frame[schema.USER_ID], frame[schema.EVENT_TIMESTAMP], strict=True)
    ]
    counts = frame["interaction_count"].fillna(0).astype(int).tolist()
    assert all(c <= b for c, b in zip(counts, before, strict=True))
    # The joins do find rows (a bursty log leaves many events before their user's first
    # activity snapshot: the Two-Tower takes its history at event time instead).
    assert frame["interaction_count"].notna().sum() > 0
    assert frame["popularity"].notna().all() and frame["age_bucket"].notna().all()
    for item, seen in zip(frame[schema.ITEM_ID], frame["seen_items"], strict=True):
        assert seen is None or item not in set(seen.tolist())


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for column in LIST_COLUMNS:
        out[column] = [None if v is None else tuple(v.tolist()) for v in out[column]]
    return out


def test_feast_and_asof_engines_agree(
    sqlite_store: str, layout: Layout, tiny_dataset: Path
) -> None:
    from cascade.data.synthetic import generate

    store.apply(layout=layout, dataset=DATASET)
    fs = feature_store.open_store(layout=layout, dataset=DATASET)
    inter = generate(scale="tiny", seed=7).interactions
    entity_df = inter.sample(n=2000, random_state=1).rename(
        columns={schema.TIMESTAMP: schema.EVENT_TIMESTAMP}
    )
    # Edge cases: before any snapshot, long after the last one, a duplicated row.
    extra = entity_df.head(3).copy()
    extra[schema.EVENT_TIMESTAMP] = [
        pd.Timestamp("2020-01-01", tz="UTC"),
        pd.Timestamp("2030-01-01", tz="UTC"),
        entity_df[schema.EVENT_TIMESTAMP].iloc[0],
    ]
    entity_df = pd.concat([entity_df, extra], ignore_index=True)
    for service in (names.TWO_TOWER_SERVICE, names.ALS_SERVICE):
        via_feast = training.training_frame(fs, entity_df, feature_service=service, engine="feast")
        via_asof = training.training_frame(fs, entity_df, feature_service=service, engine="asof")
        pd.testing.assert_frame_equal(_comparable(via_feast), _comparable(via_asof))
        via_auto = training.training_frame(fs, entity_df, feature_service=service)
        pd.testing.assert_frame_equal(_comparable(via_auto), _comparable(via_asof))
    assert via_feast.columns.tolist()[-3:] == list(names.USER_ACTIVITY_FEATURES)


@pytest.mark.parametrize("engine", ["feast", "asof"])
def test_views_limit_the_join(leakage_store, engine: str) -> None:
    """The Two-Tower's rows join profile and item views only (history comes from the log)."""
    entity_df = pd.DataFrame(
        {schema.USER_ID: [1], schema.ITEM_ID: [0], schema.EVENT_TIMESTAMP: [T0 + 15 * DAY]}
    )
    frame = training.training_frame(
        leakage_store, entity_df, engine=engine, views=(names.USER_PROFILE, names.ITEM_FEATURES)
    )
    assert frame.columns.tolist() == [
        *entity_df.columns,
        *names.USER_PROFILE_FEATURES,
        *names.ITEM_FEATURE_NAMES,
    ]
    assert frame["popularity"].tolist() == [14] and frame["age_bucket"].tolist() == [3]
    with pytest.raises(ValueError, match="has no views"):
        training.training_frame(leakage_store, entity_df, views=("nope",))


def test_auto_engine_picks_asof_for_large_sources(
    leakage_store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    entity_df = pd.DataFrame(
        {schema.USER_ID: [1], schema.ITEM_ID: [0], schema.EVENT_TIMESTAMP: [T0 + 15 * DAY]}
    )
    caplog.set_level("INFO", logger=training.__name__)
    training.training_frame(leakage_store, entity_df)
    assert "via feast" in caplog.text and "via asof" not in caplog.text
    caplog.clear()
    monkeypatch.setattr(training, "AUTO_FEAST_MAX_SOURCE_ROWS", 0)
    frame = training.training_frame(leakage_store, entity_df)
    assert "via asof" in caplog.text and "via feast" not in caplog.text
    assert frame["interaction_count"].tolist() == [14]
