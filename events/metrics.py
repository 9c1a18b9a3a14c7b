"""Prometheus metrics of the events consumer, in a registry owned by one app.

=========================================== ========= ==============================================
name                                        type      labels / meaning
=========================================== ========= ==============================================
``events_applied_total``                    counter   events applied to the online state (first time)
``events_duplicates_total``                 counter   redelivered / repeated event ids, skipped
``events_invalid_total``                    counter   poison messages (undecodable), acked and skipped
``events_consumer_pending``                 gauge     messages in the log not yet delivered (lag)
``events_consumer_ack_pending``             gauge     delivered, not yet acked
``events_freshness_seconds``                histogram log append (JetStream timestamp) -> online
                                                      write done, per event
``events_batch_duration_seconds``           histogram fetch -> online write done, per batch
``events_apply_errors_total``               counter   stage (``redis``, ``feast``, ``offline``,
                                                      ``served``): failed attempts, retried
``events_last_applied_timestamp_seconds``   gauge     unix time of the last applied batch
``events_impressions_total``                counter   tier, model_version (``unknown``: no record)
``events_clicks_total``                     counter   tier, model_version
``events_served_records_total``             counter   served-answer records stored for the join
``events_offline_files_total``              counter   parquet files written to the offline log
=========================================== ========= ==============================================
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
FRESHNESS_BUCKETS = (
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    5.0,
    10.0,
    30.0,
    60.0,
)  # the target is p99 <= 1 s
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
STAGES = ("redis", "feast", "offline", "served")


class ConsumerMetrics:
    """All metrics of one consumer instance, registered in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.applied = Counter("events_applied", "Events applied to the online state.", registry=r)
        self.duplicates = Counter(
            "events_duplicates", "Repeated event ids, skipped (at-least-once delivery).", registry=r
        )
        self.invalid = Counter(
            "events_invalid", "Undecodable messages, acked and skipped.", registry=r
        )
        self.pending = Gauge(
            "events_consumer_pending", "Messages in the log not yet delivered.", registry=r
        )
        self.ack_pending = Gauge(
            "events_consumer_ack_pending", "Delivered messages not yet acked.", registry=r
        )
        self.freshness = Histogram(
            "events_freshness_seconds",
            "Log append to online write done, per event.",
            buckets=FRESHNESS_BUCKETS,
            registry=r,
        )
        self.batch_duration = Histogram(
            "events_batch_duration_seconds",
            "Fetch to online write done, per batch.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "events_apply_errors", "Failed attempts by stage (retried).", ["stage"], registry=r
        )
        for stage in STAGES:
            self.errors.labels(stage)
        self.last_applied = Gauge(
            "events_last_applied_timestamp_seconds",
            "Unix time of the last applied batch.",
            registry=r,
        )
        self.impressions = Counter(
            "events_impressions",
            "Impressions by the tier and model version that served them.",
            ["tier", "model_version"],
            registry=r,
        )
        self.clicks = Counter(
            "events_clicks",
            "Clicks by the tier and model version that served them.",
            ["tier", "model_version"],
            registry=r,
        )
        self.served = Counter(
            "events_served_records", "Served-answer records stored for the join.", registry=r
        )
        self.offline_files = Counter(
            "events_offline_files", "Parquet files written to the offline log.", registry=r
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
