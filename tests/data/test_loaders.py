"""Loaders on small fixture files in every supported format, written here into tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cascade.data.errors import DataFormatError, DataSourceError
from cascade.data.loaders import load
from cascade.runtime.schema import INTERACTION_COLUMNS, ITEM_COLUMNS, USER_COLUMNS

# (user, item, rating, unix seconds)
ROWS = [
    (1, 10, 5.0, 978300760),
    (1, 20, 3.0, 978300800),
    (2, 10, 4.0, 978301000),
    (2, 30, 1.0, 978300900),
    (3, 20, 4.5, 978302000),
]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _check(ds, *, n=None):
    n = len(ROWS) if n is None else n
    assert tuple(ds.interactions.columns) == INTERACTION_COLUMNS
    assert tuple(ds.users.columns) == USER_COLUMNS
    assert tuple(ds.items.columns) == ITEM_COLUMNS
    i = ds.interactions
    assert len(i) == n
    assert i.user_id.dtype == np.int64 and i.rating.dtype == np.float32
    assert str(i.timestamp.dtype) == "datetime64[us, UTC]"
    assert i.timestamp.is_monotonic_increasing
    assert set(ds.users.user_id) == set(i.user_id) and set(ds.items.item_id) == set(i.item_id)
    # Each user signs up at their first interaction when no profile says otherwise.
    first = i.groupby("user_id").timestamp.min()
    assert (ds.users.set_index("user_id").signup_date == first).all()


def _expected():
    df = pd.DataFrame(ROWS, columns=["user_id", "item_id", "rating", "ts"])
    df["timestamp"] = pd.to_datetime(df.ts, unit="s", utc=True)
    return df.sort_values("timestamp", ignore_index=True)


def test_movielens_100k_with_side_tables(tmp_path):
    d = tmp_path / "ml-100k"
    _write(d / "u.data", "".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in ROWS))
    _write(d / "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n3|17|M|writer|32067\n")
    flags = ["0"] * 19
    comedy = flags.copy()
    comedy[5] = "1"
    action = flags.copy()
    action[1] = "1"
    _write(
        d / "u.item",
        f"10|Toy Story (1995)|01-Jan-1995||http://x|{'|'.join(comedy)}\n"
        f"20|GoldenEye (1995)|01-Jan-1995||http://y|{'|'.join(action)}\n",
    )
    ds = load(f"movielens:{d}")
    _check(ds)
    assert ds.source == f"movielens:{d}" and ds.name == "ml-100k"
    users = ds.users.set_index("user_id")
    assert users.loc[1, "age_bucket"] == 1 and users.loc[2, "age_bucket"] == 5
    assert users.loc[3, "age_bucket"] == 0 and (users.country == "unknown").all()
    items = ds.items.set_index("item_id")
    assert items.loc[10, "category"] == "Comedy" and items.loc[20, "category"] == "Action"
    assert items.loc[30, "category"] == "unknown" and items.loc[30, "price_bucket"] == -1
    assert items.loc[10, "release_date"] == pd.Timestamp("1995-01-01", tz="UTC")
    np.testing.assert_array_equal(ds.interactions.item_id, _expected().item_id)


def test_movielens_1m_dat_with_users_and_movies(tmp_path):
    d = tmp_path / "ml-1m"
    _write(d / "ratings.dat", "".join(f"{u}::{i}::{int(r)}::{t}\n" for u, i, r, t in ROWS))
    _write(d / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    _write(
        d / "movies.dat", "10::Toy Story (1995)::Animation|Children's\n20::Heat (2005)::Action\n"
    )
    ds = load(f"movielens:{d / 'ratings.dat'}")
    _check(ds)
    users = ds.users.set_index("user_id")
    assert users.loc[1, "age_bucket"] == 0 and users.loc[2, "age_bucket"] == 6
    assert users.loc[3, "age_bucket"] == -1
    items = ds.items.set_index("item_id")
    assert items.loc[10, "category"] == "Animation"
    assert items.loc[10, "release_date"] == pd.Timestamp("1995-01-01", tz="UTC")
    # Released "2005" but rated in 2001: the release date moves back to the first rating.
    assert items.loc[20, "release_date"] == ds.interactions.query("item_id == 20").timestamp.min()


def test_movielens_latest_csv_with_threshold(tmp_path):
    d = tmp_path / "ml-latest-small"
    body = "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ROWS)
    _write(d / "ratings.csv", "userId,movieId,rating,timestamp\n" + body)
    _write(d / "movies.csv", 'movieId,title,genres\n10,"Toy Story, The (1995)",Comedy|Drama\n')
    ds = load(f"movielens:{d}")
    _check(ds)
    assert ds.items.set_index("item_id").loc[10, "category"] == "Comedy"
    positive = load(f"movielens:{d}", positive_threshold=4.0)
    _check(positive, n=3)
    assert (positive.interactions.rating >= 4.0).all()
    assert sorted(positive.interactions.rating.tolist()) == [4.0, 4.5, 5.0]


@pytest.mark.parametrize("with_rating", [True, False])
def test_generic_csv_unix_and_iso_timestamps(tmp_path, with_rating):
    header = "user_id,item_id,timestamp" + (",rating" if with_rating else "")
    lines = []
    for n, (u, i, r, t) in enumerate(ROWS):
        ts = str(t) if n % 2 else pd.Timestamp(t, unit="s", tz="UTC").isoformat()
        lines.append(f"{u},{i},{ts}" + (f",{r}" if with_rating else ""))
    path = _write(tmp_path / "events.csv", header + "\n" + "\n".join(lines) + "\n")
    ds = load(f"csv:{path}")
    _check(ds)
    exp = _expected()
    pd.testing.assert_series_equal(
        ds.interactions.timestamp, exp.timestamp.astype("datetime64[us, UTC]"), check_names=False
    )
    if with_rating:
        np.testing.assert_array_equal(ds.interactions.rating, exp.rating.astype(np.float32))
    else:
        assert (ds.interactions.rating == 1.0).all()
        with pytest.raises(DataFormatError, match="no rating column"):
            load(f"csv:{path}", positive_threshold=3)


def test_iso_timestamp_with_offset_is_converted_to_utc(tmp_path):
    path = _write(
        tmp_path / "e.csv",
        "user_id,item_id,timestamp\n1,2,2024-03-01T12:00:00+02:00\n1,3,2024-03-01 11:00:00\n"
        "2,3,2024-03-02\n2,4,2024-03-02T00:30:00.5-01:00\n",
    )
    ts = load(f"csv:{path}").interactions.timestamp
    assert list(ts) == [
        pd.Timestamp("2024-03-01T10:00:00Z"),
        pd.Timestamp("2024-03-01T11:00:00Z"),
        pd.Timestamp("2024-03-02T00:00:00Z"),
        pd.Timestamp("2024-03-02T01:30:00.5Z"),
    ]


def _bad(path: Path, spec_kind: str, *, line: int, problem: str):
    with pytest.raises(DataFormatError) as info:
        load(f"{spec_kind}:{path}")
    err = info.value
    assert err.line == line and err.path == path
    assert str(path) in str(err) and f"line {line}" in str(err)
    assert problem in str(err)


def test_missing_column(tmp_path):
    path = _write(tmp_path / "a.csv", "user_id,item_id,rating\n1,2,5\n")
    _bad(path, "csv", line=1, problem="missing column 'timestamp'")
    path = _write(tmp_path / "ml" / "ratings.csv", "userId,movieId,timestamp\n1,2,3\n")
    _bad(path, "movielens", line=1, problem="missing column 'rating'")


def test_missing_field_in_a_row(tmp_path):
    path = _write(tmp_path / "u.data", "1\t2\t5\t978300760\n1\t3\t4\n")
    _bad(path, "movielens", line=2, problem="missing value for timestamp")


def test_extra_field_in_a_row(tmp_path):
    path = _write(tmp_path / "b.csv", "user_id,item_id,timestamp\n1,2,3\n1,2,3\n4,5,6,7\n")
    _bad(path, "csv", line=4, problem="expected 3 fields, found 4")


def test_non_numeric_id(tmp_path):
    path = _write(tmp_path / "c.csv", "user_id,item_id,timestamp\n1,2,3\n1,2,3\nbob,2,3\n")
    _bad(path, "csv", line=4, problem="non-numeric user_id 'bob'")
    path = _write(tmp_path / "ml1m" / "ratings.dat", "1::2::5::978300760\n1::x9::5::978300760\n")
    _bad(path, "movielens", line=2, problem="non-numeric item id 'x9'")


def test_bad_timestamp(tmp_path):
    path = _write(tmp_path / "d.csv", "user_id,item_id,timestamp\n1,2,2024-01-01\n1,3,yesterday\n")
    _bad(path, "csv", line=3, problem="bad timestamp 'yesterday'")


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path, content):
    path = _write(tmp_path / "u.data", content)
    _bad(path, "movielens", line=1, problem="empty file")
    path = _write(tmp_path / "e.csv", content)
    _bad(path, "csv", line=1, problem="empty file")


def test_header_only(tmp_path):
    path = _write(tmp_path / "h.csv", "user_id,item_id,timestamp\n")
    _bad(path, "csv", line=2, problem="no rows after the header")


def test_wrong_delimiter(tmp_path):
    path = _write(tmp_path / "ratings.dat", "1\t2\t5\t978300760\n")
    _bad(path, "movielens", line=1, problem="separated by '::'")
    path = _write(tmp_path / "x" / "u.data", "1,2,5,978300760\n")
    _bad(path, "movielens", line=1, problem="wrong delimiter")


def test_bad_specs(tmp_path):
    with pytest.raises(DataSourceError, match="bad data spec"):
        load("parquet:/x")
    with pytest.raises(DataSourceError, match="no such file"):
        load(f"csv:{tmp_path / 'missing.csv'}")
    with pytest.raises(DataSourceError, match="no MovieLens ratings file"):
        load(f"movielens:{tmp_path}")
    with pytest.raises(DataSourceError, match="unknown synthetic scale"):
        load("synthetic:huge")


def test_synthetic_spec_with_threshold():
    ds = load("synthetic:tiny", positive_threshold=4)
    assert (ds.interactions.rating >= 4).all() and len(ds.interactions) > 1000
