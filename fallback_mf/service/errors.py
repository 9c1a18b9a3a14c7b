"""Domain errors of the MF service; each knows its HTTP status and is rendered by one handler.

::

    MfServiceError            500 base
    ├── ModelNotReady         503 no artifact loaded yet (or the first load failed)
    ├── InvalidRequest        422 a parameter FastAPI's own validation cannot judge (k > max_k, exclude)
    ├── ReloadFailed          409 the requested artifact could not be loaded; the old one keeps serving
    ├── CategoriesUnavailable 409 a category filter on an artifact without item categories
    ├── AdminUnauthorized     401 ``/admin/*`` without the right ``MF_ADMIN_TOKEN`` bearer
    ├── AdminForbidden        403 ``/admin/*`` from a non-loopback peer while no token is set
    └── ReloadThrottled       429 a reload within ``MF_RELOAD_MIN_INTERVAL_S`` of the previous one
"""

from __future__ import annotations


class MfServiceError(Exception):
    """Base class: ``status_code`` and ``code`` go into the response."""

    status_code = 500
    code = "internal_error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class ModelNotReady(MfServiceError):
    """No model is loaded yet."""

    status_code = 503
    code = "model_not_ready"


class InvalidRequest(MfServiceError):
    """Bad input: the reason is in ``detail``."""

    status_code = 422
    code = "invalid_request"


class ReloadFailed(MfServiceError):
    """A reload could not load the new artifact; the service keeps the previous model."""

    status_code = 409
    code = "reload_failed"


class CategoriesUnavailable(MfServiceError):
    """A category filter, but the served artifact records no item categories."""

    status_code = 409
    code = "categories_unavailable"


class AdminUnauthorized(MfServiceError):
    """An admin call without the right token (one answer whatever was wrong)."""

    status_code = 401
    code = "unauthorized"


class AdminForbidden(MfServiceError):
    """An admin call from another machine while no admin token is configured."""

    status_code = 403
    code = "forbidden"


class ReloadThrottled(MfServiceError):
    """A reload too soon after the previous one (``Retry-After`` says when)."""

    status_code = 429
    code = "reload_throttled"
