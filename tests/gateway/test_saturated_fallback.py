"""Under overload the chain degrades to the cheapest answer: after a timeout on a saturated
event loop, ALS (an HTTP call that costs the gateway more than the primary) is skipped and
popular answers; faults that are not overload still go to ALS, and the skip ends with the lag."""

from __future__ import annotations

import asyncio

from gateway.components import build_breaker, chain_config
from gateway.edge.admission import AdaptiveLimit
from gateway.metrics import GatewayMetrics
from gateway.resilience.chain import FallbackChain
from gateway.schemas import FallbackReason, Tier
from gateway.settings import GatewaySettings
from tests.gateway.fakes import Fakes


def make_chain(fakes: Fakes, admission: AdaptiveLimit) -> tuple[FallbackChain, GatewayMetrics]:
    settings = GatewaySettings(triton_url="t:1", mf_url="http://mf", feature_timeout_ms=20)
    metrics = GatewayMetrics()
    chain = FallbackChain(
        config=chain_config(settings),
        popular=fakes.popular,
        breaker=build_breaker(settings, metrics),
        metrics=metrics,
        features=fakes.features,
        primary=fakes.primary,
        fallback=fakes.fallback,
        saturated=admission.saturated,
    )
    return chain, metrics


def skipped(metrics: GatewayMetrics) -> float:
    value = metrics.registry.get_sample_value(
        "gateway_fallbacks_skipped_total", {"tier": "als", "cause": "saturated"}
    )
    return value or 0.0


def test_a_timeout_on_a_saturated_loop_is_answered_by_popular_not_als() -> None:
    fakes, admission = Fakes(), AdaptiveLimit(ceiling=64)
    chain, metrics = make_chain(fakes, admission)
    fakes.features.mode = "hang"
    admission.observe_lag(0.080)  # the loop woke 80 ms late: saturated
    outcome = asyncio.run(chain.recommend(user_id=3, k=5, exclude=[]))
    assert outcome.tier is Tier.POPULAR
    assert outcome.reason is FallbackReason.FEATURES_UNAVAILABLE
    assert fakes.fallback.calls == 0 and skipped(metrics) == 1.0

    admission.observe_lag(0.001)  # the overload ended: ALS is tried again at once
    outcome = asyncio.run(chain.recommend(user_id=3, k=5, exclude=[]))
    assert outcome.tier is Tier.ALS and fakes.fallback.calls == 1 and skipped(metrics) == 1.0


def test_a_primary_timeout_on_a_saturated_loop_skips_als_too() -> None:
    fakes, admission = Fakes(), AdaptiveLimit(ceiling=64)
    chain, _ = make_chain(fakes, admission)
    fakes.primary.mode = "hang"
    admission.observe_lag(0.050)
    outcome = asyncio.run(chain.recommend(user_id=3, k=5, exclude=[]))
    assert (outcome.tier, outcome.reason) == (Tier.POPULAR, FallbackReason.TIMEOUT)
    assert fakes.fallback.calls == 0


def test_faults_that_are_not_overload_still_fall_back_to_als_on_a_busy_loop() -> None:
    fakes, admission = Fakes(), AdaptiveLimit(ceiling=64)
    chain, metrics = make_chain(fakes, admission)
    fakes.primary.mode = "error"  # a broken primary is not overload: ALS is the better answer
    admission.observe_lag(0.050)
    outcome = asyncio.run(chain.recommend(user_id=3, k=5, exclude=[]))
    assert (outcome.tier, outcome.reason) == (Tier.ALS, FallbackReason.ERROR)
    assert skipped(metrics) == 0.0
