"""A real consumer stack for the events tests: the tiny data set's Feast store materialized into
a real Redis under a fresh project, a nats-server, and ``python -m events`` as a process."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cascade.data.features import build_feature_tables, user_state, write_feature_tables
from cascade.runtime import feature_names as names
from cascade.runtime.paths import Layout
from cascade.runtime.procs import ManagedProcess, free_port
from cascade.runtime.schema import ITEM_ID, TIMESTAMP, USER_ID
from events.contract import Event
from events.state import ts_us

ROOT = Path(__file__).resolve().parents[2]
DATASET = "tiny"


@dataclass
class Stack:
    home: Path
    redis_url: str
    nats_url: str
    project: str
    interactions: pd.DataFrame
    items: np.ndarray
    port: int = field(default_factory=free_port)
    consumer: ManagedProcess | None = None

    @property
    def layout(self) -> Layout:
        return Layout(home=self.home)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "CASCADE_HOME": str(self.home),
                "CASCADE_DATASET": DATASET,
                "CASCADE_FEAST_PROJECT": self.project,
                "REDIS_URL": self.redis_url,
                "EVENTS_NATS_URL": self.nats_url,
                "EVENTS_PORT": str(self.port),
                "EVENTS_PARTITIONS": "4",
                "EVENTS_OFFLINE_FLUSH_S": "0.5",
                "EVENTS_ACK_WAIT_S": "5",  # redeliveries after a crash come within seconds
                "EVENTS_FETCH_WAIT_S": "0.05",
                "EVENTS_RETRY_MAX_S": "0.5",
                "EVENTS_LAG_POLL_S": "0.5",
                "PYTHONPATH": str(ROOT),
            }
        )
        env.update(extra)
        return env

    def start_consumer(self, **extra: str) -> ManagedProcess:
        n = len(list(self.home.glob("consumer*.log")))
        self.consumer = ManagedProcess(
            "events",
            [sys.executable, "-m", "events"],
            log_path=self.home / f"consumer{n}.log",
            env=self.env(**extra),
            cwd=ROOT,
        )
        self.consumer.start()
        self.consumer.wait_ready(f"http://127.0.0.1:{self.port}/readyz", timeout=90)
        return self.consumer

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def stop(self) -> None:
        if self.consumer is not None:
            self.consumer.stop(grace=15)


def build_store(
    home: Path, redis_url: str, project: str, mp: pytest.MonkeyPatch
) -> tuple[pd.DataFrame, np.ndarray]:
    """Write the tiny data set's feature tables, apply them and materialize into Redis (in
    this process: env vars, set through ``mp``, point Feast at the Redis and project)."""
    from cascade.data.synthetic import generate
    from cascade.features import store

    mp.setenv("REDIS_URL", redis_url)
    mp.setenv(names.PROJECT_ENV, project)
    layout = Layout(home=home)
    ds = generate(scale="tiny", seed=7)
    write_feature_tables(build_feature_tables(ds), layout.dataset_dir(DATASET))
    ds.interactions.to_parquet(layout.dataset_dir(DATASET) / "interactions.parquet")
    store.apply(layout=layout, dataset=DATASET)
    store.materialize(layout=layout, dataset=DATASET, full=True)
    return ds.interactions, ds.items[ITEM_ID].to_numpy()


def new_project() -> str:
    return f"cascade_test_{uuid.uuid4().hex[:10]}"


def expected_state(
    base: pd.DataFrame, events: Iterable[Event]
) -> dict[int, tuple[int, list[int], list[int]]]:
    """``user_state`` of the offline interactions plus the consumed events: what a replay of
    the whole log computes."""
    consumed = [e for e in events if e.consumed]
    extra = pd.DataFrame(
        {
            USER_ID: np.array([e.user_id for e in consumed], dtype=np.int64),
            ITEM_ID: np.array([e.item_id for e in consumed], dtype=np.int64),
            TIMESTAMP: pd.to_datetime([ts_us(e.timestamp) for e in consumed], unit="us", utc=True),
        }
    )
    frame = pd.concat([base[[USER_ID, ITEM_ID, TIMESTAMP]], extra], ignore_index=True)
    return {
        int(r.user_id): (
            int(r.interaction_count),
            [int(i) for i in r.recent_items],
            [int(i) for i in r.seen_items],
        )
        for r in user_state(frame).itertuples()
    }


class OnlineReader:
    """The gateway's own feature reader (``gateway.tiers.features.FeastFeatureReader``)."""

    def __init__(self, layout: Layout) -> None:
        from gateway.tiers.features import FeastFeatureReader

        self.reader = FeastFeatureReader.open(layout=layout, dataset=DATASET, socket_timeout_s=2.0)
        assert self.reader.direct is not None

    async def state(self, user: int) -> tuple[int, list[int], list[int]]:
        row = await self.reader.read(user, timeout_s=5.0)
        if row is None:
            return (0, [], [])
        return (row.interaction_count, list(row.recent_items), list(row.seen_items))

    async def close(self) -> None:
        await self.reader.close()


async def wait_for(
    reader: OnlineReader, want: dict[int, tuple[int, list[int], list[int]]], *, timeout: float = 30
) -> dict[int, Any]:
    """Poll until every user's online state equals ``want``; the last states read."""
    deadline = time.monotonic() + timeout
    got: dict[int, Any] = {}
    while True:
        got = {u: await reader.state(u) for u in want}
        if got == want or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.1)


def delete_keys(redis_url: str, patterns: Iterable[str]) -> None:
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        for pattern in patterns:
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)
    finally:
        client.close()
