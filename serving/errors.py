"""One error shape for every endpoint: ``{"error": <code>, "detail": <how to fix it>}``."""

from __future__ import annotations

from starlette.responses import JSONResponse


class ServiceError(Exception):
    """An error the client should see, with an HTTP status and a machine-readable code."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}

    def to_response(self) -> JSONResponse:
        """Render as the service's JSON error body."""
        return JSONResponse({"error": self.error, "detail": self.detail}, status_code=self.status,
                            headers=self.headers)


def is_overload(exc: BaseException) -> bool:
    """True when a runner shed the request (BentoML's batcher could not meet its latency budget)."""
    from bentoml.exceptions import ServiceUnavailable

    return isinstance(exc, ServiceUnavailable)


def overloaded(model: str) -> ServiceError:
    return ServiceError(503, "overloaded", f"The {model} model is at capacity; retry shortly.", {"Retry-After": "1"})
