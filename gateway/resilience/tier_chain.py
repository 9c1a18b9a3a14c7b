"""What the deadline-driven chains share: the user path's ``FallbackChain``
(``gateway.resilience.chain``) and the similar-items ``SimilarChain`` (``gateway.similar``).

A remote tier is asked with the time its own timeout or the request's deadline leaves, whichever
is less, and skipped when that is under ``min_tier_s``. Its answer is checked
(``gateway.tiers.validation.check_answer``) before it is served. However the call ends it is
timed in ``gateway_upstream_seconds{tier,outcome}`` and its span gets ``tier.outcome``; an
upstream error or a refused answer is logged (and counted in ``gateway_invalid_answers_total``),
any other exception counted in ``gateway_tier_exceptions_total`` and logged with its traceback:
a tier's failure is an outcome, never a 500.

The primary goes behind a circuit breaker: no permit, no call (``breaker_open``); every call
that got a permit gives the breaker a verdict (an error, an exception or an invalid answer is a
failure), except a call cut short by the request's own deadline or cancelled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

from opentelemetry import propagate, trace

from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.metrics import GatewayMetrics
from gateway.resilience.breaker import CircuitBreaker
from gateway.resilience.states import Permit
from gateway.schemas import FallbackReason
from gateway.throttled_log import ThrottledLog
from gateway.tiers.popular import PopularList
from gateway.tiers.types import NO_FILTER, CategoryFilter, TierResult
from gateway.tiers.validation import InvalidAnswer, check_answer

tracer = trace.get_tracer("gateway")

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


class TierOutcome(StrEnum):
    """How one tier call ended (the ``outcome`` label of ``gateway_upstream_seconds``)."""

    OK = "ok"
    TIMEOUT = "timeout"
    ERROR = "error"  # an upstream error, or an exception inside the call
    INVALID = "invalid"  # it answered, but the answer broke a rule (gateway.tiers.validation)
    UNKNOWN_USER = "unknown_user"  # the MF model never saw the user: cold start
    UNKNOWN_ITEM = "unknown_item"  # the model does not know the query item: cold start


# The fallback reason each outcome of the primary's call gives (None: it served).
_REASONS: dict[TierOutcome, FallbackReason | None] = {
    TierOutcome.OK: None,
    TierOutcome.TIMEOUT: FallbackReason.TIMEOUT,
    TierOutcome.ERROR: FallbackReason.ERROR,
    TierOutcome.INVALID: FallbackReason.ERROR,
    TierOutcome.UNKNOWN_USER: FallbackReason.COLD_START,
    TierOutcome.UNKNOWN_ITEM: FallbackReason.COLD_START,
}
# A model that does not know the query answered correctly: a success for the breaker.
_ANSWERED = frozenset({TierOutcome.OK, TierOutcome.UNKNOWN_USER, TierOutcome.UNKNOWN_ITEM})

Verdict = Callable[[Permit, float, bool], None]  # (permit, elapsed, ok): the breaker's verdict
Unknown = tuple[type[UpstreamError], TierOutcome]  # what a tier raises for an unknown query


@dataclass(frozen=True)
class TierCall:
    """A remote tier call to make: ``ask`` calls the tier (given its timeout); ``k``, ``skip``
    and ``categories`` are what its answer is checked against; ``unknown``: what the tier
    raises for a query its model does not know (a valid answer), and the outcome it gives."""

    tier: str  # the ``tier`` label (and span ``tier.<label>``)
    ask: Callable[[float], Awaitable[TierResult]]
    k: int
    skip: set[int]
    categories: CategoryFilter = NO_FILTER
    unknown: Unknown | None = None


@dataclass(frozen=True)
class Called:
    """How one tier call ended: its checked answer (outcome ``ok``) or None, and its time."""

    result: TierResult | None
    outcome: TierOutcome
    elapsed: float


def traceparent() -> dict[str, str]:
    """The current span's ``traceparent`` header, so the tier's spans join the request's."""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


def outcome_of(exc: UpstreamError) -> TierOutcome:
    """The outcome an upstream error (a refused answer included) gives."""
    if isinstance(exc, InvalidAnswer):
        return TierOutcome.INVALID
    return TierOutcome.TIMEOUT if isinstance(exc, UpstreamTimeout) else TierOutcome.ERROR


@dataclass(eq=False, repr=False, kw_only=True)
class TierChain:
    """A chain's shared state and tier calls (see the module docstring); ``_logger``: the
    subclass's module logger, which its throttled log writes to."""

    _logger: ClassVar[logging.Logger]

    config: ChainConfig
    popular: PopularList
    breaker: CircuitBreaker
    metrics: GatewayMetrics
    clock: Callable[[], float] = time.monotonic
    saturated: Callable[[], bool] = lambda: False
    _log: ThrottledLog = field(init=False)

    def __post_init__(self) -> None:
        self._log = ThrottledLog(self._logger)

    def _left(self, deadline: float) -> float:
        return deadline - self.clock() - _RESERVE_S

    async def _primary_call(
        self, call: TierCall, deadline: float, verdict: Verdict | None = None
    ) -> tuple[Called | None, FallbackReason | None]:
        """The primary's call behind the breaker: how it ended (None: not made) and the
        fallback reason it gives (None: it served). ``verdict``: how the breaker is told
        (default: ``breaker.record``)."""
        permit = self.breaker.try_acquire()
        if permit is None:
            return None, FallbackReason.BREAKER_OPEN
        budget = min(self.config.primary_timeout_s, self._left(deadline))
        if budget < self.config.min_tier_s:
            self.breaker.release(permit)
            return None, FallbackReason.TIMEOUT
        cut_short = budget < self.config.primary_timeout_s
        with tracer.start_as_current_span(f"tier.{call.tier}") as span:
            span.set_attribute("breaker.state", self.breaker.state)
            span.set_attribute("k", call.k)
            try:
                called = await self._call(call, budget, span)
            except BaseException:
                self.breaker.release(permit)  # cancelled: the caller gave up, no verdict
                raise
            ok = called.outcome in _ANSWERED
            if called.outcome is TierOutcome.TIMEOUT and cut_short:
                self.breaker.release(permit)  # our deadline, not the upstream's fault: no verdict
            elif verdict is not None:
                verdict(permit, called.elapsed, ok)
            else:
                self.breaker.record(permit, duration=called.elapsed, ok=ok)
        return called, _REASONS[called.outcome]

    async def _fallback_call(self, call: TierCall, deadline: float) -> Called | None:
        """A fallback's call: how it ended, or None when the time left is too short for it."""
        budget = min(self.config.mf_timeout_s, self._left(deadline))
        if budget < self.config.min_tier_s:
            return None
        with tracer.start_as_current_span(f"tier.{call.tier}") as span:
            span.set_attribute("k", call.k)
            return await self._call(call, budget, span)

    async def _call(self, call: TierCall, budget: float, span: trace.Span) -> Called:
        """Ask, check the answer, and record how it ended; only a cancellation raises."""
        tier, unknown = call.tier, call.unknown
        started = self.clock()
        try:
            answer = await call.ask(budget)
            result = check_answer(
                answer, k=call.k, skip=call.skip, catalogue=self.popular, categories=call.categories
            )
        except UpstreamError as exc:  # InvalidAnswer included: garbage counts as failure
            elapsed = self.clock() - started
            if unknown is not None and isinstance(exc, unknown[0]):
                self._observe(tier, unknown[1], elapsed, span)
                return Called(None, unknown[1], elapsed)
            outcome = outcome_of(exc)
            self._failed(tier, outcome, elapsed, span, exc)
            return Called(None, outcome, elapsed)
        except Exception as exc:  # a bug or a library error: this tier failed, no 500
            elapsed = self.clock() - started
            self._observe(tier, TierOutcome.ERROR, elapsed, span)
            self._crashed(tier, exc, span)
            return Called(None, TierOutcome.ERROR, elapsed)
        elapsed = self.clock() - started
        self._observe(tier, TierOutcome.OK, elapsed, span)
        span.set_attribute("model.version", result.model_version)
        return Called(result, TierOutcome.OK, elapsed)

    def _observe(self, tier: str, outcome: TierOutcome, elapsed: float, span: trace.Span) -> None:
        self.metrics.upstream_seconds.labels(tier=str(tier), outcome=outcome.value).observe(elapsed)
        span.set_attribute("tier.outcome", outcome.value)

    def _failed(
        self,
        tier: str,
        outcome: TierOutcome,
        elapsed: float,
        span: trace.Span,
        exc: UpstreamError,
    ) -> None:
        tier = str(tier)  # a Tier too (gateway.resilience.batch): named by its value
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
