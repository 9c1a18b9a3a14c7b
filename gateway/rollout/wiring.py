"""Switch the rollout on inside the gateway's lifespan: the store, the state cache, the router
on the chain, the refresh/flush task and the controller task (``GATEWAY_ROLLOUT_REDIS_URL``
empty: nothing runs and the chain calls Triton as before)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from cascade.runtime.redact import redact_url
from cascade.runtime.tasks import stop_tasks
from gateway.metrics import LATENCY_BUCKETS
from gateway.resilience.chain import FallbackChain
from gateway.rollout.controller import RolloutController
from gateway.rollout.feedback import EventsConsumerCtr, RedisFeedback
from gateway.rollout.metrics import RolloutMetrics
from gateway.rollout.router import RolloutRouter
from gateway.rollout.settings import RolloutSettings
from gateway.rollout.store import RolloutStore, StateCache, connect

logger = logging.getLogger(__name__)


@dataclass
class RolloutRuntime:
    router: RolloutRouter | None = None
    store: RolloutStore | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def close(self) -> None:
        if self.router is not None:
            self.router.stopping = True  # its loop ends even if a Redis call ate the cancel
        stuck = await stop_tasks(self.tasks)
        if stuck:
            logger.warning("rollout tasks still running after shutdown began: %s", stuck)
        if self.router is not None:
            await self.router.drain()
            with contextlib.suppress(Exception):  # best effort: the last second of counts
                await self.router.flush()
        if self.store is not None:
            await self.store.close()


async def start(
    chain: FallbackChain,
    metrics: RolloutMetrics,
    *,
    model: str,
    saturated: Callable[[], bool],
    settings: RolloutSettings | None = None,
) -> RolloutRuntime:
    """Build and start the rollout for ``chain``; an empty runtime when it is off."""
    cfg = settings or RolloutSettings()
    if not cfg.redis_url:
        return RolloutRuntime()
    store = RolloutStore(connect(cfg.redis_url, timeout_s=cfg.timeout_ms / 1000), prefix=cfg.prefix)
    cache = StateCache(store)
    router = RolloutRouter(
        cache, metrics, bounds=LATENCY_BUCKETS, shadow_slots=cfg.shadow_slots, saturated=saturated
    )
    await cache.refresh()  # serve the right versions from the first request when Redis is up
    metrics.stale.set(1 if cache.stale else 0)
    chain.rollout = router
    runtime = RolloutRuntime(router=router, store=store)
    runtime.tasks.append(asyncio.create_task(router.run(refresh_s=cfg.refresh_s)))
    if cfg.controller:
        controller = RolloutController(
            store,
            bounds=LATENCY_BUCKETS,
            model=model,
            config=cfg.analysis(),
            interval_s=cfg.interval_s,
            ctr=EventsConsumerCtr(store, cfg.events_ctr_key)
            if cfg.events_ctr_key
            else RedisFeedback(store),
            metrics=metrics,
        )
        runtime.tasks.append(asyncio.create_task(controller.run()))
    logger.info(
        "rollout on: state %s at %s (%s)",
        store.state_key,
        redact_url(cfg.redis_url),
        cache.state.label() if not cache.stale else "unreadable, no rollout assumed",
    )
    return runtime
