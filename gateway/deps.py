"""``Annotated`` dependency aliases: the app's long-lived objects, owned by the lifespan.

Async on purpose: FastAPI runs a sync dependency in its thread pool (a thread hop per request).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.components import Components
from gateway.edge.auth import Principal
from gateway.edge.security import current_principal
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings


async def get_settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


async def get_components(request: Request) -> Components:
    components: Components = request.app.state.components
    return components


async def get_metrics(request: Request) -> GatewayMetrics:
    metrics: GatewayMetrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
ComponentsDep = Annotated[Components, Depends(get_components)]
MetricsDep = Annotated[GatewayMetrics, Depends(get_metrics)]
# The caller, as authenticated by the security middleware; also declares the security schemes.
PrincipalDep = Annotated[Principal, Depends(current_principal)]
