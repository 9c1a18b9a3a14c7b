"""The deadline-driven fallback chain: features, primary (behind the breaker), ALS, popular.

Each request has a deadline (``deadline_ms``). The chain spends it in order and skips a remote
tier when the time left cannot cover at least ``min_tier_ms`` of it:

1. features (Feast, ``feature_timeout_ms``). Failure: reason ``features_unavailable``, skip the
   primary (it needs features). No features for the user: reason ``cold_start``, skip the primary.
2. primary (Two-Tower on Triton) if the breaker grants a permit (else ``breaker_open``), with a
   timeout of ``primary_timeout_ms`` (the breaker's slow-call threshold) or the time left.
   Failure: ``timeout`` or ``error``.
3. ALS (MF service, ``mf_timeout_ms``). A user it never saw: ``cold_start``, go to popular.
   Skipped while the event loop is saturated (``saturated()``, the admission limit's view of
   the loop lag) after a timeout (features or primary): a fallback must cost less than the path
   it replaces, and an HTTP call to ALS costs the gateway more CPU than the primary's gRPC call,
   so under overload it would deepen the overload that caused the timeout. Popular answers
   instead (counted in ``gateway_fallbacks_skipped_total``); the skip ends with the lag.
4. popular, in memory: always answers.

Every remote tier's answer is checked before it is served (``gateway.tiers.validation``, the rules
written once): exactly k unique items (fewer only when the catalogue runs out: as many as the
known items left unseen in the allowed categories), none seen (features' ``seen_items``, the
training history, the request's ``exclude``), all known ids, all inside the request's category
filter, finite scores, best first. An answer that breaks a rule
is that tier's error (outcome ``invalid``, and a failure for the primary's breaker), and so is
any unexpected exception raised inside a tier call: the next tier serves, never a 500.

Category filters (``categories``): every tier applies them inside its own top-k (Triton's model
masks items outside the filter before its top-k, the MF service likewise, popular filters its
ranked list), so a filter never costs items while enough allowed ones exist. The chain passes a
filter to a remote tier only when the request has one, and checks each answer against it with
the popular list's item categories; without those (an ALS artifact trained before categories)
a filtered request raises ``FiltersUnavailable`` (503) instead of serving an unchecked answer.
A filtered request is not mirrored to a shadow candidate (the mirror compares plain requests).

Rollouts (``gateway.rollout``): when ``rollout`` is set, each request's route names the Triton
version the primary is asked for (stable, or the candidate for the canary's sticky users, or a
version pinned by a key allowed to), and the chain reports the primary call and who served to
the router; during the shadow phase it hands the served answer to the router's mirror, which
calls the candidate in the background. A canary's candidate calls give the breaker no verdict
(``_verdict``): a bad candidate is the controller's to roll back, not a reason to cut every
user off the primary.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import cast

from opentelemetry import propagate, trace

from gateway.errors import FiltersUnavailable, UnknownUser, UpstreamError, UpstreamTimeout
from gateway.metrics import GatewayMetrics
from gateway.resilience.breaker import CircuitBreaker
from gateway.resilience.states import Permit
from gateway.rollout.router import NO_ROLLOUT, Arm, CallOutcome, RolloutRouter, Route
from gateway.schemas import FallbackReason, Tier
from gateway.throttled_log import ThrottledLog
from gateway.tiers.popular import PopularList
from gateway.tiers.types import (
    NO_FILTER,
    CategoryFilter,
    FallbackTier,
    FeatureSource,
    FilteredFallback,
    FilteredPrimary,
    PrimaryTier,
    TierResult,
    UserFeatures,
    VersionedPrimary,
)
from gateway.tiers.validation import InvalidAnswer, check_answer

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("gateway")

# Fallback reasons that a saturated loop causes (a deadline missed), as opposed to a fault.
_OVERLOAD_REASONS = frozenset({FallbackReason.FEATURES_UNAVAILABLE, FallbackReason.TIMEOUT})

# Time kept back for the popular tier and the response itself.
_RESERVE_S = 0.002


@dataclass(frozen=True)
class ChainConfig:
    """Time budgets in seconds (see ``GatewaySettings``)."""

    deadline_s: float = 0.250
    feature_timeout_s: float = 0.020
    primary_timeout_s: float = 0.100
    mf_timeout_s: float = 0.060
    min_tier_s: float = 0.005


class FeatureState(StrEnum):
    """What the feature read gave (the ``feature.outcome`` span attribute)."""

    OK = "ok"
    MISSING = "missing"  # the store does not know the user: cold start
    UNAVAILABLE = "unavailable"  # the read failed or timed out
    DISABLED = "disabled"  # no feature source configured


class TierOutcome(StrEnum):
    """How one tier call ended (the ``outcome`` label of ``gateway_upstream_seconds``)."""

    OK = "ok"
    TIMEOUT = "timeout"
    ERROR = "error"  # an upstream error, or an exception inside the call
    INVALID = "invalid"  # it answered, but the answer broke a rule (gateway.tiers.validation)
    UNKNOWN_USER = "unknown_user"  # the MF model never saw the user: cold start


@dataclass(frozen=True)
class Outcome:
    """What the chain served and why."""

    result: TierResult
    tier: Tier
    reason: FallbackReason | None
    features: FeatureState


def _traceparent() -> dict[str, str]:
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


class FallbackChain:
    """See the module docstring. One instance per app, shared by all requests."""

    def __init__(
        self,
        *,
        config: ChainConfig,
        popular: PopularList,
        breaker: CircuitBreaker,
        metrics: GatewayMetrics,
        features: FeatureSource | None = None,
        primary: PrimaryTier | None = None,
        fallback: FallbackTier | None = None,
        clock: Callable[[], float] = time.monotonic,
        saturated: Callable[[], bool] = lambda: False,
    ) -> None:
        self.config = config
        self.popular = popular
        self.breaker = breaker
        self.metrics = metrics
        self.features = features
        self.primary = primary
        self.fallback = fallback
        self.clock = clock
        self.saturated = saturated
        self.rollout: RolloutRouter | None = None  # set by the lifespan when rollouts are on
        self._log = ThrottledLog(logger)

    async def recommend(
        self,
        *,
        user_id: int,
        k: int,
        exclude: Sequence[int],
        arrived: float | None = None,
        pin_version: int | None = None,
        categories: CategoryFilter = NO_FILTER,
    ) -> Outcome:
        """Serve k items for ``user_id`` within the deadline; never raises an upstream error.

        ``arrived``: when the request reached the gateway (on ``clock``); the deadline counts
        from it, so time spent queued before the chain is not granted again. Default: now.
        ``pin_version``: ask the primary for this model version (the caller checked the right).
        ``categories``: the request's category filter (:class:`FiltersUnavailable` when the
        loaded catalogue cannot check it).
        """
        self.check_filter(categories)
        cfg = self.config
        deadline = (self.clock() if arrived is None else arrived) + cfg.deadline_s
        feats, feature_state = await self._read_features(user_id, deadline)
        skip, exclude_all = self.skip_set(user_id, exclude, feats)
        reason = first_reason(feature_state)

        if feats is not None and self.primary is not None:
            route = self._route(user_id, pin_version)
            result, primary_reason = await self._call_primary(
                feats, k, exclude_all, skip, deadline, route, categories
            )
            if self.rollout is not None:
                self.rollout.record_served(route, by_primary=result is not None)
            if result is not None:
                if route.shadow_version is not None and self.rollout is not None and not categories:
                    self.rollout.mirror(
                        route,
                        self._shadow_call(feats, k, exclude_all),
                        result,
                        k=k,
                        skip=skip,
                        catalogue=self.popular,
                    )
                return Outcome(result, Tier.TWO_TOWER, None, feature_state)
            reason = primary_reason
        elif reason is None:
            reason = FallbackReason.ERROR  # features read fine but no primary is configured
        return await self.fall_back(
            user_id,
            k=k,
            exclude_all=exclude_all,
            skip=skip,
            deadline=deadline,
            reason=reason,
            feature_state=feature_state,
            categories=categories,
        )

    def check_filter(self, categories: CategoryFilter) -> None:
        """:class:`FiltersUnavailable` when ``categories`` cannot be checked (no item
        categories in the loaded ALS artifact)."""
        if categories and not self.popular.has_categories:
            raise FiltersUnavailable(
                "category filters need item categories, and the served ALS artifact "
                f"({self.popular.version or 'none'}) records none: train it again"
            )

    def skip_set(
        self, user_id: int, exclude: Sequence[int], feats: UserFeatures | None
    ) -> tuple[set[int], list[int]]:
        """What the answer must not hold: the request's ``exclude``, the features' seen items
        and the training history; as a set and as the sorted list the tiers are sent."""
        skip = set(exclude)
        if feats is not None:
            skip.update(feats.seen_items)
        skip.update(int(i) for i in self.popular.seen(user_id))
        return skip, sorted(skip)

    async def fall_back(
        self,
        user_id: int,
        *,
        k: int,
        exclude_all: list[int],
        skip: set[int],
        deadline: float,
        reason: FallbackReason | None,
        feature_state: FeatureState,
        categories: CategoryFilter = NO_FILTER,
    ) -> Outcome:
        """ALS, then popular, for a request the primary did not serve (``reason``: why)."""
        if self.fallback is not None and self._too_busy_for_als(reason):
            self.metrics.fallbacks_skipped.labels(tier=Tier.ALS.value, cause="saturated").inc()
        elif self.fallback is not None:
            result, als_reason = await self._call_fallback(
                user_id, k, exclude_all, skip, deadline, categories
            )
            if result is not None:
                return Outcome(result, Tier.ALS, reason, feature_state)
            if (
                als_reason is FallbackReason.COLD_START
                and reason is not FallbackReason.FEATURES_UNAVAILABLE
            ):
                reason = FallbackReason.COLD_START

        result = self.popular.recommend(user_id, k=k, exclude=skip, categories=categories)
        return Outcome(result, Tier.POPULAR, reason, feature_state)

    # -- steps -------------------------------------------------------------------------------

    def _route(self, user_id: int, pin_version: int | None) -> Route:
        if self.rollout is not None:
            return self.rollout.route(user_id, pin_version)
        return Route(version=pin_version) if pin_version is not None else NO_ROLLOUT

    def _ask_primary(
        self,
        feats: UserFeatures,
        k: int,
        exclude: list[int],
        timeout_s: float,
        version: int | None,
        categories: CategoryFilter = NO_FILTER,
    ) -> Awaitable[TierResult]:
        assert self.primary is not None
        if categories:  # a filter: the primary must take it (and the version, None or not)
            filtered = cast(FilteredPrimary, self.primary)
            return filtered.recommend(
                feats,
                k=k,
                exclude=exclude,
                timeout_s=timeout_s,
                headers=_traceparent(),
                version=version,
                categories=categories,
            )
        if version is None:  # no rollout: the call every PrimaryTier understands
            return self.primary.recommend(
                feats, k=k, exclude=exclude, timeout_s=timeout_s, headers=_traceparent()
            )
        primary = cast(VersionedPrimary, self.primary)
        return primary.recommend(
            feats,
            k=k,
            exclude=exclude,
            timeout_s=timeout_s,
            headers=_traceparent(),
            version=version,
        )

    def _shadow_call(
        self, feats: UserFeatures, k: int, exclude: list[int]
    ) -> Callable[[int], Awaitable[TierResult]]:
        """The mirror's call: the full primary timeout (it delays no one), no breaker verdict."""
        timeout_s = self.config.primary_timeout_s
        return lambda version: self._ask_primary(feats, k, exclude, timeout_s, version)

    def _too_busy_for_als(self, reason: FallbackReason | None) -> bool:
        """After a timeout on a saturated loop, ALS would only add to the overload."""
        return reason in _OVERLOAD_REASONS and self.saturated()

    def _left(self, deadline: float) -> float:
        return deadline - self.clock() - _RESERVE_S

    async def _read_features(
        self, user_id: int, deadline: float
    ) -> tuple[UserFeatures | None, FeatureState]:
        if self.features is None:
            return None, FeatureState.DISABLED
        budget = min(self.config.feature_timeout_s, self._left(deadline))
        with tracer.start_as_current_span("features.read") as span:
            started = self.clock()
            try:
                feats = await self.features.read(user_id, timeout_s=budget)
            except UpstreamError as exc:
                kind = "timeout" if isinstance(exc, UpstreamTimeout) else "error"
                self.metrics.feature_errors.labels(kind=kind).inc()
                span.set_attribute("feature.outcome", f"unavailable:{kind}")
                self._log.warning(("features", kind), "features unavailable: %s", exc.detail)
                return None, FeatureState.UNAVAILABLE
            except Exception as exc:  # a bug or a library error: the features are unavailable
                self.metrics.feature_errors.labels(kind="error").inc()
                self._crashed("features", exc, span)
                return None, FeatureState.UNAVAILABLE
            finally:
                self.metrics.feature_seconds.observe(self.clock() - started)
            state = FeatureState.OK if feats is not None else FeatureState.MISSING
            span.set_attribute("feature.outcome", state.value)
            return feats, state

    async def _call_primary(
        self,
        feats: UserFeatures,
        k: int,
        exclude: list[int],
        skip: set[int],
        deadline: float,
        route: Route = NO_ROLLOUT,
        categories: CategoryFilter = NO_FILTER,
    ) -> tuple[TierResult | None, FallbackReason | None]:
        """The primary's valid answer (reason None), or None and why it was not served.

        Every call that got a permit gives the breaker a verdict: an error, an exception or an
        invalid answer is a failure (and also slow when it took longer than the threshold); a
        call cut short by the request's own deadline, or cancelled, gives none.
        """
        assert self.primary is not None
        permit = self.breaker.try_acquire()
        if permit is None:
            return None, FallbackReason.BREAKER_OPEN
        budget = min(self.config.primary_timeout_s, self._left(deadline))
        if budget < self.config.min_tier_s:
            self.breaker.release(permit)
            return None, FallbackReason.TIMEOUT
        cut_short = budget < self.config.primary_timeout_s
        tier = Tier.TWO_TOWER
        with tracer.start_as_current_span("tier.two_tower") as span:
            span.set_attribute("breaker.state", self.breaker.state)
            span.set_attribute("k", k)
            started = self.clock()
            try:
                answer = await self._ask_primary(
                    feats, k, exclude, budget, route.version, categories
                )
                result = check_answer(
                    answer, k=k, skip=skip, catalogue=self.popular, categories=categories
                )
            except UpstreamTimeout as exc:
                elapsed = self.clock() - started
                self._rolled(route, CallOutcome.TIMEOUT, elapsed)
                if cut_short:  # our deadline, not the upstream's fault: no verdict
                    self.breaker.release(permit)
                else:
                    self._verdict(permit, route, elapsed, ok=False)
                self._failed(tier, TierOutcome.TIMEOUT, elapsed, span, exc)
                return None, FallbackReason.TIMEOUT
            except UpstreamError as exc:  # InvalidAnswer included: garbage counts as failure
                elapsed = self.clock() - started
                self._verdict(permit, route, elapsed, ok=False)
                self._failed(tier, _outcome(exc), elapsed, span, exc)
                invalid = isinstance(exc, InvalidAnswer)
                self._rolled(route, CallOutcome.INVALID if invalid else CallOutcome.ERROR, elapsed)
                return None, FallbackReason.ERROR
            except Exception as exc:  # a bug or a library error: this tier failed, no 500
                elapsed = self.clock() - started
                self._verdict(permit, route, elapsed, ok=False)
                self._rolled(route, CallOutcome.ERROR, elapsed)
                self._observe(tier, TierOutcome.ERROR, elapsed, span)
                self._crashed(tier.value, exc, span)
                return None, FallbackReason.ERROR
            except BaseException:
                self.breaker.release(permit)  # cancelled: the caller gave up, no verdict
                raise
            elapsed = self.clock() - started
            self._verdict(permit, route, elapsed, ok=True)
            self._rolled(route, CallOutcome.OK, elapsed)
            self._observe(tier, TierOutcome.OK, elapsed, span)
            span.set_attribute("model.version", result.model_version)
        return result, None

    def _verdict(self, permit: Permit, route: Route, elapsed: float, *, ok: bool) -> None:
        """The breaker's verdict on a call, except for a canary's candidate calls: a bad
        candidate must not open the breaker for every user (its errors are the rollout
        controller's to judge, and it rolls the candidate back); Triton being down still opens
        it through the stable calls."""
        if route.arm is Arm.CANDIDATE:
            self.breaker.release(permit)
        else:
            self.breaker.record(permit, duration=elapsed, ok=ok)

    def _rolled(self, route: Route, outcome: CallOutcome, elapsed: float) -> None:
        if self.rollout is not None:
            self.rollout.record_call(route, outcome, elapsed)

    async def _call_fallback(
        self,
        user_id: int,
        k: int,
        exclude: list[int],
        skip: set[int],
        deadline: float,
        categories: CategoryFilter = NO_FILTER,
    ) -> tuple[TierResult | None, FallbackReason | None]:
        assert self.fallback is not None
        budget = min(self.config.mf_timeout_s, self._left(deadline))
        if budget < self.config.min_tier_s:
            return None, None
        tier = Tier.ALS
        with tracer.start_as_current_span("tier.als") as span:
            span.set_attribute("k", k)
            started = self.clock()
            try:
                answer = await self._ask_fallback(user_id, k, exclude, budget, categories)
                result = check_answer(
                    answer, k=k, skip=skip, catalogue=self.popular, categories=categories
                )
            except UnknownUser:
                self._observe(tier, TierOutcome.UNKNOWN_USER, self.clock() - started, span)
                return None, FallbackReason.COLD_START
            except UpstreamError as exc:
                self._failed(tier, _outcome(exc), self.clock() - started, span, exc)
                return None, None
            except Exception as exc:  # a bug or a library error: this tier failed, no 500
                self._observe(tier, TierOutcome.ERROR, self.clock() - started, span)
                self._crashed(tier.value, exc, span)
                return None, None
            self._observe(tier, TierOutcome.OK, self.clock() - started, span)
            span.set_attribute("model.version", result.model_version)
        return result, None

    def _ask_fallback(
        self,
        user_id: int,
        k: int,
        exclude: list[int],
        timeout_s: float,
        categories: CategoryFilter,
    ) -> Awaitable[TierResult]:
        assert self.fallback is not None
        if categories:
            filtered = cast(FilteredFallback, self.fallback)
            return filtered.recommend(
                user_id,
                k=k,
                exclude=exclude,
                timeout_s=timeout_s,
                headers=_traceparent(),
                categories=categories,
            )
        return self.fallback.recommend(
            user_id, k=k, exclude=exclude, timeout_s=timeout_s, headers=_traceparent()
        )

    def _observe(self, tier: Tier, outcome: TierOutcome, elapsed: float, span: trace.Span) -> None:
        self.metrics.upstream_seconds.labels(tier=tier.value, outcome=outcome.value).observe(
            elapsed
        )
        span.set_attribute("tier.outcome", outcome.value)

    def _failed(
        self,
        tier: Tier,
        outcome: TierOutcome,
        elapsed: float,
        span: trace.Span,
        exc: UpstreamError,
    ) -> None:
        self._observe(tier, outcome, elapsed, span)
        span.set_status(trace.Status(trace.StatusCode.ERROR, exc.detail))
        if isinstance(exc, InvalidAnswer):
            self.metrics.invalid_answers.labels(tier=tier.value, rule=exc.rule.value).inc()
            self._log.warning(
                (tier, outcome, exc.rule), "%s answer refused, rule %s", tier.value, exc.detail
            )
        else:
            self._log.warning(
                (tier, outcome),
                "%s %s after %.1f ms: %s",
                tier.value,
                outcome.value,
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


def first_reason(feature_state: FeatureState) -> FallbackReason | None:
    """The fallback reason the feature read alone gives (None: features are there)."""
    if feature_state is FeatureState.UNAVAILABLE:
        return FallbackReason.FEATURES_UNAVAILABLE
    if feature_state is FeatureState.MISSING:
        return FallbackReason.COLD_START
    return None


def _outcome(exc: UpstreamError) -> TierOutcome:
    if isinstance(exc, InvalidAnswer):
        return TierOutcome.INVALID
    return TierOutcome.TIMEOUT if isinstance(exc, UpstreamTimeout) else TierOutcome.ERROR
