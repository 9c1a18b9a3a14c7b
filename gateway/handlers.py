"""Exception handlers: every error the routes raise becomes the ``ErrorResponse`` JSON body.

Domain errors (``gateway.errors``) carry their status and code; routing and body-decoding errors
(400, 404, 405) and request validation (422) are rendered in the same shape. Anything else that
escapes is answered by the outermost middleware's last resort (``gateway.edge.middleware``).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from gateway.edge.middleware import route_label
from gateway.errors import GatewayError, error_response
from gateway.metrics import GatewayMetrics

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
            where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
            parts.append(f"{where}: {item.get('msg', 'invalid')}")
        return error(request, 422, "invalid_request", "; ".join(parts) or "invalid request")

    app.add_exception_handler(GatewayError, domain_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
