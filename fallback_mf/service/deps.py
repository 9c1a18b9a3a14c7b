"""``Annotated`` dependency aliases: route handlers get app state through these, never globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from fallback_mf.service.metrics import ServiceMetrics
from fallback_mf.service.model import ModelStore
from fallback_mf.service.settings import MfSettings


async def get_settings(request: Request) -> MfSettings:
    settings: MfSettings = request.app.state.settings
    return settings


async def get_store(request: Request) -> ModelStore:
    store: ModelStore = request.app.state.store
    return store


async def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[MfSettings, Depends(get_settings)]
StoreDep = Annotated[ModelStore, Depends(get_store)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
