"""Prometheus metrics of the gateway, on a registry per app (tests build many apps).

Names (all prefixed ``gateway_``): ``requests_total{route,method,status,tier}``,
``request_seconds{route,tier}`` (buckets 1..250 ms and beyond), ``errors_total{route,code}``,
``fallbacks_total{reason,tier}``, ``breaker_state{breaker}`` (0 closed, 1 half-open, 2 open),
``breaker_transitions_total{breaker,from_state,to_state}``, ``feature_read_seconds``,
``feature_read_errors_total{kind}``, ``upstream_seconds{tier,outcome}``, ``in_flight``,
``served_total{tier,model_version}``, ``popular_items``, ``event_loop_lag_seconds`` (how late a
50 ms sleep wakes up: CPU saturation or a blocking call on the event loop).
Events (``POST /v1/events``): ``events_total{outcome}`` (events: ``accepted``, ``invalid``,
``unavailable``, ``disabled``), ``event_batches_total{outcome}`` (the same per batch),
``events_publish_seconds`` (from the first publish to the last ack, every outcome);
``served_records_dropped_total`` and ``event_log_connected`` come from ``gateway.eventsink``.
"""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.resilience.breaker import STATE_VALUES


class EventOutcome(StrEnum):
    """What became of the events of one ``POST /v1/events``."""

    ACCEPTED = "accepted"  # 202: every event acked by the log
    INVALID = "invalid"  # 422: nothing published
    UNAVAILABLE = "unavailable"  # 503 event_log_unavailable: the log did not ack them all
    DISABLED = "disabled"  # 503 events_disabled: no log configured


# Resolve 1..250 ms (the SLO region) finely, with a tail for pathologies.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.010, 0.015, 0.020, 0.030, 0.040, 0.050, 0.075,
    0.100, 0.125, 0.150, 0.200, 0.250, 0.500, 1.0, 2.5,
)  # fmt: skip


LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.010, 0.025, 0.050, 0.100, 0.250, 0.500, 1.0)


class GatewayMetrics:
    """Every metric the gateway exports, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_requests",
            "HTTP requests answered",
            ["route", "method", "status", "tier"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "gateway_request_seconds",
            "Request latency by route and serving tier",
            ["route", "tier"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "gateway_errors", "Error responses by code", ["route", "code"], registry=r
        )
        self.fallbacks_skipped = Counter(
            "gateway_fallbacks_skipped",
            "Fallback tiers not tried (cause saturated: the event loop was overloaded, popular served)",
            ["tier", "cause"],
            registry=r,
        )
        self.fallbacks = Counter(
            "gateway_fallbacks",
            "Responses not served by the primary, by reason",
            ["reason", "tier"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "gateway_breaker_state",
            "Breaker state: 0 closed, 1 half-open, 2 open",
            ["breaker"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "gateway_breaker_transitions",
            "Breaker state transitions",
            ["breaker", "from_state", "to_state"],
            registry=r,
        )
        self.feature_seconds = Histogram(
            "gateway_feature_read_seconds",
            "Feast online read latency",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.feature_errors = Counter(
            "gateway_feature_read_errors", "Failed Feast online reads", ["kind"], registry=r
        )
        self.upstream_seconds = Histogram(
            "gateway_upstream_seconds",
            "Upstream call latency per tier and outcome",
            ["tier", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.invalid_answers = Counter(
            "gateway_invalid_answers",
            "Upstream answers refused by gateway.tiers.validation, per tier and broken rule",
            ["tier", "rule"],
            registry=r,
        )
        self.tier_exceptions = Counter(
            "gateway_tier_exceptions",
            "Unexpected exceptions inside a tier call (a bug or a library error), per tier",
            ["tier", "exception"],
            registry=r,
        )
        self.in_flight = Gauge("gateway_in_flight", "Requests being served", registry=r)
        self.in_flight_limit = Gauge(
            "gateway_in_flight_limit",
            "Adaptive in-flight limit (gateway.edge.admission); 0: unlimited",
            registry=r,
        )
        self.served = Counter(
            "gateway_served",
            "Responses by tier and model version",
            ["tier", "model_version"],
            registry=r,
        )
        self.upstream_queue_seconds = Histogram(
            "gateway_upstream_queue_seconds",
            "Wait between the ingress stamp (X-Request-Start) and the gateway's first middleware",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.gc_pause = Histogram(
            "gateway_gc_pause_seconds",
            "Garbage-collector pauses by generation (the event loop stops meanwhile)",
            ["generation"],
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self.loop_lag = Histogram(
            "gateway_event_loop_lag_seconds",
            "How late a 50 ms sleep on the event loop wakes up",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self.popular_items = Gauge(
            "gateway_popular_items", "Items in the in-memory popular list", registry=r
        )
        self.events = Counter(
            "gateway_events", "Events received by POST /v1/events, by outcome", ["outcome"],
            registry=r,
        )  # fmt: skip
        self.event_batches = Counter(
            "gateway_event_batches", "POST /v1/events batches by outcome", ["outcome"], registry=r
        )
        self.events_publish_seconds = Histogram(
            "gateway_events_publish_seconds",
            "Publishing one batch to the event log, until every event is acked (or it failed)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        for outcome in EventOutcome:  # every series exists from the start (rate() sees the first)
            self.events.labels(outcome=outcome.value)
            self.event_batches.labels(outcome=outcome.value)

    def on_breaker_transition(self, name: str, old: str, new: str) -> None:
        """Breaker observer: gauge and transition counter."""
        self.breaker_state.labels(breaker=name).set(STATE_VALUES.get(new, -1))
        self.breaker_transitions.labels(breaker=name, from_state=old, to_state=new).inc()
