"""Similar items (``GET /v1/items/{item_id}/similar``): the deadline-driven chain behind it.

The same semantics as the user path (``gateway.resilience.chain``), for one query item:

0. an item the catalogue (the popular list's known items, the ALS artifacts' ids) does not know
   is :class:`ItemNotFound` (404 ``unknown_item``) at once: no tier is asked, nothing is made up.
1. primary: the ``two_tower_similar`` model on Triton (the Two-Tower's item embeddings, exact
   top-k by cosine), behind its own circuit breaker (``breaker="similar"``, the same policy as
   the primary's: ``GATEWAY_BREAKER_*``), with a timeout of ``primary_timeout_ms`` or the time
   left. No permit: ``breaker_open``; failure: ``timeout`` or ``error``. Every call that got a
   permit gives the breaker a verdict (an invalid answer or an exception is a failure), except a
   call cut short by the request's own deadline or cancelled. A model that does not know the
   item (a newer catalogue than its training) answered correctly: a success for the breaker,
   reason ``cold_start``.
2. ALS: the MF service's cosine over item factors (``mf_timeout_ms``). Skipped while the event loop
   is saturated after a timeout, as on the user path.
3. popular: the most popular items but the query item, in memory: always answers.

The deadline (``deadline_ms``) counts from the request's arrival; a remote tier with less than
``min_tier`` left is skipped. Every remote answer goes through ``gateway.tiers.validation``'s
``check_answer`` with ``skip = {item_id}``: exactly k unique known ids (fewer only when the
catalogue has fewer other items), finite scores, best first, never the query item (rule
``seen``). A refused answer is that tier's error and the next tier serves; no upstream content
produces a 5xx.

Metrics: ``gateway_similar_served_total{tier,model_version}``,
``gateway_similar_fallbacks_total{reason,tier}``, ``gateway_similar_unknown_items_total``; the
shared ``gateway_upstream_seconds``, ``gateway_invalid_answers_total`` and
``gateway_tier_exceptions_total`` with ``tier`` = ``two_tower_similar`` / ``als_similar``;
``gateway_breaker_state{breaker="similar"}``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from opentelemetry import propagate, trace
from prometheus_client import Counter

from cascade.runtime.ranking import first_not_in
from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.metrics import GatewayMetrics
from gateway.resilience.breaker import CircuitBreaker, redis_storage
from gateway.resilience.chain import ChainConfig
from gateway.schemas import FallbackReason, Tier
from gateway.settings import GatewaySettings
from gateway.throttled_log import ThrottledLog
from gateway.tiers.mf import MfFallback
from gateway.tiers.popular import PopularList
from gateway.tiers.similar_mf import MfSimilar
from gateway.tiers.similar_triton import TritonSimilar
from gateway.tiers.similar_types import ItemNotFound, SimilarTier, UnknownItem
from gateway.tiers.types import TierResult
from gateway.tiers.validation import InvalidAnswer, check_answer

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("gateway")

BREAKER_NAME = "similar"
BREAKER_NAMESPACE = "cascade:gateway:similar"
# Label values of the shared per-tier metrics (kept apart from the user path's two_tower / als).
PRIMARY_LABEL = "two_tower_similar"
FALLBACK_LABEL = "als_similar"
_RESERVE_S = 0.002  # kept back for the popular tier and the response, as on the user path
_OVERLOAD_REASONS = frozenset({FallbackReason.TIMEOUT})


@dataclass(frozen=True)
class SimilarOutcome:
    """What the chain served and why."""

    result: TierResult
    tier: Tier
    reason: FallbackReason | None


class SimilarMetrics:
    """The similar-items counters, on the gateway's registry."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        r = metrics.registry
        self.served = Counter(
            "gateway_similar_served",
            "Similar-items responses by tier and model version",
            ["tier", "model_version"],
            registry=r,
        )
        self.fallbacks = Counter(
            "gateway_similar_fallbacks",
            "Similar-items responses not served by the primary, by reason",
            ["reason", "tier"],
            registry=r,
        )
        self.unknown = Counter(
            "gateway_similar_unknown_items",
            "Similar-items requests answered 404 unknown_item",
            registry=r,
        )


_METRICS: weakref.WeakKeyDictionary[GatewayMetrics, SimilarMetrics] = weakref.WeakKeyDictionary()


def similar_metrics(metrics: GatewayMetrics) -> SimilarMetrics:
    """The similar-items counters of ``metrics``' registry (registered once per registry)."""
    found = _METRICS.get(metrics)
    if found is None:
        found = _METRICS[metrics] = SimilarMetrics(metrics)
    return found


def _traceparent() -> dict[str, str]:
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


class SimilarChain:
    """See the module docstring. One instance per app, shared by all requests."""

    def __init__(
        self,
        *,
        config: ChainConfig,
        popular: PopularList,
        breaker: CircuitBreaker,
        metrics: GatewayMetrics,
        primary: SimilarTier | None = None,
        fallback: SimilarTier | None = None,
        clock: Callable[[], float] = time.monotonic,
        saturated: Callable[[], bool] = lambda: False,
    ) -> None:
        self.config = config
        self.popular = popular
        self.breaker = breaker
        self.metrics = metrics
        self.similar_metrics = similar_metrics(metrics)
        self.primary = primary
        self.fallback = fallback
        self.clock = clock
        self.saturated = saturated
        self._log = ThrottledLog(logger)

    async def similar(
        self, *, item_id: int, k: int, arrived: float | None = None
    ) -> SimilarOutcome:
        """The k items nearest to ``item_id`` within the deadline; :class:`ItemNotFound` when
        the catalogue does not know it; never raises an upstream error."""
        cfg = self.config
        deadline = (self.clock() if arrived is None else arrived) + cfg.deadline_s
        if self.popular.loaded and not bool(self.popular.known([item_id])[0]):
            self.similar_metrics.unknown.inc()
            raise ItemNotFound(f"item {item_id} is not in the catalogue")
        skip = {item_id}
        unknown = 0  # remote models that answered "I do not know this item"
        asked = 0
        reason: FallbackReason | None
        if self.primary is not None:
            asked += 1
            result, reason = await self._call_primary(item_id, k, skip, deadline)
            if result is not None:
                return self._served(SimilarOutcome(result, Tier.TWO_TOWER, None))
            unknown += reason is FallbackReason.COLD_START
        else:
            reason = FallbackReason.ERROR  # no primary configured
        if self.fallback is not None and reason in _OVERLOAD_REASONS and self.saturated():
            self.metrics.fallbacks_skipped.labels(tier=FALLBACK_LABEL, cause="saturated").inc()
        elif self.fallback is not None:
            result, knows = await self._call_fallback(item_id, k, skip, deadline)
            asked += knows is not None
            if result is not None:
                return self._served(SimilarOutcome(result, Tier.ALS, reason))
            if knows is False:
                unknown += 1
                if reason is not FallbackReason.TIMEOUT:
                    reason = FallbackReason.COLD_START
        if not self.popular.loaded and asked and unknown == asked:
            # No catalogue to judge by, and every model that answered does not know the item.
            self.similar_metrics.unknown.inc()
            raise ItemNotFound(f"item {item_id} is unknown to every model")
        return self._served(SimilarOutcome(self._popular(item_id, k), Tier.POPULAR, reason))

    # -- steps -------------------------------------------------------------------------------

    def _served(self, outcome: SimilarOutcome) -> SimilarOutcome:
        if outcome.reason is not None:
            self.similar_metrics.fallbacks.labels(
                reason=outcome.reason.value, tier=outcome.tier.value
            ).inc()
        self.similar_metrics.served.labels(
            tier=outcome.tier.value, model_version=outcome.result.model_version
        ).inc()
        return outcome

    def _popular(self, item_id: int, k: int) -> TierResult:
        """The k most popular items but ``item_id``, scored by their interaction counts."""
        snap = self.popular.snapshot
        if snap is None:
            return TierResult(item_ids=[], scores=[], model_version="popular/none")
        keep = first_not_in(snap.items, np.array([item_id], dtype=np.int64), k)
        return TierResult(
            item_ids=[int(i) for i in snap.items[keep]],
            scores=[float(c) for c in snap.counts[keep]],
            model_version=f"popular/{snap.version}",
        )

    def _left(self, deadline: float) -> float:
        return deadline - self.clock() - _RESERVE_S

    async def _call_primary(
        self, item_id: int, k: int, skip: set[int], deadline: float
    ) -> tuple[TierResult | None, FallbackReason | None]:
        """The primary's valid answer (reason None), or None and why it was not served."""
        assert self.primary is not None
        permit = self.breaker.try_acquire()
        if permit is None:
            return None, FallbackReason.BREAKER_OPEN
        budget = min(self.config.primary_timeout_s, self._left(deadline))
        if budget < self.config.min_tier_s:
            self.breaker.release(permit)
            return None, FallbackReason.TIMEOUT
        cut_short = budget < self.config.primary_timeout_s
        with tracer.start_as_current_span("tier.two_tower_similar") as span:
            span.set_attribute("breaker.state", self.breaker.state)
            span.set_attribute("k", k)
            started = self.clock()
            try:
                answer = await self.primary.similar(
                    item_id, k=k, timeout_s=budget, headers=_traceparent()
                )
                result = check_answer(answer, k=k, skip=skip, catalogue=self.popular)
            except UnknownItem:
                elapsed = self.clock() - started
                self.breaker.record(permit, duration=elapsed, ok=True)  # it answered, correctly
                self._observe(PRIMARY_LABEL, "unknown_item", elapsed, span)
                return None, FallbackReason.COLD_START
            except UpstreamTimeout as exc:
                elapsed = self.clock() - started
                if cut_short:  # our deadline, not the upstream's fault: no verdict
                    self.breaker.release(permit)
                else:
                    self.breaker.record(permit, duration=elapsed, ok=False)
                self._failed(PRIMARY_LABEL, "timeout", elapsed, span, exc)
                return None, FallbackReason.TIMEOUT
            except UpstreamError as exc:  # InvalidAnswer included: garbage counts as failure
                elapsed = self.clock() - started
                self.breaker.record(permit, duration=elapsed, ok=False)
                self._failed(PRIMARY_LABEL, _outcome(exc), elapsed, span, exc)
                return None, FallbackReason.ERROR
            except Exception as exc:  # a bug or a library error: this tier failed, no 500
                elapsed = self.clock() - started
                self.breaker.record(permit, duration=elapsed, ok=False)
                self._observe(PRIMARY_LABEL, "error", elapsed, span)
                self._crashed(PRIMARY_LABEL, exc, span)
                return None, FallbackReason.ERROR
            except BaseException:
                self.breaker.release(permit)  # cancelled: the caller gave up, no verdict
                raise
            elapsed = self.clock() - started
            self.breaker.record(permit, duration=elapsed, ok=True)
            self._observe(PRIMARY_LABEL, "ok", elapsed, span)
            span.set_attribute("model.version", result.model_version)
        return result, None

    async def _call_fallback(
        self, item_id: int, k: int, skip: set[int], deadline: float
    ) -> tuple[TierResult | None, bool | None]:
        """ALS's valid answer, or None and whether ALS knows the item (None: no answer)."""
        assert self.fallback is not None
        budget = min(self.config.mf_timeout_s, self._left(deadline))
        if budget < self.config.min_tier_s:
            return None, None
        with tracer.start_as_current_span("tier.als_similar") as span:
            span.set_attribute("k", k)
            started = self.clock()
            try:
                answer = await self.fallback.similar(
                    item_id, k=k, timeout_s=budget, headers=_traceparent()
                )
                result = check_answer(answer, k=k, skip=skip, catalogue=self.popular)
            except UnknownItem:
                self._observe(FALLBACK_LABEL, "unknown_item", self.clock() - started, span)
                return None, False
            except UpstreamError as exc:
                self._failed(FALLBACK_LABEL, _outcome(exc), self.clock() - started, span, exc)
                return None, None
            except Exception as exc:  # a bug or a library error: this tier failed, no 500
                self._observe(FALLBACK_LABEL, "error", self.clock() - started, span)
                self._crashed(FALLBACK_LABEL, exc, span)
                return None, None
            self._observe(FALLBACK_LABEL, "ok", self.clock() - started, span)
            span.set_attribute("model.version", result.model_version)
        return result, True

    def _observe(self, tier: str, outcome: str, elapsed: float, span: trace.Span) -> None:
        self.metrics.upstream_seconds.labels(tier=tier, outcome=outcome).observe(elapsed)
        span.set_attribute("tier.outcome", outcome)

    def _failed(
        self, tier: str, outcome: str, elapsed: float, span: trace.Span, exc: UpstreamError
    ) -> None:
        self._observe(tier, outcome, elapsed, span)
        span.set_status(trace.Status(trace.StatusCode.ERROR, exc.detail))
        if isinstance(exc, InvalidAnswer):
            self.metrics.invalid_answers.labels(tier=tier, rule=exc.rule.value).inc()
            self._log.warning(
                (tier, outcome, exc.rule), "%s answer refused, rule %s", tier, exc.detail
            )
        else:
            self._log.warning(
                (tier, outcome),
                "%s %s after %.1f ms: %s",
                tier,
                outcome,
                elapsed * 1000,
                exc.detail,
            )

    def _crashed(self, tier: str, exc: Exception, span: trace.Span) -> None:
        name = type(exc).__name__
        self.metrics.tier_exceptions.labels(tier=tier, exception=name).inc()
        span.record_exception(exc)
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"{name} inside the {tier} call"))
        self._log.error(
            (tier, name), "%s call raised %s; treated as an error", tier, name, exc_info=True
        )


def _outcome(exc: UpstreamError) -> str:
    if isinstance(exc, InvalidAnswer):
        return "invalid"
    return "timeout" if isinstance(exc, UpstreamTimeout) else "error"


# -- wiring ---------------------------------------------------------------------------------------


def build_similar_breaker(settings: GatewaySettings, metrics: GatewayMetrics) -> CircuitBreaker:
    """The similar model's own breaker, with the primary's policy (``GATEWAY_BREAKER_*``): a
    failing similar model opens it without cutting users off the recommendations' primary."""
    config = settings.breaker_config()
    if settings.breaker_force_open:
        config = dataclasses.replace(config, wait_seconds=float("inf"))
    storage = None
    if settings.breaker_redis_url:
        storage = redis_storage(url=settings.breaker_redis_url, namespace=BREAKER_NAMESPACE)
    breaker = CircuitBreaker(
        name=BREAKER_NAME,
        config=config,
        storage=storage,
        on_transition=[metrics.on_breaker_transition],
    )
    if settings.breaker_force_open:
        breaker.force_open()
    metrics.on_breaker_transition(breaker.name, "none", breaker.state)
    return breaker


def build_similar(
    settings: GatewaySettings,
    metrics: GatewayMetrics,
    *,
    config: ChainConfig,
    popular: PopularList,
    mf: MfFallback | None,
    closers: list[Callable[[], Awaitable[None]]],
) -> SimilarChain:
    """The chain from ``settings``: Triton's similar model when ``GATEWAY_TRITON_URL`` and
    ``GATEWAY_SIMILAR_MODEL`` are set, the MF service's endpoint on ``mf``'s pool, popular."""
    primary = None
    if settings.triton_url and settings.similar_model:
        primary = TritonSimilar(url=settings.triton_url, model=settings.similar_model)
        closers.append(primary.close)
    return SimilarChain(
        config=config,
        popular=popular,
        breaker=build_similar_breaker(settings, metrics),
        metrics=metrics,
        primary=primary,
        fallback=MfSimilar(mf) if mf is not None else None,
    )


def popular_only(
    settings: GatewaySettings, metrics: GatewayMetrics, *, config: ChainConfig, popular: PopularList
) -> SimilarChain:
    """A chain that answers from the popular list only (a components factory without one)."""
    return SimilarChain(
        config=config,
        popular=popular,
        breaker=build_similar_breaker(settings, metrics),
        metrics=metrics,
    )
