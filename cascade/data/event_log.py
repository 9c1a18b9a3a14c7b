"""The consumer's offline event log, read back as training data.

``read_event_log`` reads every part file under ``<data set>/events/`` (layout in
``events.contract``) and keeps one row per ``event_id`` (a redelivered batch can be written
twice). ``merge_event_log`` adds the log's consumption events (``events.contract.
is_consumption``: click, view, purchase, rating >= POSITIVE_RATING; never impressions) to a data
set's interactions, so the next ``cascade data`` build computes features and event-time
histories from them with the one definition (``cascade.data.history``), as the online state did.

- ``rating``: the event's value for ratings; ``POSITIVE_RATING`` for click, view and purchase
  (positive feedback, at the bar a rating must reach), so ``--positive-threshold`` applies
  alike.
- Items missing from the items table are left out (the catalogue has no attributes for them;
  models ignore them until the catalogue knows them), and counted in the log line. Users need
  no profile row: a missing profile reads as unknown (age -1, country 0) downstream.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from cascade.data.dataset import Dataset
from cascade.runtime.schema import ITEM_ID, RATING, TIMESTAMP, USER_ID
from events.contract import OFFLINE_COLUMNS, POSITIVE_RATING, is_consumption

logger = logging.getLogger(__name__)

_TS = "datetime64[us, UTC]"


def part_files(directory: Path) -> list[Path]:
    """The log's part files, sorted (temporary files of a write in progress excluded)."""
    return sorted(Path(directory).glob("date=*/part-*.parquet"))


def log_fingerprint(directory: Path) -> str | None:
    """A digest of the log's files (names and sizes); None without a log. A new file changes
    it, so a data set built before that file is out of date."""
    files = part_files(directory)
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(directory)}:{f.stat().st_size}\n".encode())
    return h.hexdigest()


def read_event_log(directory: Path) -> pd.DataFrame:
    """Every event of the log once (first row per ``event_id`` by stream sequence), sorted by
    timestamp; ``OFFLINE_COLUMNS``, ``timestamp`` as UTC microseconds."""
    files = part_files(directory)
    if not files:
        empty = {c: pd.Series(dtype=object) for c in OFFLINE_COLUMNS}
        frame = pd.DataFrame(empty)
        frame[TIMESTAMP] = frame[TIMESTAMP].astype(_TS)
        return frame
    frame = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    frame = frame.sort_values(["stream_seq"], kind="stable")
    frame = frame.drop_duplicates("event_id", keep="first")
    frame[TIMESTAMP] = frame[TIMESTAMP].astype(_TS)
    return frame.sort_values([TIMESTAMP, "stream_seq"], kind="stable").reset_index(drop=True)


def consumption_interactions(log: pd.DataFrame) -> pd.DataFrame:
    """The log's consumption events as interactions (user_id, item_id, timestamp, rating)."""
    values = log["value"].to_numpy(dtype=np.float64, na_value=np.nan)
    keep = np.array(
        [
            is_consumption(t, None if np.isnan(v) else float(v))
            for t, v in zip(log["type"], values, strict=True)
        ],
        dtype=bool,
    )
    rating = np.where(log["type"].to_numpy() == "rating", values, POSITIVE_RATING)
    return pd.DataFrame(
        {
            USER_ID: log[USER_ID].to_numpy(np.int64)[keep],
            ITEM_ID: log[ITEM_ID].to_numpy(np.int64)[keep],
            TIMESTAMP: log[TIMESTAMP].to_numpy()[keep],
            RATING: rating[keep].astype(np.float32),
        }
    ).astype({TIMESTAMP: _TS})


def merge_event_log(
    ds: Dataset, directory: Path, *, positive_threshold: float | None = None
) -> tuple[Dataset, int]:
    """``ds`` with the log's consumption events of known items added to its interactions, and
    how many were added (see the module docstring)."""
    log = read_event_log(directory)
    if log.empty:
        return ds, 0
    extra = consumption_interactions(log)
    known = extra[ITEM_ID].isin(ds.items[ITEM_ID])
    if positive_threshold is not None:
        known &= extra[RATING] >= positive_threshold
    unknown_items = int((~extra[ITEM_ID].isin(ds.items[ITEM_ID])).sum())
    extra = extra[known]
    logger.info(
        "event log %s: %d events, %d consumption events added, %d of unknown items left out",
        directory,
        len(log),
        len(extra),
        unknown_items,
    )
    ds.interactions = pd.concat([ds.interactions, extra], ignore_index=True)
    return ds, len(extra)
