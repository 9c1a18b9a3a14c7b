"""Vectorised reading and checking of delimited interaction files, with line-accurate errors.

Files are parsed by pandas' C reader (fast at tens of millions of rows); only when a check fails
is the first offending row located, and its 1-based line number reported.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from cascade.data.errors import DataFormatError

# Unix seconds beyond this are probably milliseconds (year 5138): refuse rather than guess.
_MAX_UNIX_S = 1e11
_OFFSET = r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"


def check_not_empty(path: Path) -> None:
    """Raise DataFormatError for a file that has no content but whitespace."""
    with path.open("rb") as f:
        head = f.read(4096)
    if not head.strip():
        raise DataFormatError(path, 1, "empty file")


def read_delimited(
    path: Path, *, sep: str, header: bool, n_fields: int | None = None, what: str = ""
) -> pd.DataFrame:
    """Read ``path`` with pandas' C parser. Blank lines become all-NaN rows and are dropped later,
    so row ``i`` is on line ``i + 1`` (``i + 2`` with a header); ``attrs['first_line']`` says which.
    """
    check_not_empty(path)
    try:
        df = pd.read_csv(
            path,
            sep=sep,
            header=0 if header else None,
            skip_blank_lines=False,
            engine="c",
            encoding="utf-8",
            encoding_errors="replace",
            low_memory=False,
        )
    except pd.errors.ParserError as e:
        m = re.search(r"line (\d+), saw (\d+)", str(e))
        if m:
            expected = re.search(r"Expected (\d+) fields", str(e))
            exp = f"expected {expected.group(1)} fields" if expected else "wrong number of fields"
            raise DataFormatError(path, int(m.group(1)), f"{exp}, found {m.group(2)}") from None
        raise DataFormatError(path, 1, f"cannot parse: {e}") from None
    except pd.errors.EmptyDataError:
        raise DataFormatError(path, 1, "empty file") from None
    if header and df.empty:
        raise DataFormatError(path, 2, "no rows after the header")
    if n_fields is not None and df.shape[1] != n_fields:
        raise DataFormatError(
            path, 1, f"expected {n_fields} fields{what}, found {df.shape[1]} (wrong delimiter?)"
        )
    df.attrs["first_line"] = 2 if header else 1
    return df


def drop_blank(df: pd.DataFrame) -> pd.DataFrame:
    """Drop rows that were blank lines (every field NaN), keeping the original index."""
    blank = df.isna().all(axis=1).to_numpy()
    return df[~blank] if blank.any() else df


def _line(df: pd.DataFrame, row_mask: np.ndarray) -> tuple[int, int]:
    """(position, 1-based line) of the first True in ``row_mask``."""
    pos = int(np.flatnonzero(row_mask)[0])
    return pos, int(df.index[pos]) + int(df.attrs.get("first_line", 1))


def require_present(path: Path, df: pd.DataFrame, col: str | int, label: str) -> None:
    """Raise for the first row without a value in ``col``."""
    missing = df[col].isna().to_numpy()
    if missing.any():
        _, line = _line(df, missing)
        raise DataFormatError(path, line, f"missing value for {label}")


def integer_column(path: Path, df: pd.DataFrame, col: str | int, label: str) -> np.ndarray:
    """``df[col]`` as int64, or DataFormatError at the first non-integer value."""
    require_present(path, df, col, label)
    s = df[col]
    if pd.api.types.is_integer_dtype(s):
        ints: np.ndarray = s.to_numpy(np.int64)
        return ints
    num = pd.to_numeric(s, errors="coerce")
    values = num.to_numpy(np.float64)
    bad = np.isnan(values) | (values != np.floor(values))
    if bad.any():
        pos, line = _line(df, bad)
        raise DataFormatError(path, line, f"non-numeric {label} {str(s.iloc[pos])!r}")
    out: np.ndarray = values.astype(np.int64)
    return out


def float_column(path: Path, df: pd.DataFrame, col: str | int, label: str) -> np.ndarray:
    """``df[col]`` as float32, or DataFormatError at the first non-number."""
    require_present(path, df, col, label)
    s = df[col]
    values = pd.to_numeric(s, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        pos, line = _line(df, bad)
        raise DataFormatError(path, line, f"non-numeric {label} {str(s.iloc[pos])!r}")
    out: np.ndarray = values.astype(np.float32)
    return out


def timestamp_column(path: Path, df: pd.DataFrame, col: str | int) -> pd.Series:
    """Unix seconds or ISO 8601 strings as ``datetime64[us, UTC]`` (naive ISO counts as UTC)."""
    require_present(path, df, col, "timestamp")
    s = df[col]
    num = pd.to_numeric(s, errors="coerce").to_numpy(np.float64)
    is_num = np.isfinite(num)
    out = np.zeros(len(s), dtype="datetime64[us]")
    out[is_num] = (num[is_num] * 1e6).astype(np.int64).astype("datetime64[us]")
    bad = is_num & ((num < 0) | (num >= _MAX_UNIX_S))
    if (~is_num).any():
        text = s[~is_num].astype(str).str.strip()
        # pandas applies one row's UTC offset to later naive rows: parse the two kinds apart.
        aware = text.str.contains(_OFFSET, regex=True).to_numpy()
        parsed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
        for part in (aware, ~aware):
            if part.any():
                parsed[part] = pd.to_datetime(
                    text[part], utc=True, format="ISO8601", errors="coerce"
                )
        ok = parsed.notna().to_numpy()
        idx = np.flatnonzero(~is_num)
        out[idx[ok]] = parsed[ok].dt.tz_localize(None).to_numpy("datetime64[us]")
        bad[idx[~ok]] = True
    if bad.any():
        pos, line = _line(df, bad)
        raise DataFormatError(
            path, line, f"bad timestamp {str(s.iloc[pos])!r} (expected unix seconds or ISO 8601)"
        )
    return pd.Series(pd.to_datetime(out).tz_localize("UTC"), index=df.index)
