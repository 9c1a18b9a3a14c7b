"""Domain exceptions that know their HTTP status, rendered by one handler in ``main.py``.

Tree::

    GatewayError                 (500, code "internal")
    ├── BadRequest               (422, "invalid_request")
    ├── PayloadTooLarge          (413, "payload_too_large")
    ├── NotReady                 (503, "not_ready")
    └── UpstreamError            (502, "upstream_error"): a tier failed; the chain catches these
        ├── UpstreamTimeout      (504, "upstream_timeout")
        ├── UpstreamUnavailable  (503, "upstream_unavailable")
        └── UnknownUser          (404, "unknown_user"): the tier does not know the user

The front-door refusals are answered by pure ASGI middlewares before any route runs, in the same
``ErrorResponse`` shape: 401 ``unauthorized`` and 429 ``rate_limited`` (``gateway/edge/security.py``),
431 ``headers_too_large`` and 503 ``overloaded`` (``gateway/edge/limits.py``), 413
``payload_too_large`` (``gateway/edge/middleware.py``). Routing and body-decoding errors (400, 404, 405)
are rendered by a handler in ``main.py``.

Tier clients turn their library's errors (httpx, tritonclient, redis) into ``UpstreamError``
subclasses, so the fallback chain catches one narrow family and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from starlette.types import Send


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


class PayloadTooLarge(GatewayError):
    status_code = 413
    code = "payload_too_large"


class NotReady(GatewayError):
    status_code = 503
    code = "not_ready"


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


async def send_error(
    send: Send,
    status: int,
    code: str,
    detail: str,
    request_id: str | None,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Answer an ASGI request with the ``ErrorResponse`` body (for the pure ASGI middlewares)."""
    payload = error_body(code, detail, request_id)
    start_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start_headers})
    await send({"type": "http.response.body", "body": payload})
