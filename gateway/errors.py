"""Domain exceptions that know their HTTP status, and the ``ErrorResponse`` body, written once.

Tree::

    GatewayError                 (500, code "internal")
    ├── BadRequest               (422, "invalid_request")
    └── UpstreamError            (502, "upstream_error"): a tier failed; the chain catches these
        ├── UpstreamTimeout      (504, "upstream_timeout")
        ├── UpstreamUnavailable  (503, "upstream_unavailable")
        ├── UnknownUser          (404, "unknown_user"): the tier does not know the user
        └── InvalidAnswer        (502, "upstream_invalid"): it answered garbage
                                 (``gateway.tiers.validation``)

The front-door refusals are answered by pure ASGI middlewares before any route runs, in the same
``ErrorResponse`` shape: 401 ``unauthorized`` and 429 ``rate_limited`` (``gateway/edge/security.py``),
431 ``headers_too_large`` and 503 ``overloaded`` (``gateway/edge/limits.py``), 413
``payload_too_large`` and the last-resort 500 ``internal`` (``gateway/edge/middleware.py``).
Those refusals (everything but the 500) go through :func:`refuse`, which marks the request as
refused at the edge: its request metrics are labelled ``route="refused"``, so the SLO, the
alerts and the autoscaling signals (which select the recommendation routes) never count a
request that no route served (an unauthenticated flood must not page anyone or add replicas).
Domain, routing, body-decoding (400, 404, 405) and validation (422) errors are rendered by the
handlers in ``gateway/handlers.py``. All of them write the body with :func:`error_body`.

Tier clients turn their library's errors (httpx, tritonclient, redis) into ``UpstreamError``
subclasses, so the fallback chain catches one narrow family and nothing else.
"""

from __future__ import annotations

import orjson
from starlette.responses import Response
from starlette.types import Scope, Send


class GatewayError(Exception):
    """Base of the gateway's domain errors."""

    status_code = 500
    code = "internal"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(GatewayError):
    status_code = 422
    code = "invalid_request"


class VersionPinForbidden(GatewayError):
    """``model_version`` asked for by a caller whose key may not pin versions."""

    status_code = 403
    code = "version_pin_forbidden"


class FiltersUnavailable(GatewayError):
    """A category filter, but the served ALS artifact records no item categories: no tier's
    answer could be checked against the filter (train ALS again: ``cascade train mf``)."""

    status_code = 503
    code = "filters_unavailable"


class UpstreamError(GatewayError):
    status_code = 502
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    code = "upstream_timeout"


class UpstreamUnavailable(UpstreamError):
    status_code = 503
    code = "upstream_unavailable"


class UnknownUser(UpstreamError):
    status_code = 404
    code = "unknown_user"


def error_body(code: str, detail: str, request_id: str | None) -> bytes:
    """The ``ErrorResponse`` JSON, written in this one place."""
    return orjson.dumps({"code": code, "detail": detail, "request_id": request_id})


def error_response(
    request_id: str | None,
    status: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> Response:
    """The ``ErrorResponse`` as a response object (exception handlers, routes)."""
    return Response(
        error_body(code, detail, request_id),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


REFUSED_KEY = "refused"  # scope["state"]: True when the edge refused the request (see refuse)
REFUSED_ROUTE = "refused"  # the route label of such a request in the request metrics


async def send_error(
    send: Send,
    scope: Scope,
    *,
    status: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> None:
    """The ``ErrorResponse`` straight from a pure ASGI middleware (request id from the scope)."""
    payload = error_body(code, detail, scope.get("state", {}).get("request_id"))
    raw: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    raw += [(k.lower().encode(), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


async def refuse(
    send: Send,
    scope: Scope,
    *,
    status: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> None:
    """An edge refusal (401, 403, 413, 429, 431, 503 shed before the route): marked in the
    scope's state, so the request metrics count it under ``route="refused"``, then answered
    with :func:`send_error`."""
    scope.setdefault("state", {})[REFUSED_KEY] = True
    await send_error(send, scope, status=status, code=code, detail=detail, headers=headers)
