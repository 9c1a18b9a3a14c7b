"""Exception handlers: every error the routes raise becomes the ``ErrorResponse`` JSON body.

Domain errors (``gateway.errors``) carry their status and code; routing and body-decoding errors
(400, 404, 405) and request validation (422) are rendered in the same shape. Anything else that
escapes is answered by the outermost middleware's last resort (``gateway.edge.middleware``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from gateway.edge.middleware import route_label
from gateway.errors import GatewayError, error_response
from gateway.metrics import GatewayMetrics
from gateway.schemas import CATEGORY_PATTERN

_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}


def install_error_handlers(app: FastAPI, metrics: GatewayMetrics) -> None:
    def error(request: Request, status: int, code: str, detail: str) -> Response:
        metrics.errors.labels(route=route_label(request.url.path), code=code).inc()
        return error_response(getattr(request.state, "request_id", None), status, code, detail)

    async def domain_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return error(request, exc.status_code, exc.code, exc.detail)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        response = error(request, exc.status_code, code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        parts = []
        for item in exc.errors():
            parts.append(f"{field_path(item.get('loc', ()))}: {_message(item)}")
        return error(request, 422, "invalid_request", "; ".join(parts) or "invalid request")

    app.add_exception_handler(GatewayError, domain_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


def field_path(loc: Sequence[object]) -> str:
    """``("body", "users", 1, "k")`` -> ``users[1].k``: the form the routes' own 422s use."""
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _message(item: Mapping[str, object]) -> str:
    """Pydantic's message, without the regular expression a pattern error would quote."""
    if item.get("type") == "string_pattern_mismatch":
        ctx = item.get("ctx")
        if isinstance(ctx, Mapping) and ctx.get("pattern") == CATEGORY_PATTERN:
            return "a category name may not contain a comma or a control character"
        return "does not have the expected form"
    return str(item.get("msg", "invalid"))
