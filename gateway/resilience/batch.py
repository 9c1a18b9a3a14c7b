"""Many users in one request (``POST /v1/recommendations:batch``), on the chain's pieces.

One deadline for the whole batch (``GATEWAY_DEADLINE_MS``, from the request's arrival), spent as
the single-user chain spends it, with each step done once for all users:

1. **features**: one online-store read for every distinct user (``read_many``: one pipelined
   round trip); a failure or a timeout is ``features_unavailable`` for every user, a user the
   store lacks is ``cold_start``.
2. **primary**: the users with features, as the rows of one Triton request per model version
   (a rollout routes each user to the stable or the candidate version: one call per version
   present in the batch, run concurrently; without a rollout, one call). Each call takes one
   breaker permit and gives one verdict: a failure when the call fails or times out, or when
   any of its rows is refused by the answer check (garbage must open the breaker as fast as
   it does for single requests); a slow call is slow for every row. Each row's answer is
   checked on its own (``check_answer``, the single-user rules with that user's k, exclusions
   and category filter): a refused row falls back alone (``error``), the others are served.
   A primary without ``recommend_many`` is asked one row at a time (the chain's own call).
3. **fallbacks, per user**: every user the primary did not serve (cold start, features
   unavailable, breaker open, timeout, an error, a refused row) goes through the chain's
   ``fall_back`` (ALS, then popular) concurrently, within the same deadline.

Not mirrored to a shadow candidate. A category filter the catalogue cannot check refuses the
whole batch (``FiltersUnavailable``), like a single request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from opentelemetry import trace

from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.resilience.chain import (
    FallbackChain,
    FeatureState,
    Outcome,
    TierOutcome,
    _traceparent,
    first_reason,
)
from gateway.rollout.router import CallOutcome, Route
from gateway.schemas import FallbackReason, Tier
from gateway.tiers.types import (
    NO_FILTER,
    BatchFeatureSource,
    BatchPrimary,
    CategoryFilter,
    PrimaryRow,
    TierResult,
    UserFeatures,
)
from gateway.tiers.validation import InvalidAnswer, Rule, check_answer

tracer = trace.get_tracer("gateway")


@dataclass(frozen=True)
class BatchEntry:
    """One user of a batch, validated by the route."""

    user_id: int
    k: int
    exclude: Sequence[int] = ()
    categories: CategoryFilter = NO_FILTER


@dataclass
class _Row:
    """A batch entry on its way through the steps."""

    entry: BatchEntry
    feats: UserFeatures | None
    feature_state: FeatureState
    skip: set[int]
    exclude_all: list[int]
    reason: FallbackReason | None
    route: Route | None = None
    served: TierResult | None = None


class BatchRecommender:
    """See the module docstring; one per app, over the app's ``FallbackChain``."""

    def __init__(self, chain: FallbackChain) -> None:
        self.chain = chain

    async def recommend(
        self, entries: Sequence[BatchEntry], *, arrived: float | None = None
    ) -> list[Outcome]:
        """One outcome per entry, in order; never raises an upstream error."""
        chain = self.chain
        for entry in entries:
            chain.check_filter(entry.categories)
        deadline = (chain.clock() if arrived is None else arrived) + chain.config.deadline_s
        feats, state = await self._read_features([e.user_id for e in entries], deadline)
        rows = []
        for entry in entries:
            user_feats = feats.get(entry.user_id) if feats is not None else None
            row_state = state
            if state is FeatureState.OK and user_feats is None:
                row_state = FeatureState.MISSING
            skip, exclude_all = chain.skip_set(entry.user_id, entry.exclude, user_feats)
            rows.append(
                _Row(entry, user_feats, row_state, skip, exclude_all, first_reason(row_state))
            )
        await self._primary(rows, deadline)
        return list(await asyncio.gather(*(self._finish(row, deadline) for row in rows)))

    # -- steps -------------------------------------------------------------------------------

    async def _read_features(
        self, user_ids: list[int], deadline: float
    ) -> tuple[dict[int, UserFeatures | None] | None, FeatureState]:
        """Every user's features in one read (OK), or None and why not."""
        chain = self.chain
        source = chain.features
        if source is None:
            return None, FeatureState.DISABLED
        if not hasattr(source, "read_many"):  # a single-user source: its reads, concurrently
            results = await asyncio.gather(
                *(chain._read_features(u, deadline) for u in dict.fromkeys(user_ids))
            )
            feats = {u: f for u, (f, _) in zip(dict.fromkeys(user_ids), results, strict=True)}
            if any(s is FeatureState.UNAVAILABLE for _, s in results):
                return None, FeatureState.UNAVAILABLE
            return feats, FeatureState.OK
        budget = min(chain.config.feature_timeout_s, chain._left(deadline))
        with tracer.start_as_current_span("features.read_many") as span:
            span.set_attribute("users", len(user_ids))
            started = chain.clock()
            try:
                many = await cast(BatchFeatureSource, source).read_many(user_ids, timeout_s=budget)
            except UpstreamError as exc:
                kind = "timeout" if isinstance(exc, UpstreamTimeout) else "error"
                chain.metrics.feature_errors.labels(kind=kind).inc()
                span.set_attribute("feature.outcome", f"unavailable:{kind}")
                chain._log.warning(("features", kind), "features unavailable: %s", exc.detail)
                return None, FeatureState.UNAVAILABLE
            except Exception as exc:  # a bug or a library error: the features are unavailable
                chain.metrics.feature_errors.labels(kind="error").inc()
                chain._crashed("features", exc, span)
                return None, FeatureState.UNAVAILABLE
            finally:
                chain.metrics.feature_seconds.observe(chain.clock() - started)
            span.set_attribute("feature.outcome", FeatureState.OK.value)
            return many, FeatureState.OK

    async def _primary(self, rows: list[_Row], deadline: float) -> None:
        """Ask the primary for every row with features, one call per model version."""
        chain = self.chain
        asking = [r for r in rows if r.feats is not None]
        if chain.primary is None or not asking:
            return
        if not hasattr(chain.primary, "recommend_many"):  # one call per row, the chain's own
            await asyncio.gather(*(self._one(r, deadline) for r in asking))
            return
        groups: dict[int | None, list[_Row]] = {}
        for r in asking:
            r.route = chain._route(r.entry.user_id, None)
            groups.setdefault(r.route.version, []).append(r)
        await asyncio.gather(
            *(self._call(group, version, deadline) for version, group in groups.items())
        )
        if chain.rollout is not None:
            for r in asking:
                assert r.route is not None
                chain.rollout.record_served(r.route, by_primary=r.served is not None)

    async def _one(self, row: _Row, deadline: float) -> None:
        chain = self.chain
        assert row.feats is not None
        route = chain._route(row.entry.user_id, None)
        result, reason = await chain._call_primary(
            row.feats,
            row.entry.k,
            row.exclude_all,
            row.skip,
            deadline,
            route,
            row.entry.categories,
        )
        if chain.rollout is not None:
            chain.rollout.record_served(route, by_primary=result is not None)
        row.served, row.reason = result, (None if result is not None else reason)

    async def _call(self, group: list[_Row], version: int | None, deadline: float) -> None:
        """One multi-row call for ``group`` (same version): the chain's breaker and metrics
        rules, with the verdict given for the call as a whole."""
        chain = self.chain
        route = group[0].route
        assert route is not None
        permit = chain.breaker.try_acquire()
        if permit is None:
            self._fail(group, FallbackReason.BREAKER_OPEN)
            return
        budget = min(chain.config.primary_timeout_s, chain._left(deadline))
        if budget < chain.config.min_tier_s:
            chain.breaker.release(permit)
            self._fail(group, FallbackReason.TIMEOUT)
            return
        cut_short = budget < chain.config.primary_timeout_s
        tier = Tier.TWO_TOWER
        primary = cast(BatchPrimary, chain.primary)
        rows = [
            PrimaryRow(r.feats, r.entry.k, r.exclude_all, r.entry.categories)
            for r in group
            if r.feats is not None
        ]
        with tracer.start_as_current_span("tier.two_tower") as span:
            span.set_attribute("breaker.state", chain.breaker.state)
            span.set_attribute("rows", len(rows))
            started = chain.clock()
            try:
                answers = await primary.recommend_many(
                    rows, timeout_s=budget, headers=_traceparent(), version=version
                )
                if len(answers) != len(rows):
                    raise InvalidAnswer(Rule.FORMAT, f"{len(answers)} answers for {len(rows)} rows")
            except UpstreamTimeout as exc:
                elapsed = chain.clock() - started
                self._rolled(group, CallOutcome.TIMEOUT, elapsed)
                if cut_short:
                    chain.breaker.release(permit)
                else:
                    chain._verdict(permit, route, elapsed, ok=False)
                chain._failed(tier, TierOutcome.TIMEOUT, elapsed, span, exc)
                self._fail(group, FallbackReason.TIMEOUT)
                return
            except UpstreamError as exc:  # InvalidAnswer included: the outputs as a whole
                elapsed = chain.clock() - started
                chain._verdict(permit, route, elapsed, ok=False)
                outcome = (
                    TierOutcome.INVALID if isinstance(exc, InvalidAnswer) else TierOutcome.ERROR
                )
                chain._failed(tier, outcome, elapsed, span, exc)
                invalid = isinstance(exc, InvalidAnswer)
                self._rolled(group, CallOutcome.INVALID if invalid else CallOutcome.ERROR, elapsed)
                self._fail(group, FallbackReason.ERROR)
                return
            except Exception as exc:  # a bug or a library error: this tier failed, no 500
                elapsed = chain.clock() - started
                chain._verdict(permit, route, elapsed, ok=False)
                self._rolled(group, CallOutcome.ERROR, elapsed)
                chain._observe(tier, TierOutcome.ERROR, elapsed, span)
                chain._crashed(tier.value, exc, span)
                self._fail(group, FallbackReason.ERROR)
                return
            except BaseException:
                chain.breaker.release(permit)  # cancelled: no verdict
                raise
            elapsed = chain.clock() - started
            refused = 0
            for row, answer in zip(group, answers, strict=True):
                try:
                    if isinstance(answer, Exception):
                        raise answer
                    row.served = check_answer(
                        answer,
                        k=row.entry.k,
                        skip=row.skip,
                        catalogue=chain.popular,
                        categories=row.entry.categories,
                    )
                    row.reason = None
                    self._rolled([row], CallOutcome.OK, elapsed)
                except InvalidAnswer as exc:
                    refused += 1
                    chain.metrics.invalid_answers.labels(tier=tier.value, rule=exc.rule.value).inc()
                    chain._log.warning(
                        (tier, TierOutcome.INVALID, exc.rule),
                        "%s answer refused, rule %s",
                        tier.value,
                        exc.detail,
                    )
                    self._rolled([row], CallOutcome.INVALID, elapsed)
                    row.reason = FallbackReason.ERROR
            chain._verdict(permit, route, elapsed, ok=refused == 0)
            outcome = TierOutcome.OK if refused == 0 else TierOutcome.INVALID
            chain._observe(tier, outcome, elapsed, span)
            span.set_attribute("rows.refused", refused)

    def _fail(self, group: list[_Row], reason: FallbackReason) -> None:
        for r in group:
            r.reason = reason

    def _rolled(self, group: list[_Row], outcome: CallOutcome, elapsed: float) -> None:
        rollout = self.chain.rollout
        if rollout is not None:
            for r in group:
                assert r.route is not None
                rollout.record_call(r.route, outcome, elapsed)

    async def _finish(self, row: _Row, deadline: float) -> Outcome:
        if row.served is not None:
            return Outcome(row.served, Tier.TWO_TOWER, None, row.feature_state)
        e = row.entry
        return await self.chain.fall_back(
            e.user_id,
            k=e.k,
            exclude_all=row.exclude_all,
            skip=row.skip,
            deadline=deadline,
            # features read fine but the primary was not asked (none configured): error, as
            # the single-user chain says
            reason=row.reason if row.reason is not None else FallbackReason.ERROR,
            feature_state=row.feature_state,
            categories=e.categories,
        )
