"""A data set in memory (:class:`Dataset`) and on disk (parquet files plus ``manifest.json``)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cascade.runtime.schema import (
    INTERACTION_COLUMNS,
    INTERACTIONS_FILE,
    ITEM_COLUMNS,
    ITEM_ID,
    ITEMS_FILE,
    MANIFEST_FILE,
    USER_COLUMNS,
    USERS_FILE,
)
from events.contract import EVENTS_DIR

logger = logging.getLogger(__name__)

# Column dtypes of the three tables, as schema.py documents them.
_TS = "datetime64[us, UTC]"
INTERACTION_DTYPES: dict[str, Any] = {
    "user_id": np.int64,
    "item_id": np.int64,
    "timestamp": _TS,
    "rating": np.float32,
}
USER_DTYPES: dict[str, Any] = {
    "user_id": np.int64,
    "age_bucket": np.int64,
    "country": object,
    "signup_date": _TS,
}
ITEM_DTYPES: dict[str, Any] = {
    "item_id": np.int64,
    "category": object,
    "price_bucket": np.int64,
    "release_date": _TS,
}


class DatasetNotFoundError(FileNotFoundError):
    """A data set folder is missing, or lacks one of its files."""


@dataclass
class Dataset:
    """Interactions plus user and item side tables, columns as in :mod:`cascade.runtime.schema`.

    ``source`` is the spec it came from (``synthetic:demo``, ``movielens:/path``, ...); ``scale``
    and ``seed`` are set for synthetic data only.
    """

    name: str
    interactions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    source: str
    scale: str | None = None
    seed: int | None = None
    extra: dict[str, Any] | None = None


def conform(df: pd.DataFrame, columns: tuple[str, ...], dtypes: dict[str, Any]) -> pd.DataFrame:
    """Return ``df`` with exactly ``columns`` in that order, cast to the schema dtypes."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"missing columns {missing}; have {list(df.columns)}")
    out = df.loc[:, list(columns)]
    casts = {c: dtypes[c] for c in columns if out[c].dtype != pd.api.types.pandas_dtype(dtypes[c])}
    if casts:
        out = out.astype(casts)
    return out.reset_index(drop=True)


def conform_dataset(ds: Dataset) -> Dataset:
    """Cast the three tables of ``ds`` to the schema in place and return it."""
    ds.interactions = conform(ds.interactions, INTERACTION_COLUMNS, INTERACTION_DTYPES)
    ds.users = conform(ds.users, USER_COLUMNS, USER_DTYPES)
    ds.items = conform(ds.items, ITEM_COLUMNS, ITEM_DTYPES)
    return ds


def sha256_file(path: Path, *, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_dataset(
    ds: Dataset, directory: Path, *, extra_manifest: dict[str, Any] | None = None
) -> Path:
    """Write ``ds`` into ``directory`` (replacing what is there) and return the folder.

    Files are written into a temporary sibling folder and moved into place at the end, so a
    folder with a ``manifest.json`` is always complete.
    """
    conform_dataset(ds)
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the data set is shared with the services
    log = directory / EVENTS_DIR
    try:
        ds.interactions.to_parquet(tmp / INTERACTIONS_FILE, index=False)
        ds.users.to_parquet(tmp / USERS_FILE, index=False)
        ds.items.to_parquet(tmp / ITEMS_FILE, index=False)
        manifest: dict[str, Any] = {
            "name": ds.name,
            "source": ds.source,
            "scale": ds.scale,
            "seed": ds.seed,
            "rows": {
                "interactions": len(ds.interactions),
                "users": len(ds.users),
                "items": len(ds.items),
            },
            "interactions_sha256": sha256_file(tmp / INTERACTIONS_FILE),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if ds.extra:
            manifest.update(ds.extra)
        if extra_manifest:
            manifest.update(extra_manifest)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        # The consumer's event log lives in the folder (events/, issue 17) and is not rebuilt:
        # it moves into the new folder.
        if log.is_dir():
            os.replace(log, tmp / EVENTS_DIR)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        if (tmp / EVENTS_DIR).is_dir() and not log.exists():  # never delete the log
            log.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / EVENTS_DIR, log)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote data set %s to %s", ds.name, directory)
    return directory


def read_manifest(directory: Path) -> dict[str, Any]:
    """The parsed ``manifest.json`` of a data set folder."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise DatasetNotFoundError(f"no data set at {directory}: {MANIFEST_FILE} is missing")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def read_side_tables(directory: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The users and items tables of a data set folder, without its interactions."""
    directory = Path(directory)
    missing = [f for f in (USERS_FILE, ITEMS_FILE) if not (directory / f).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"data set at {directory} is incomplete: missing {', '.join(missing)}"
        )
    users = conform(pd.read_parquet(directory / USERS_FILE), USER_COLUMNS, USER_DTYPES)
    items = conform(pd.read_parquet(directory / ITEMS_FILE), ITEM_COLUMNS, ITEM_DTYPES)
    return users, items


def item_category_names(items: pd.DataFrame, item_ids: np.ndarray) -> np.ndarray:
    """Each of ``item_ids``' category name from an items table, as a unicode array in that
    order ("" where the table has none): what the models store for the category filter."""
    table = items.drop_duplicates(ITEM_ID, keep="last").set_index(ITEM_ID)["category"]
    names = table.reindex(np.asarray(item_ids, dtype=np.int64))
    return np.asarray([str(c) if isinstance(c, str) and c else "" for c in names], dtype=str)


def read_dataset(directory: Path) -> Dataset:
    """Read a data set folder written by :func:`write_dataset`."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    missing = [
        f for f in (INTERACTIONS_FILE, USERS_FILE, ITEMS_FILE) if not (directory / f).is_file()
    ]
    if missing:
        raise DatasetNotFoundError(
            f"data set at {directory} is incomplete: missing {', '.join(missing)}"
        )
    ds = Dataset(
        name=str(manifest.get("name", directory.name)),
        interactions=pd.read_parquet(directory / INTERACTIONS_FILE),
        users=pd.read_parquet(directory / USERS_FILE),
        items=pd.read_parquet(directory / ITEMS_FILE),
        source=str(manifest.get("source", "")),
        scale=manifest.get("scale"),
        seed=manifest.get("seed"),
    )
    return conform_dataset(ds)
