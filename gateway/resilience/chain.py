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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from opentelemetry import trace

from gateway.errors import FiltersUnavailable, UnknownUser, UpstreamError, UpstreamTimeout
from gateway.resilience.states import Permit
from gateway.resilience.tier_chain import ChainConfig as ChainConfig
from gateway.resilience.tier_chain import TierCall, TierChain, traceparent
from gateway.resilience.tier_chain import TierOutcome as TierOutcome
from gateway.rollout.router import NO_ROLLOUT, Arm, CallOutcome, RolloutRouter, Route
from gateway.schemas import FallbackReason, Tier
from gateway.tiers.types import (
    NO_FILTER,
    CategoryFilter,
    FallbackTier,
    FeatureSource,
    PrimaryTier,
    TierResult,
    UserFeatures,
)

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("gateway")

# Fallback reasons that a saturated loop causes (a deadline missed), as opposed to a fault.
_OVERLOAD_REASONS = frozenset({FallbackReason.FEATURES_UNAVAILABLE, FallbackReason.TIMEOUT})


class FeatureState(StrEnum):
    """What the feature read gave (the ``feature.outcome`` span attribute)."""

    OK = "ok"
    MISSING = "missing"  # the store does not know the user: cold start
    UNAVAILABLE = "unavailable"  # the read failed or timed out
    DISABLED = "disabled"  # no feature source configured


@dataclass(frozen=True)
class Outcome:
    """What the chain served and why."""

    result: TierResult
    tier: Tier
    reason: FallbackReason | None
    features: FeatureState


_traceparent = traceparent  # the name gateway.resilience.batch imports


@dataclass(eq=False, repr=False, kw_only=True)
class FallbackChain(TierChain):
    """See the module docstring. One instance per app, shared by all requests."""

    _logger = logger

    features: FeatureSource | None = None
    primary: PrimaryTier | None = None
    fallback: FallbackTier | None = None
    rollout: RolloutRouter | None = field(default=None, init=False)  # set when rollouts are on

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
        # Only what is set goes: a PrimaryTier without rollouts or filters takes neither.
        extra: dict[str, Any] = {}
        if categories:  # a filter: the primary must take it (and the version, None or not)
            extra = {"version": version, "categories": categories}
        elif version is not None:  # a rollout's version (VersionedPrimary)
            extra = {"version": version}
        return self.primary.recommend(
            feats, k=k, exclude=exclude, timeout_s=timeout_s, headers=traceparent(), **extra
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
        call = TierCall(
            Tier.TWO_TOWER.value,
            lambda budget: self._ask_primary(feats, k, exclude, budget, route.version, categories),
            k=k,
            skip=skip,
            categories=categories,
        )
        called, reason = await self._primary_call(
            call,
            deadline,
            verdict=lambda permit, elapsed, ok: self._verdict(permit, route, elapsed, ok=ok),
        )
        if called is None:
            return None, reason
        self._rolled(route, CallOutcome(called.outcome.value), called.elapsed)  # the same names
        return called.result, reason

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
        call = TierCall(
            Tier.ALS.value,
            lambda budget: self._ask_fallback(user_id, k, exclude, budget, categories),
            k=k,
            skip=skip,
            categories=categories,
            unknown=(UnknownUser, TierOutcome.UNKNOWN_USER),
        )
        called = await self._fallback_call(call, deadline)
        if called is None:
            return None, None
        cold = called.outcome is TierOutcome.UNKNOWN_USER
        return called.result, FallbackReason.COLD_START if cold else None

    def _ask_fallback(
        self,
        user_id: int,
        k: int,
        exclude: list[int],
        timeout_s: float,
        categories: CategoryFilter,
    ) -> Awaitable[TierResult]:
        assert self.fallback is not None
        extra: dict[str, Any] = {"categories": categories} if categories else {}
        return self.fallback.recommend(
            user_id, k=k, exclude=exclude, timeout_s=timeout_s, headers=traceparent(), **extra
        )


def first_reason(feature_state: FeatureState) -> FallbackReason | None:
    """The fallback reason the feature read alone gives (None: features are there)."""
    if feature_state is FeatureState.UNAVAILABLE:
        return FallbackReason.FEATURES_UNAVAILABLE
    if feature_state is FeatureState.MISSING:
        return FallbackReason.COLD_START
    return None
