"""MovieLens files: the three ratings formats and the optional user and movie tables beside them.

- ML-100K ``u.data``: ``user item rating timestamp``, tab-separated; ``u.user`` and ``u.item``
  (``|``-separated, 19 genre flags) beside it.
- ML-1M / ML-10M ``ratings.dat``: ``user::item::rating::timestamp``; ``users.dat`` (ML-1M) and
  ``movies.dat`` (``id::title::Genre|Genre``) beside it.
- ML-latest / ML-20M+ ``ratings.csv``: header ``userId,movieId,rating,timestamp``; ``movies.csv``.

The first listed genre becomes the item's category; ages become the 7 buckets of the synthetic
data (under 18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cascade.data.csvread import (
    drop_blank,
    float_column,
    integer_column,
    read_delimited,
    timestamp_column,
)
from cascade.data.errors import DataFormatError, DataSourceError

RATINGS_FILES = ("u.data", "ratings.dat", "ratings.csv")
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_AGE_EDGES = np.array([18, 25, 35, 45, 50, 56])
_YEAR = re.compile(r"\((\d{4})\)\s*$")


@dataclass
class SideTables:
    """What the optional user and movie files give: per-id values, any of them may be absent."""

    age_bucket: dict[int, int]
    category: dict[int, str]
    release: dict[int, pd.Timestamp]


def find_ratings(path: Path) -> Path:
    """The ratings file named by ``path``: the file itself, or the known name inside a folder."""
    if path.is_dir():
        for name in RATINGS_FILES:
            if (path / name).is_file():
                return path / name
        raise DataSourceError(f"{path}: no MovieLens ratings file ({', '.join(RATINGS_FILES)})")
    if not path.is_file():
        raise DataSourceError(f"{path}: no such file or folder")
    return path


def _kind(path: Path) -> str:
    if path.name == "u.data":
        return "100k"
    if path.suffix == ".dat":
        return "dat"
    if path.suffix == ".csv":
        return "csv"
    with path.open("r", encoding="utf-8", errors="replace") as f:
        first = f.readline()
    if "::" in first:
        return "dat"
    if "\t" in first:
        return "100k"
    return "csv"


def read_ratings(path: Path) -> pd.DataFrame:
    """user_id, item_id, timestamp, rating from any of the three MovieLens ratings formats."""
    kind = _kind(path)
    if kind == "100k":
        df = read_delimited(path, sep="\t", header=False, n_fields=4, what=" separated by tabs")
        cols: list[str | int] = [0, 1, 2, 3]
    elif kind == "dat":
        # pandas' C parser takes one-character separators only: split on ':' and check that
        # every other field (between the two colons of '::') is empty.
        df = read_delimited(path, sep=":", header=False, n_fields=7, what=" separated by '::'")
        for gap in (1, 3, 5):
            stray = df[gap].notna().to_numpy()
            if stray.any():
                line = int(np.flatnonzero(stray)[0]) + 1
                raise DataFormatError(path, line, "fields must be separated by '::'")
        cols = [0, 2, 4, 6]
    else:
        df = read_delimited(path, sep=",", header=True)
        names = ["userId", "movieId", "rating", "timestamp"]
        missing = [c for c in names if c not in df.columns]
        if missing:
            raise DataFormatError(
                path, 1, f"missing column {missing[0]!r} (header must be {','.join(names)})"
            )
        cols = list(names)
    df = drop_blank(df)
    return pd.DataFrame(
        {
            "user_id": integer_column(path, df, cols[0], "user id"),
            "item_id": integer_column(path, df, cols[1], "item id"),
            "timestamp": timestamp_column(path, df, cols[3]).array,
            "rating": float_column(path, df, cols[2], "rating"),
        }
    )


def _lines(path: Path, sep: str, min_fields: int) -> list[tuple[int, list[str]]]:
    """Non-blank lines of a small side file split on ``sep``, with their line numbers."""
    out = []
    with path.open("r", encoding="latin-1") as f:
        for n, raw in enumerate(f, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split(sep)
            if len(fields) < min_fields:
                raise DataFormatError(path, n, f"expected {min_fields} fields separated by {sep!r}")
            out.append((n, fields))
    return out


def _int(path: Path, n: int, value: str, label: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataFormatError(path, n, f"non-numeric {label} {value!r}") from None


def _year(title: str) -> pd.Timestamp | None:
    m = _YEAR.search(title)
    return pd.Timestamp(int(m.group(1)), 1, 1, tz="UTC") if m else None


def _age_bucket(age: int) -> int:
    return int(np.searchsorted(_AGE_EDGES, age, side="right"))


def read_side_tables(ratings: Path) -> SideTables:
    """User ages and movie genres/release dates from the files beside ``ratings``, if present."""
    d = ratings.parent
    side = SideTables(age_bucket={}, category={}, release={})
    if (d / "u.user").is_file():
        for n, f in _lines(d / "u.user", "|", 2):
            side.age_bucket[_int(d / "u.user", n, f[0], "user id")] = _age_bucket(
                _int(d / "u.user", n, f[1], "age")
            )
    if (d / "users.dat").is_file():
        for n, f in _lines(d / "users.dat", "::", 3):
            side.age_bucket[_int(d / "users.dat", n, f[0], "user id")] = _age_bucket(
                _int(d / "users.dat", n, f[2], "age")
            )
    if (d / "u.item").is_file():
        for n, f in _lines(d / "u.item", "|", 5 + len(ML100K_GENRES)):
            item = _int(d / "u.item", n, f[0], "item id")
            flags = f[-len(ML100K_GENRES) :]
            genre = next(
                (g for g, x in zip(ML100K_GENRES, flags, strict=True) if x == "1"), "unknown"
            )
            side.category[item] = genre
            released = pd.to_datetime(f[2], format="%d-%b-%Y", errors="coerce", utc=True)
            if pd.notna(released):
                side.release[item] = released
    for name, sep in (("movies.dat", "::"), ("movies.csv", ",")):
        path = d / name
        if not path.is_file():
            continue
        if sep == ",":
            with path.open("r", encoding="utf-8", errors="replace", newline="") as fh:
                rows = list(enumerate(csv.reader(fh), start=1))[1:]  # header
        else:
            rows = _lines(path, sep, 3)
        for n, f in rows:
            if not f:
                continue
            if len(f) < 3:
                raise DataFormatError(path, n, "expected 3 fields: id, title, genres")
            item = _int(path, n, f[0], "movie id")
            side.category[item] = (
                f[2].split("|")[0] if f[2] and not f[2].startswith("(") else "unknown"
            )
            year = _year(f[1])
            if year is not None:
                side.release[item] = year
    return side
