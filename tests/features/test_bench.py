"""bench_materialize on real Redis: figures present, keys cleaned up."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cascade.features import bench
from cascade.runtime import schema
from cascade.runtime.paths import Layout
from tests.features.conftest import DATASET, REDIS_URL, delete_project_keys

pytestmark = pytest.mark.integration


def test_bench_materialize(
    redis_store: str, project: str, layout: Layout, tiny_dataset: Path
) -> None:
    result = bench.bench_materialize(
        layout=layout, dataset=DATASET, project=project, engine="direct"
    )
    users = pd.read_parquet(tiny_dataset / schema.USER_PROFILE_FILE)[schema.USER_ID].nunique()
    assert result["redis_keys"] == users
    assert result["per_view"]["user_activity"]["engine"] == "direct"
    assert result["redis_sampled_bytes"] > 0 and result["bytes_per_key"] > 0
    assert result["seconds"] > 0
    assert delete_project_keys(REDIS_URL, project) == 0  # bench removed its keys
