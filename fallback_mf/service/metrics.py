"""Prometheus metrics of the MF service, in a registry owned by one app (tests build many apps).

============================================ ========= =============================================
name                                         type      labels / meaning
============================================ ========= =============================================
``mf_requests_total``                        counter   route, method, status
``mf_request_errors_total``                  counter   route, status (every 4xx and 5xx answer)
``mf_request_duration_seconds``              histogram route; 0.5 ms to 250 ms buckets
``mf_requests_in_flight``                    gauge     requests being handled now
``mf_recommendations_total``                 counter   known_user (``true``: ALS, ``false``: popular)
``mf_model_info``                            info      version of the model being served
``mf_model_loaded_timestamp_seconds``        gauge     when that model was loaded (unix time)
``mf_model_items`` / ``mf_model_users``      gauge     catalogue and user counts of that model
``mf_reloads_total``                         counter   result (``loaded``, ``unchanged``, ``failed``)
============================================ ========= =============================================
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from fallback_mf.service.model import LoadedModel

# Resolve 1 ms to 250 ms finely: the target is p99 <= 10 ms, the gateway's budget for this tier
# is tens of ms.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServiceMetrics:
    """All metrics of one app instance, registered in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mf_requests", "HTTP requests answered.", ["route", "method", "status"], registry=r
        )
        self.errors = Counter(
            "mf_request_errors", "HTTP answers with status >= 400.", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "mf_request_duration_seconds",
            "Time to answer a request.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("mf_requests_in_flight", "Requests being handled.", registry=r)
        self.recommendations = Counter(
            "mf_recommendations", "Recommendation answers by user kind.", ["known_user"], registry=r
        )
        self.model_info = Info("mf_model", "The ALS model being served.", registry=r)
        self.model_loaded = Gauge(
            "mf_model_loaded_timestamp_seconds", "When the served model was loaded.", registry=r
        )
        self.model_items = Gauge("mf_model_items", "Items in the served model.", registry=r)
        self.model_users = Gauge("mf_model_users", "Users in the served model.", registry=r)
        self.reloads = Counter("mf_reloads", "Model reload attempts.", ["result"], registry=r)

    def model_swapped(self, loaded: LoadedModel) -> None:
        """Record the model now being served."""
        self.model_info.info({"version": loaded.version})
        self.model_loaded.set(loaded.loaded_at)
        self.model_items.set(loaded.model.n_items)
        self.model_users.set(loaded.model.n_users)

    def observe(self, *, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(route, str(status)).inc()

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)
