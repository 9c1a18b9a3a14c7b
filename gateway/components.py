"""Build and close the gateway's long-lived objects: clients, breaker, popular list, chain."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cascade.runtime.paths import Layout
from gateway.errors import UpstreamError
from gateway.metrics import GatewayMetrics
from gateway.resilience.breaker import CircuitBreaker, redis_storage
from gateway.resilience.chain import ChainConfig, FallbackChain
from gateway.settings import GatewaySettings
from gateway.similar import SimilarChain, build_similar
from gateway.tiers.features import FeastFeatureReader, FeaturesUnavailable
from gateway.tiers.mf import MfFallback
from gateway.tiers.popular import PopularList
from gateway.tiers.triton import TritonPrimary
from gateway.tiers.types import FeatureSource, UserFeatures

logger = logging.getLogger(__name__)


@dataclass
class Components:
    """What the lifespan owns. ``closers`` run at shutdown, in reverse order."""

    chain: FallbackChain
    primary: TritonPrimary | None = None
    fallback: MfFallback | None = None
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    similar: SimilarChain | None = None  # GET /v1/items/{item_id}/similar (gateway.similar)

    @property
    def popular(self) -> PopularList:
        return self.chain.popular

    @property
    def breaker(self) -> CircuitBreaker:
        return self.chain.breaker

    async def close(self) -> None:
        for close in reversed(self.closers):
            try:
                await close()
            except (UpstreamError, OSError, RuntimeError) as exc:
                logger.warning("error while closing: %r", exc)


class NoFeatures:
    """A feature source for when the store could not be opened: every read is unavailable."""

    def __init__(self, why: str) -> None:
        self.why = why

    async def read(self, user_id: int, *, timeout_s: float) -> UserFeatures | None:
        raise FeaturesUnavailable(self.why)


def chain_config(settings: GatewaySettings) -> ChainConfig:
    return ChainConfig(
        deadline_s=settings.deadline_ms / 1000,
        feature_timeout_s=settings.feature_timeout_ms / 1000,
        primary_timeout_s=settings.primary_timeout_ms / 1000,
        mf_timeout_s=settings.mf_timeout_ms / 1000,
    )


def build_breaker(settings: GatewaySettings, metrics: GatewayMetrics) -> CircuitBreaker:
    config = settings.breaker_config()
    if settings.breaker_force_open:  # held open: never half-opens by itself
        config = dataclasses.replace(config, wait_seconds=float("inf"))
    storage = None
    if settings.breaker_redis_url:
        storage = redis_storage(url=settings.breaker_redis_url, namespace="cascade:gateway:primary")
    breaker = CircuitBreaker(
        name="primary",
        config=config,
        storage=storage,
        on_transition=[metrics.on_breaker_transition],
    )
    if settings.breaker_force_open:
        breaker.force_open()
        logger.warning(
            "breaker held open by GATEWAY_BREAKER_FORCE_OPEN: the primary is never called"
        )
    metrics.on_breaker_transition(breaker.name, "none", breaker.state)
    return breaker


async def build_components(settings: GatewaySettings, metrics: GatewayMetrics) -> Components:
    """The real clients from ``settings`` (Feast opened in a thread: it imports slowly)."""
    popular = PopularList(artifacts_dir=settings.artifacts_dir)
    await asyncio.to_thread(popular.refresh)
    closers: list[Callable[[], Awaitable[None]]] = []
    features: FeatureSource | None = None
    if settings.features_enabled:
        try:
            reader = await asyncio.to_thread(
                FeastFeatureReader.open,
                layout=Layout(home=Layout.from_env().home),
                dataset=settings.dataset,
                socket_timeout_s=settings.feature_timeout_ms / 1000,
            )
            await reader.start()
            closers.append(reader.close)
            features = reader
            try:  # open the connection pool now, not on the first request (which would time out)
                await reader.read(0, timeout_s=2.0)
            except FeaturesUnavailable as exc:
                logger.warning("feature store warm-up read failed (serving anyway): %s", exc.detail)
        except Exception as exc:  # startup, not the request path: any failure means no features
            logger.error("feature store for %r not available: %r", settings.dataset, exc)
            features = NoFeatures(f"feature store not opened: {exc}")
    primary = None
    if settings.triton_url:
        primary = TritonPrimary(
            url=settings.triton_url, model=settings.triton_model, dataset_id=settings.dataset_id
        )
        closers.append(primary.close)
    fallback = None
    if settings.mf_url:
        fallback = MfFallback(base_url=settings.mf_url, timeout_s=settings.mf_timeout_ms / 1000)
        closers.append(fallback.close)
    chain = FallbackChain(
        config=chain_config(settings),
        popular=popular,
        breaker=build_breaker(settings, metrics),
        metrics=metrics,
        features=features,
        primary=primary,
        fallback=fallback,
    )
    similar = build_similar(
        settings, metrics, config=chain.config, popular=popular, mf=fallback, closers=closers
    )
    return Components(
        chain=chain, primary=primary, fallback=fallback, closers=closers, similar=similar
    )
