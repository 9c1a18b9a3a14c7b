"""D12 and the load test's events section, from recorded readings (no processes): the drain time
from the consumer's lag samples, the summary lines from the locustfile's counts and two
readings of the consumer's /metrics."""

from __future__ import annotations

import json
from pathlib import Path

from cascade.drills.drills import DRILLS
from cascade.drills.event_drill import LagWatch
from cascade.drills.event_figures import markdown
from cascade.drills.observe import parse_metrics
from cascade.drills.timeline import Plan


def _consumer(applied: int, fast: int, slow: int, pending: int) -> str:
    return "\n".join(
        [
            f"events_applied_total {applied}",
            f'events_freshness_seconds_bucket{{le="0.1"}} {fast}',
            f'events_freshness_seconds_bucket{{le="1.0"}} {fast + slow}',
            f'events_freshness_seconds_bucket{{le="+Inf"}} {fast + slow}',
            f"events_consumer_pending {pending}",
        ]
    )


def test_d12_is_a_drill_and_ci_keeps_it_short() -> None:
    assert "D12" in DRILLS
    assert Plan().consumer_down_s == 60 and Plan.ci().consumer_down_s < 60
    assert Plan().drain_limit_s == 30


def test_drain_time_is_the_first_reading_back_under_the_threshold() -> None:
    watch = LagWatch("http://unused", 0.0)
    watch.samples = [(1.0, 10), (5.0, None), (20.0, None), (21.0, 30000), (24.0, 900), (25.0, 0)]
    assert watch.drained_at(20.0, threshold=500) == 25.0
    assert watch.drained_at(20.0, threshold=1000) == 24.0
    assert watch.drained_at(26.0, threshold=1000) is None
    assert watch.peak(0.0, 30.0) == 30000


def test_events_section_has_throughput_statuses_freshness_and_lag(tmp_path: Path) -> None:
    counts = tmp_path / "events.json"
    counts.write_text(json.dumps({"events_sent": 12000, "events_accepted": 11950, "clicks": 30,
                                  "batches_by_status": {"202": 239, "503": 1}}))  # fmt: skip
    before = parse_metrics(_consumer(100, 100, 0, 0))
    after = parse_metrics(_consumer(12050, 11000, 950, 7))
    text = markdown(counts_path=counts, before=before, after=after, duration_s=60)
    assert "11,950 of 12,000 sent = 199 events/s" in text
    assert "202: 239, 503: 1" in text
    assert "applied 11,950 events" in text
    assert "p50 54 ms, p99 888 ms" in text  # interpolated within the buckets, as Prometheus
    assert "7 messages pending" in text
    down = markdown(counts_path=tmp_path / "none.json", before=None, after=None, duration_s=60)
    assert "no event counts" in down and "did not answer" in down
