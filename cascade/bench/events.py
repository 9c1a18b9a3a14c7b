"""Benchmark of the events consumer: applied events/s, CPU per event, freshness at a fixed rate.

``python -m cascade.bench.events`` starts its own nats-server (JetStream in a temporary folder),
the tiny data set's Feast store materialized into Redis (``REDIS_URL``, default
``redis://127.0.0.1:6379/0``) under a fresh Feast project, and ``python -m events``, then:

1. **throughput**: ``--events`` events (one in five an impression, the rest consumption events
   of ``--users`` users, most unknown to the store) are published first; the consumer starts and
   drains them. Applied events/s over the drain, the consumer's CPU ms per event.
2. **freshness**: with the consumer caught up, ``--rate`` events/s in batches of ``--batch``
   for ``--seconds``; the consumer's ``events_freshness_seconds`` (JetStream append -> Feast
   write done) gives p50 / p99, interpolated inside its buckets.

Prints a markdown table; asserts nothing. The project's Redis keys are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from cascade.bench.cpu_meter import cpu_seconds
from cascade.bench.table import machine_footer, markdown_table
from cascade.runtime import feature_names as names
from cascade.runtime.paths import Layout
from cascade.runtime.procs import ManagedProcess, free_port
from events.contract import Event
from events.log import EventLog
from events.natsd import NatsServer

ROOT = Path(__file__).resolve().parents[2]
DATASET = "tiny"


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _histogram(m: dict[str, float], name: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of a Prometheus histogram, +Inf last."""
    buckets = []
    prefix = f'{name}_bucket{{le="'
    for key, value in m.items():
        if key.startswith(prefix):
            le = key[len(prefix) : -2]
            buckets.append((float("inf") if le == "+Inf" else float(le), value))
    return sorted(buckets)


def quantile(
    before: list[tuple[float, float]], after: list[tuple[float, float]], q: float
) -> float | None:
    """The ``q`` quantile of the observations between two scrapes, linear in its bucket."""
    diff = [(le, a - b) for (le, a), (_, b) in zip(after, before, strict=True)]
    total = diff[-1][1] if diff else 0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le, count in diff:
        if count >= rank:
            if le == float("inf"):
                return lower
            inside = count - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = le, count
    return None


def _events(n: int, *, users: int, start: int, rng: random.Random) -> list[Event]:
    now = time.time()
    out = []
    for i in range(n):
        kind = "impression" if rng.random() < 0.2 else rng.choice(["view", "click", "purchase"])
        out.append(
            Event(
                event_id=f"bench-{start + i}",
                user_id=rng.randrange(users),
                item_id=rng.randrange(200),
                type=kind,  # type: ignore[arg-type]
                timestamp=now,
            )
        )
    return out


async def _publish(url: str, events: list[Event], *, batch: int) -> None:
    log = EventLog()
    await log.connect(url, timeout_s=5)
    await log.ensure_stream()
    try:
        batches = [events[i : i + batch] for i in range(0, len(events), batch)]
        for k in range(0, len(batches), 20):  # 20 batches in flight, as 20 gateway requests
            await asyncio.gather(*(log.publish_batch(b, timeout_s=30) for b in batches[k : k + 20]))
    finally:
        await log.close()


async def _paced(url: str, *, rate: float, batch: int, seconds: float, start: int) -> int:
    log = EventLog()
    await log.connect(url, timeout_s=5)
    rng = random.Random(2)
    sent = 0
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            due = t0 + sent / rate
            await asyncio.sleep(max(due - time.monotonic(), 0))
            events = _events(batch, users=100_000, start=start + sent, rng=rng)
            await log.publish_batch(events, timeout_s=5)
            sent += batch
    finally:
        await log.close()
    return sent


def _build_store(home: Path, redis_url: str, project: str) -> None:
    from cascade.data.features import build_feature_tables, write_feature_tables
    from cascade.data.synthetic import generate
    from cascade.features import store

    os.environ["REDIS_URL"] = redis_url
    os.environ[names.PROJECT_ENV] = project
    layout = Layout(home=home)
    ds = generate(scale="tiny", seed=7)
    write_feature_tables(build_feature_tables(ds), layout.dataset_dir(DATASET))
    store.apply(layout=layout, dataset=DATASET)
    store.materialize(layout=layout, dataset=DATASET, full=True)


def _cleanup(redis_url: str, project: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        for pattern in (f"*{project}", f"cascade:events:{project}:*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            for k in range(0, len(keys), 1000):
                client.delete(*keys[k : k + 1000])
    finally:
        client.close()


def run(*, events: int, users: int, rate: float, batch: int, seconds: float, redis_url: str) -> str:
    """Run both phases and return the report (markdown)."""
    load_before = os.getloadavg()
    project = f"cascade_bench_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="cascade-events-bench-") as tmp:
        home = Path(tmp)
        nats = NatsServer(home / "js", log_path=home / "nats.log").start()
        port = free_port()
        consumer: ManagedProcess | None = None
        try:
            _build_store(home, redis_url, project)
            rng = random.Random(1)
            backlog = _events(events, users=users, start=0, rng=rng)
            asyncio.run(_publish(nats.url, backlog, batch=500))
            env = dict(os.environ)
            env.update(
                {
                    "CASCADE_HOME": str(home),
                    "CASCADE_DATASET": DATASET,
                    "EVENTS_NATS_URL": nats.url,
                    "EVENTS_PORT": str(port),
                    "EVENTS_LAG_POLL_S": "0.5",
                    "PYTHONPATH": str(ROOT),
                }
            )
            consumer = ManagedProcess(
                "events", [sys.executable, "-m", "events"], log_path=home / "events.log", env=env
            )
            consumer.start()
            consumer.wait_ready(f"http://127.0.0.1:{port}/readyz", timeout=120)
            cpu0, t0 = cpu_seconds(consumer.pid), time.monotonic()
            applied = 0.0
            while applied < events:
                time.sleep(0.05)
                m = _metrics(port)
                applied = m["events_applied_total"] + m["events_duplicates_total"]
                if time.monotonic() - t0 > 600:
                    break
            drain_s = time.monotonic() - t0
            cpu_ms = (cpu_seconds(consumer.pid) - cpu0) * 1000 / max(applied, 1)
            drained = _metrics(port)
            drain_batches = drained["events_batch_duration_seconds_count"]
            busy = drained["events_batch_duration_seconds_sum"] / drain_s
            # the consumer started inside the window: a readiness poll's worth of startup
            before = _metrics(port)
            sent = asyncio.run(
                _paced(nats.url, rate=rate, batch=batch, seconds=seconds, start=events)
            )
            time.sleep(2.0)
            after = _metrics(port)
            fresh = "events_freshness_seconds"
            h0, h1 = _histogram(before, fresh), _histogram(after, fresh)
            p50, p99 = quantile(h0, h1, 0.5), quantile(h0, h1, 0.99)
            batches = after["events_batch_duration_seconds_count"] - before.get(
                "events_batch_duration_seconds_count", 0
            )
        finally:
            if consumer is not None:
                consumer.stop()
            nats.stop()
            _cleanup(redis_url, project)
    rows = [
        [
            "throughput (backlog drain)",
            int(applied),
            round(applied / drain_s),
            round(cpu_ms, 3),
            None,
            None,
        ],
        [f"freshness at {rate:g} events/s", sent, round(sent / seconds), None, _ms(p50), _ms(p99)],
    ]
    table = markdown_table(
        ["phase", "events", "events/s", "CPU ms/event", "freshness p50 ms", "p99 ms"], rows
    )
    note = (
        f"\nbacklog: {events:,} events of {users:,} users, batches of 500 published 20 at a time; "
        f"drain: {drain_batches:.0f} consumer batches of {applied / max(drain_batches, 1):.0f} "
        f"events, applying {busy:.0%} of the time. "
        f"Paced: batches of {batch} for {seconds:g} s ({batches:.0f} consumer batches). "
        "Freshness: JetStream append -> Feast online write done (consumer histogram, "
        "interpolated in its buckets).\n"
    )
    return table + "\n" + note + machine_footer(load_before=load_before)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    print(
        run(
            events=args.events,
            users=args.users,
            rate=args.rate,
            batch=args.batch,
            seconds=args.seconds,
            redis_url=args.redis_url,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
