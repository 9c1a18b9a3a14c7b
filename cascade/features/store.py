"""Open Cascade's Feast store for one data set, register definitions, materialize.

The config is built in code, not read from ``feature_store.yaml``, so the online store is chosen
by the environment without editing files:

- ``REDIS_URL`` set (``redis://host:port/db``): Redis online store;
- otherwise SQLite at ``<feast_dir>/<dataset>/online.db``.

The registry is a file per data set (``<feast_dir>/<dataset>/registry.db``), because the
registry stores the parquet paths of that data set's sources. The offline store is ``file``
(Feast's Dask store over the parquet files). The Feast project is ``cascade`` unless env
``CASCADE_FEAST_PROJECT`` names another (tests do, since Redis keys include the project).

``materialize`` uses Feast's own materialization for small sources and, above
``AUTO_FEAST_MAX_SOURCE_ROWS``, the direct path in ``cascade.features.direct`` (same rows, same
online-store write, same registry bookkeeping; about 27x faster on the demo activity table).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Literal

from cascade.runtime import feature_names as names
from cascade.runtime import schema
from cascade.runtime.feature_store import (
    REDIS_URL_ENV,
    FeatureStoreError,
    open_store,
)
from cascade.runtime.paths import Layout
from cascade.runtime.redact import redact, redact_url

if TYPE_CHECKING:
    from feast import FeatureView

logger = logging.getLogger(__name__)

DEFINITIONS_FILE = Path(__file__).resolve().parents[2] / "feature_repo" / "definitions.py"
# Start of a "full" range: before any event in any data set we load.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Engine = Literal["auto", "feast", "direct"]
# "auto" materializes a view with Feast up to this many source rows, directly above: Feast took
# 263 s for the demo user_activity source (306K rows) on the shared 2-core machine.
AUTO_FEAST_MAX_SOURCE_ROWS = 50_000


@dataclass(frozen=True)
class ViewReport:
    """What one materialization moved for one feature view."""

    view: str
    start: datetime
    end: datetime
    rows: int  # entities written: the newest row per entity in [start, end]
    seconds: float
    engine: str  # "feast" or "direct"


@dataclass(frozen=True)
class MaterializeReport:
    """What ``materialize`` did: online store kind, per-view ranges and rows, wall time."""

    online_store: str
    full: bool
    seconds: float
    views: list[ViewReport] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(v.rows for v in self.views)


def features_dir(*, layout: Layout, dataset: str) -> Path:
    """The data set's folder of parquet offline sources."""
    return layout.dataset_dir(dataset) / schema.FEATURES_DIR


def _load_definitions_module() -> ModuleType:
    # feature_repo/ is not an installed package (Feast imports its files by path), so load it
    # the same way.
    if not DEFINITIONS_FILE.is_file():
        raise FeatureStoreError(f"Feast definitions not found at {DEFINITIONS_FILE}")
    spec = importlib.util.spec_from_file_location(
        "cascade_feature_repo_definitions", DEFINITIONS_FILE
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def require_features(*, layout: Layout, dataset: str) -> Path:
    """The data set's features folder; ``FeatureStoreError`` when a source file is missing."""
    folder = features_dir(layout=layout, dataset=dataset)
    missing = [f for f in names.VIEW_FILES.values() if not (folder / f).is_file()]
    if missing:
        raise FeatureStoreError(
            f"data set {dataset!r} has no feature files {missing} in {folder}; "
            f"run `cascade data` first"
        )
    return folder


def definitions(*, layout: Layout, dataset: str) -> list[object]:
    """The Feast objects for ``dataset``, from ``feature_repo/definitions.py``."""
    folder = require_features(layout=layout, dataset=dataset)
    result: list[object] = _load_definitions_module().definitions(folder)
    return result


def check_online_store() -> None:
    """Fail fast with ``FeatureStoreError`` when Redis is configured but does not answer."""
    url = os.environ.get(REDIS_URL_ENV)
    if not url:
        return
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise FeatureStoreError(
            f"Redis at {REDIS_URL_ENV}={redact_url(url)} is unreachable: {redact(str(exc))}"
        ) from exc
    finally:
        client.close()


def apply(*, layout: Layout, dataset: str, project: str | None = None) -> None:
    """Register the entities, feature views and services of ``dataset`` in its registry."""
    objects = definitions(layout=layout, dataset=dataset)
    check_online_store()
    store = open_store(layout=layout, dataset=dataset, project=project)
    store.apply(objects)  # type: ignore[arg-type]
    logger.info(
        "applied %d Feast objects for %s (project %s)", len(objects), dataset, store.project
    )


def _source_rows(view: FeatureView) -> int:
    import pyarrow.parquet as pq

    return int(pq.read_metadata(view.batch_source.path).num_rows)  # type: ignore[union-attr]


def materialize(
    *,
    layout: Layout,
    dataset: str,
    end: datetime | None = None,
    full: bool = False,
    views: list[str] | None = None,
    project: str | None = None,
    engine: Engine = "auto",
) -> MaterializeReport:
    """Move feature rows up to ``end`` (default now) from parquet into the online store.

    Incremental by default: each view continues from the end of its last run recorded in the
    registry (``materialize_incremental``). A view never materialized, or every view when
    ``full``, gets the whole range from 1970: an emptied Redis needs that, because the
    registry still remembers the last end. The newest row per entity in the range is written.
    ``views`` limits the run to those feature views (default: all).

    ``engine``: ``feast`` runs Feast's ``materialize`` / ``materialize_incremental``;
    ``direct`` computes the same rows with pyarrow and writes them through Feast
    (``cascade.features.direct``: minutes faster on demo data); ``auto`` picks ``feast`` for
    sources up to ``AUTO_FEAST_MAX_SOURCE_ROWS`` rows, ``direct`` above.
    """
    from feast import FeatureView

    from cascade.features import direct

    require_features(layout=layout, dataset=dataset)
    check_online_store()
    store = open_store(layout=layout, dataset=dataset, project=project)
    end = (end or datetime.now(UTC)).astimezone(UTC)
    registered = [v for v in store.list_feature_views() if isinstance(v, FeatureView)]
    if not registered:
        raise FeatureStoreError(f"no feature views registered for {dataset!r}; run apply first")
    if views is not None:
        unknown = set(views) - {v.name for v in registered}
        if unknown:
            raise FeatureStoreError(f"unknown feature views {sorted(unknown)}")
        registered = [v for v in registered if v.name in views]
    reports: list[ViewReport] = []
    started = time.perf_counter()
    for view in registered:
        last = view.most_recent_end_time
        start = EPOCH if full or last is None else last.astimezone(UTC)
        if start > end:
            logger.info("%s: already materialized up to %s, nothing to do", view.name, start)
            continue
        view_started = time.perf_counter()
        chosen = engine
        if engine == "auto":
            chosen = "feast" if _source_rows(view) <= AUTO_FEAST_MAX_SOURCE_ROWS else "direct"
        if chosen == "direct":
            rows = direct.write_latest(store, view, start, end)
        elif chosen == "feast":
            path = Path(view.batch_source.path)  # type: ignore[union-attr]
            rows = direct.latest_rows(path, view.join_keys[0], start, end).num_rows
            if start == EPOCH:
                store.materialize(start_date=start, end_date=end, feature_views=[view.name])
            else:
                store.materialize_incremental(end_date=end, feature_views=[view.name])
        else:
            raise ValueError(f"unknown engine {engine!r}")
        reports.append(
            ViewReport(
                view=view.name,
                start=start,
                end=end,
                rows=rows,
                seconds=time.perf_counter() - view_started,
                engine=chosen,
            )
        )
    seconds = time.perf_counter() - started
    report = MaterializeReport(
        online_store=store.config.online_store.type, full=full, seconds=seconds, views=reports
    )
    logger.info("materialized %d rows into %s in %.2fs", report.rows, report.online_store, seconds)
    return report
