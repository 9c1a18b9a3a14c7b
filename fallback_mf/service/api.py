"""HTTP routes of the MF service: recommendations, probes, metrics, and the internal reload."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from typing import Annotated

import orjson
from fastapi import APIRouter, Body, Path, Query, Request, Response

from fallback_mf.schemas import (
    CATEGORY_PATTERN,
    MAX_CATEGORY_LENGTH,
    MAX_FILTER_CATEGORIES,
    MODEL_VERSION_HEADER,
    RECOMMENDATIONS_PATH,
    RELOAD_PATH,
    ErrorResponse,
    RecommendationResponse,
    ReloadRequest,
    ReloadResponse,
)
from fallback_mf.service.admin import ReloadThrottle, check_admin
from fallback_mf.service.deps import MetricsDep, SettingsDep, StoreDep
from fallback_mf.service.errors import CategoriesUnavailable, InvalidRequest, ReloadFailed
from fallback_mf.service.metrics import CONTENT_TYPE
from fallback_mf.service.model import Recommendation
from fallback_mf.service.scoring import CategoriesUnavailable as NoCategories

logger = logging.getLogger(__name__)

INT64_MAX = 2**63 - 1
router = APIRouter()


def parse_exclude(raw: str | None, *, limit: int) -> tuple[int, ...]:
    """``"3,17"`` -> ``(3, 17)``; empty -> ``()``; :class:`InvalidRequest` when malformed."""
    if raw is None or not raw.strip():
        return ()
    parts = raw.split(",")
    if len(parts) > limit:
        raise InvalidRequest(f"exclude lists {len(parts)} items, at most {limit} allowed")
    try:
        ids = tuple(int(part.strip()) for part in parts)
    except ValueError:
        raise InvalidRequest(
            f"exclude must be comma-separated integer item ids, got {raw[:100]!r}"
        ) from None
    if any(not -INT64_MAX <= i <= INT64_MAX for i in ids):
        raise InvalidRequest("exclude holds an item id outside the int64 range")
    return ids


_CATEGORY = re.compile(CATEGORY_PATTERN)


def parse_categories(values: list[str] | None, *, name: str) -> tuple[str, ...]:
    """Distinct category names in order; :class:`InvalidRequest` for too many or a bad one."""
    if not values:
        return ()
    if len(values) > MAX_FILTER_CATEGORIES:
        raise InvalidRequest(
            f"{name} lists {len(values)} categories, at most {MAX_FILTER_CATEGORIES} allowed"
        )
    for value in values:
        if len(value) > MAX_CATEGORY_LENGTH or not _CATEGORY.fullmatch(value):
            raise InvalidRequest(
                f"{name}: a category is 1-{MAX_CATEGORY_LENGTH} characters without control "
                "characters or commas"
            )
    return tuple(dict.fromkeys(values))


@router.get(
    RECOMMENDATIONS_PATH,
    response_model=RecommendationResponse,
    responses={
        409: {
            "model": ErrorResponse,
            "description": "a category filter, but the artifact records no item categories",
        },
        422: {"description": "malformed user id, k out of range, malformed exclude or categories"},
        503: {"model": ErrorResponse, "description": "no model loaded yet"},
    },
    tags=["recommendations"],
)
async def recommendations(
    user_id: Annotated[int, Path(ge=0, le=INT64_MAX, description="the data set's own user id")],
    store: StoreDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    k: Annotated[
        int | None, Query(ge=1, description="items to return (default MF_DEFAULT_K)")
    ] = None,
    exclude: Annotated[
        str | None,
        Query(description="comma-separated item ids never to return", examples=["3,17,42"]),
    ] = None,
    include_categories: Annotated[
        list[str] | None,
        Query(description="only items of these categories (repeat the parameter)"),
    ] = None,
    exclude_categories: Annotated[
        list[str] | None,
        Query(description="no item of these categories (repeat the parameter)"),
    ] = None,
) -> Response:
    """Top-k items for ``user_id`` by ALS; popular items (``known_user: false``) for a new user.

    The user's training items, and the ``exclude`` ids, are never returned. Fewer than ``k``
    items come back only when the catalogue has fewer left (of the allowed categories, when
    ``include_categories`` / ``exclude_categories`` filter them: applied before the top-k).
    """
    k = settings.default_k if k is None else k
    if k > settings.max_k:
        raise InvalidRequest(f"k must be between 1 and {settings.max_k}, got {k}")
    excluded = parse_exclude(exclude, limit=settings.max_exclude)
    include = parse_categories(include_categories, name="include_categories")
    exclude_cats = parse_categories(exclude_categories, name="exclude_categories")
    loaded = store.current  # read the reference once: a concurrent reload cannot mix models
    rec: Recommendation
    # Measured here (cascade.bench.mf_service.scoring_micro, one BLAS thread): scoring one
    # user takes ~57 us at 3K items, ~160 us at 10K, ~330 us at 20K, 6-11 ms at 100K; an
    # asyncio.to_thread hop costs ~54 us median but up to ~3 ms at p99 on a busy 2-core box.
    # So small catalogues (MF_INLINE_MAX_ITEMS, default 10K) score inline: the loop is blocked
    # for less than a hop would cost. Large ones go to a worker thread so one request's
    # milliseconds don't stall the others (numpy releases the GIL in the product and the
    # partition).
    score = functools.partial(
        loaded.recommend,
        user_id,
        k=k,
        exclude=excluded,
        include_categories=include,
        exclude_categories=exclude_cats,
    )
    try:
        if loaded.model.n_items <= settings.inline_max_items:
            rec = score()
        else:
            rec = await asyncio.to_thread(score)
    except NoCategories as exc:
        raise CategoriesUnavailable(str(exc)) from None
    metrics.recommendations.labels("true" if rec.known_user else "false").inc()
    # Serialized directly (orjson) in the RecommendationResponse shape: validating 20-100 pydantic
    # items per answer cost ~0.3 ms of CPU here; tests validate the shape against the schema.
    body = {
        "user_id": user_id,
        "items": [
            {"item_id": i, "score": s} for i, s in zip(rec.item_ids, rec.scores, strict=True)
        ],
        "model_version": rec.model_version,
        "known_user": rec.known_user,
    }
    return Response(
        content=orjson.dumps(body),
        media_type="application/json",
        headers={MODEL_VERSION_HEADER: rec.model_version},
    )


@router.get("/healthz", tags=["probes"])
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", tags=["probes"], responses={503: {"model": ErrorResponse}})
async def readyz(store: StoreDep) -> dict[str, str]:
    """Readiness: a model is loaded (503 ``model_not_ready`` otherwise)."""
    return {"status": "ready", "model_version": store.current.version}


@router.get("/metrics", tags=["probes"], response_class=Response)
async def metrics_endpoint(metrics: MetricsDep) -> Response:
    """Prometheus metrics."""
    return Response(content=metrics.exposition(), media_type=CONTENT_TYPE)


@router.post(
    RELOAD_PATH,
    tags=["internal"],
    responses={
        401: {"model": ErrorResponse, "description": "MF_ADMIN_TOKEN is set and was not sent"},
        403: {"model": ErrorResponse, "description": "no MF_ADMIN_TOKEN: loopback peers only"},
        409: {"model": ErrorResponse, "description": "the artifact could not be loaded"},
        429: {"model": ErrorResponse, "description": "within MF_RELOAD_MIN_INTERVAL_S of the last"},
    },
)
async def reload_model(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    body: Annotated[ReloadRequest | None, Body()] = None,
) -> ReloadResponse:
    """INTERNAL (not for clients; keep it off the public ingress): load a model version and swap it in.

    Needs ``Authorization: Bearer $MF_ADMIN_TOKEN``, or a loopback peer when no token is set;
    at most one call per ``MF_RELOAD_MIN_INTERVAL_S`` (429 otherwise). Without a ``version``,
    loads what ``latest`` names (or the pinned ``MF_VERSION``). Requests in flight finish on the
    old model; none is dropped. On failure the old model keeps serving.
    """
    check_admin(request, settings)
    throttle: ReloadThrottle = request.app.state.reload_throttle
    throttle.admit()
    try:
        previous, current, changed = await store.reload(body.version if body else None)
    except ReloadFailed:
        metrics.reloads.labels("failed").inc()
        raise
    metrics.reloads.labels("loaded").inc()
    return ReloadResponse(previous_version=previous, model_version=current, reloaded=changed)
