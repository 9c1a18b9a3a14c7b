"""The events consumer service: ``create_app(settings=None)`` builds the app (probes, metrics)
whose lifespan owns the consumer (``events.consumer``), its Redis clients and the Feast store."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import FastAPI

from cascade.runtime import feature_names as names
from cascade.runtime.feature_online import aclose
from cascade.runtime.feature_store import open_store
from cascade.runtime.paths import Layout
from cascade.runtime.telemetry import configure_tracing
from events.api import router
from events.consumer import Consumer, activity_frame
from events.contract import EVENTS_DIR
from events.log import LogUnavailable
from events.metrics import ConsumerMetrics
from events.offline import OfflineBuffer
from events.settings import EventsSettings
from events.state import StateStore, UserState

if TYPE_CHECKING:
    from feast import FeatureStore

logger = logging.getLogger(__name__)
SERVICE_NAME = "events-consumer"
START_RETRY_S = 1.0


class ConfigError(Exception):
    """The consumer cannot run with this configuration (the message says what to fix)."""


async def build_consumer(
    settings: EventsSettings, metrics: ConsumerMetrics, store: FeatureStore | None = None
) -> Consumer:
    """The consumer with its Feast store (``store``: the one :func:`preflight` opened, else
    opened here), Redis clients and offline buffer (not started)."""
    import redis.asyncio as aioredis

    from cascade.runtime.feast_redis import FeastRedisReader, UnsupportedLayout

    if settings.redis_url is None:
        raise ConfigError("REDIS_URL is not set: the consumer writes to the Redis online store")
    layout = Layout.from_env()
    if store is None:
        store = await asyncio.to_thread(
            open_store, layout=layout, dataset=settings.dataset, project=settings.project
        )
    online = store.config.online_store
    if online.type != "redis":
        raise ConfigError(f"the online store is {online.type!r}; the consumer needs Redis")
    # Only a connect timeout: each write is bounded as a whole (events.consumer), since a
    # socket_timeout costs redis-py a timeout task per reply (a third of a batch's write here).
    online.connection_string += f",socket_connect_timeout={settings.redis_timeout_s}"
    # Our writes are stamped newer than anything stored (events.state), and one consumer owns a
    # user: Feast's read-before-write stamp check (a second round trip) is not needed.
    online.skip_dedup = True
    try:
        seed_reader: FeastRedisReader | None = FeastRedisReader.from_store(
            store, names.ALS_FEATURES
        )
    except UnsupportedLayout as exc:
        logger.warning("new users' seeds cannot be read (%s): states start empty", exc)
        seed_reader = None
    client = aioredis.Redis.from_url(
        settings.redis_url.get_secret_value(), socket_connect_timeout=settings.redis_timeout_s
    )
    state = StateStore(
        client,
        prefix=settings.key_prefix,
        dedup_ttl_s=settings.dedup_ttl_s,
        state_ttl_s=settings.state_ttl_s,
        served_ttl_s=settings.served_ttl_s,
    )

    async def feast_write(users: list[UserState]) -> None:
        await store.write_to_online_store_async(names.USER_ACTIVITY, df=activity_frame(users))

    offline = OfflineBuffer(
        layout.dataset_dir(settings.dataset) / EVENTS_DIR,
        consumer=settings.durable_name,
        flush_rows=settings.offline_flush_rows,
        flush_s=settings.offline_flush_s,
    )
    consumer = Consumer(
        settings,
        state=state,
        feast_write=feast_write,
        seed_reader=seed_reader,
        offline=offline,
        metrics=metrics,
    )
    consumer.closers = [client.aclose, functools.partial(aclose, store)]
    if seed_reader is not None:
        consumer.closers.append(seed_reader.aclose)
    return consumer


def preflight(settings: EventsSettings) -> FeatureStore:
    """Refuse a configuration the consumer cannot run with, in one clear line
    (:class:`ConfigError`): no Redis, or no ``user_activity`` view in the data set's registry.
    Returns the Feast store it opened, for :func:`create_app` (opening it costs ~1 s of the
    consumer's start, more on a busy machine: once is enough)."""
    if settings.redis_url is None:
        raise ConfigError("REDIS_URL is not set: the consumer writes to the Redis online store")
    store = open_store(layout=Layout.from_env(), dataset=settings.dataset, project=settings.project)
    try:
        store.get_feature_view(names.USER_ACTIVITY)
    except Exception as exc:  # Feast raises its own not-found types
        raise ConfigError(
            f"no feature view {names.USER_ACTIVITY!r} in the Feast registry of data set "
            f"{settings.dataset!r} ({exc.__class__.__name__}); run `cascade features apply`"
        ) from None
    return store


async def _start(consumer: Consumer) -> None:
    """Start, retrying while the log is unreachable (the process stays up, not ready)."""
    while True:
        try:
            await consumer.start()
            return
        except LogUnavailable as exc:
            logger.warning("event log not reachable, retrying: %s", exc.reason)
        await asyncio.sleep(START_RETRY_S)


def create_app(
    settings: EventsSettings | None = None, store: FeatureStore | None = None
) -> FastAPI:
    """Build the app; the consumer starts in the lifespan (with ``store`` when given)."""
    settings = settings or EventsSettings()
    metrics = ConsumerMetrics()
    tracer_provider = configure_tracing(service_name=SERVICE_NAME)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        consumer = await build_consumer(settings, metrics, store)
        app.state.consumer = consumer
        starter = asyncio.create_task(_start(consumer))
        try:
            yield
        finally:
            starter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starter
            await consumer.stop()
            for close in consumer.closers:
                with contextlib.suppress(Exception):  # best effort at exit
                    await close()
            tracer_provider.shutdown()

    app = FastAPI(
        title="Cascade events consumer",
        summary="Applies the event log to the online features; probes and metrics only.",
        version="1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.consumer = None
    app.include_router(router)
    return app
