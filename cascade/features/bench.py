"""Materialization benchmark into Redis, for ``make bench-offline``.

``bench_materialize`` registers the data set under a separate Feast project (``cascade_bench``
by default, so the real project's keys are untouched), deletes that project's keys, runs a full
materialization of the user views (or all views), and measures wall time, rows and the Redis
memory the keys take: the ``used_memory`` delta from ``INFO memory`` and an estimate from
``MEMORY USAGE`` sampled on up to ``sample`` keys. The keys are deleted afterwards unless
``keep``. Needs ``REDIS_URL``.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

from cascade.features import store
from cascade.runtime import feature_names as names
from cascade.runtime import feature_store
from cascade.runtime.paths import Layout

logger = logging.getLogger(__name__)

BENCH_PROJECT = "cascade_bench"
USER_VIEWS = [names.USER_PROFILE, names.USER_ACTIVITY]


def _project_keys(client: Any, project: str) -> list[bytes]:
    # Feast's Redis keys end with the project name (serialized entity key + project).
    return list(client.scan_iter(match=b"*" + project.encode(), count=10_000))


def _delete(client: Any, keys: list[bytes]) -> None:
    for i in range(0, len(keys), 10_000):
        client.delete(*keys[i : i + 10_000])


def bench_materialize(
    *,
    layout: Layout,
    dataset: str,
    views: list[str] | None = None,
    project: str = BENCH_PROJECT,
    sample: int = 2_000,
    keep: bool = False,
    engine: store.Engine = "auto",
) -> dict[str, Any]:
    """Full materialization of ``views`` (default: user views) into Redis; figures as a dict.

    ``engine`` as in ``store.materialize``. Keys: dataset, views, rows, seconds, per_view ({view: {rows, seconds}}), redis_keys,
    redis_used_memory_delta_bytes, redis_sampled_bytes (mean MEMORY USAGE x keys),
    bytes_per_key.
    """
    import redis

    url = os.environ.get(feature_store.REDIS_URL_ENV)
    if not url:
        raise feature_store.FeatureStoreError(
            "bench_materialize needs REDIS_URL (it measures Redis)"
        )
    views = views or USER_VIEWS
    client: Any = redis.Redis.from_url(url, socket_timeout=30)
    try:
        _delete(client, _project_keys(client, project))
        store.apply(layout=layout, dataset=dataset, project=project)
        before = int(client.info("memory")["used_memory"])
        report = store.materialize(
            layout=layout, dataset=dataset, full=True, views=views, project=project, engine=engine
        )
        after = int(client.info("memory")["used_memory"])
        keys = _project_keys(client, project)
        picked = random.Random(0).sample(keys, min(sample, len(keys)))
        sizes = [int(client.memory_usage(k, samples=0) or 0) for k in picked]
        per_key = sum(sizes) / len(sizes) if sizes else 0.0
        result: dict[str, Any] = {
            "dataset": dataset,
            "views": views,
            "rows": report.rows,
            "seconds": round(report.seconds, 3),
            "per_view": {
                v.view: {"rows": v.rows, "seconds": round(v.seconds, 3), "engine": v.engine}
                for v in report.views
            },
            "redis_keys": len(keys),
            "redis_used_memory_delta_bytes": after - before,
            "redis_sampled_bytes": int(per_key * len(keys)),
            "bytes_per_key": round(per_key, 1),
        }
        if not keep:
            _delete(client, keys)
        logger.info("bench materialize %s: %s", dataset, result)
        return result
    finally:
        client.close()


if __name__ == "__main__":
    import json
    import sys

    logging.basicConfig(level=logging.INFO)
    name = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CASCADE_DATASET", "demo")
    print(json.dumps(bench_materialize(layout=Layout.from_env(), dataset=name), indent=2))
