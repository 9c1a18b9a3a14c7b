"""The synthetic generator in its default profile: determinism, schema, power-law popularity,
time and planted taste. What the profiles add or keep: tests/data/test_profiles.py."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cascade.data.dataset import read_dataset, write_dataset
from cascade.data.synthetic import SCALES, Scale, generate
from cascade.runtime.schema import INTERACTION_COLUMNS, ITEM_COLUMNS, MANIFEST_FILE, USER_COLUMNS


@pytest.fixture(scope="module")
def tiny():
    return generate(scale="tiny", seed=7)


def test_same_seed_same_data_other_seed_other_data(tiny):
    again = generate(scale="tiny", seed=7)
    pd.testing.assert_frame_equal(tiny.interactions, again.interactions)
    pd.testing.assert_frame_equal(tiny.users, again.users)
    pd.testing.assert_frame_equal(tiny.items, again.items)
    other = generate(scale="tiny", seed=8)
    assert not tiny.interactions.equals(other.interactions)


def test_columns_and_dtypes_follow_the_schema(tiny):
    assert tuple(tiny.interactions.columns) == INTERACTION_COLUMNS
    assert tuple(tiny.users.columns) == USER_COLUMNS
    assert tuple(tiny.items.columns) == ITEM_COLUMNS
    i = tiny.interactions
    assert i.user_id.dtype == np.int64 and i.item_id.dtype == np.int64
    assert str(i.timestamp.dtype) == "datetime64[us, UTC]"
    assert i.rating.dtype == np.float32
    assert str(tiny.users.signup_date.dtype) == "datetime64[us, UTC]"
    assert str(tiny.items.release_date.dtype) == "datetime64[us, UTC]"
    assert tiny.users.age_bucket.dtype == np.int64 and tiny.items.price_bucket.dtype == np.int64


def test_tiny_sizes_and_referential_integrity(tiny):
    sc = SCALES["tiny"]
    assert len(tiny.users) == sc.users and len(tiny.items) == sc.items
    assert 5_000 <= len(tiny.interactions) <= sc.interactions
    assert tiny.interactions.user_id.isin(tiny.users.user_id).all()
    assert tiny.interactions.item_id.isin(tiny.items.item_id).all()
    assert not tiny.interactions.duplicated(["user_id", "item_id"]).any()
    assert tiny.interactions.rating.between(1, 5).all()


def test_interactions_follow_signup_and_release_within_180_days(tiny):
    i = tiny.interactions
    signup = i.user_id.map(tiny.users.set_index("user_id").signup_date)
    release = i.item_id.map(tiny.items.set_index("item_id").release_date)
    assert (i.timestamp >= signup).all() and (i.timestamp >= release).all()
    assert (i.timestamp.max() - i.timestamp.min()).days <= 180


def test_popularity_is_long_tailed(monkeypatch):
    # tiny is too dense (300 users over 200 items) to show a tail; a sparser small scale does.
    monkeypatch.setitem(
        SCALES, "sparse", Scale(users=2000, items=1000, interactions=40_000, clusters=10)
    )
    ds = generate(scale="sparse")
    counts = ds.interactions.item_id.value_counts().to_numpy()
    top = counts[: len(ds.items) // 10].sum()
    assert top / counts.sum() > 0.4
    activity = ds.interactions.user_id.value_counts().to_numpy()
    assert activity.max() > 5 * np.median(activity)  # heavy-tailed activity


def test_planted_taste_personal_beats_global(tiny):
    """A user's own past categories predict their next items far better than global ones."""
    i = tiny.interactions.merge(tiny.items[["item_id", "category"]], on="item_id")
    i = i.sort_values("timestamp")
    last = i.groupby("user_id").tail(3)
    past = i.drop(last.index)
    fav = past.groupby("user_id").category.agg(lambda s: s.value_counts().index[0])
    overall = past.category.value_counts().index[0]
    hit_personal = (last.category.to_numpy() == last.user_id.map(fav).to_numpy()).mean()
    hit_global = (last.category == overall).mean()
    assert hit_personal > 1.5 * hit_global


def test_write_read_round_trip(tmp_path, tiny):
    out = write_dataset(tiny, tmp_path / "tiny")
    back = read_dataset(out)
    pd.testing.assert_frame_equal(back.interactions, tiny.interactions)
    pd.testing.assert_frame_equal(back.users, tiny.users)
    pd.testing.assert_frame_equal(back.items, tiny.items)
    assert back.scale == "tiny" and back.seed == 7 and back.source == "synthetic:tiny"
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert "interactions_sha256" in manifest and "created_at" in manifest
    assert manifest["profile"] == "sessions"


def test_read_dataset_names_the_missing_file(tmp_path, tiny):
    from cascade.data.dataset import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError, match=r"manifest\.json"):
        read_dataset(tmp_path / "nothing")
    out = write_dataset(tiny, tmp_path / "tiny")
    (out / "items.parquet").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"items\.parquet"):
        read_dataset(out)


def test_unknown_scale():
    with pytest.raises(ValueError, match="unknown scale"):
        generate(scale="huge")
