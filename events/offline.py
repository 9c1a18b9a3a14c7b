"""The offline event log: parquet files by date, appended by the consumer before it acks.

Rows are buffered and written every ``flush_s`` seconds or ``flush_rows`` rows (one file per
date per flush; a file per batch would be tens of thousands of tiny files a day); the consumer
acks a batch's messages only once the flush holding its rows is on disk (tmp file, fsync,
rename, fsync of the folder). A crash loses only unacked rows, which the log redelivers.
Layout and columns: ``events.contract.EVENTS_DIR`` / ``OFFLINE_COLUMNS``; reader:
``cascade.data.event_log.read_event_log``.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from events.contract import Event
from events.state import ts_us

SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("value", pa.float64()),
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("request_id", pa.string()),
        pa.field("stream_seq", pa.int64(), nullable=False),
    ]
)


@dataclass
class OfflineBuffer:
    """Rows waiting for the next file write (see the module docstring)."""

    root: Path
    consumer: str
    flush_rows: int = 50_000
    flush_s: float = 5.0
    rows: dict[str, list[tuple[Event, int]]] = field(default_factory=lambda: defaultdict(list))
    count: int = 0
    oldest: float | None = None  # monotonic time of the oldest buffered row

    def add(self, events: list[tuple[Event, int]], *, now: float) -> None:
        """Buffer ``(event, stream sequence)`` pairs."""
        for event, seq in events:
            day = datetime.fromtimestamp(event.timestamp, UTC).strftime("%Y-%m-%d")
            self.rows[day].append((event, seq))
        self.count += len(events)
        if events and self.oldest is None:
            self.oldest = now

    def due(self, *, now: float) -> bool:
        return self.count >= self.flush_rows or (
            self.oldest is not None and now - self.oldest >= self.flush_s
        )

    def flush(self) -> list[Path]:
        """Write every buffered row (one file per date); the buffer is empty afterwards."""
        written = [self._write(day, rows) for day, rows in sorted(self.rows.items()) if rows]
        self.rows.clear()
        self.count = 0
        self.oldest = None
        return written

    def _write(self, day: str, rows: list[tuple[Event, int]]) -> Path:
        folder = self.root / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        seqs = [seq for _, seq in rows]
        name = f"part-{self.consumer}-{min(seqs):012d}-{max(seqs):012d}.parquet"
        table = pa.table(
            {
                "event_id": [e.event_id for e, _ in rows],
                "user_id": [e.user_id for e, _ in rows],
                "item_id": [e.item_id for e, _ in rows],
                "type": [e.type for e, _ in rows],
                "value": [e.value for e, _ in rows],
                "timestamp": pa.array([ts_us(e.timestamp) for e, _ in rows], pa.int64()).cast(
                    pa.timestamp("us", tz="UTC")
                ),
                "request_id": [e.request_id for e, _ in rows],
                "stream_seq": seqs,
            },
            schema=SCHEMA,
        )
        tmp = folder / f".{name}.tmp"
        with tmp.open("wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / name)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)
        return folder / name
