"""One error shape for every endpoint: ``{"error": <code>, "detail": <how to fix it>}``."""

from __future__ import annotations

from starlette.responses import JSONResponse


class ServiceError(Exception):
    """An error the client should see, with an HTTP status and a machine-readable code."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail

    def to_response(self) -> JSONResponse:
        """Render as the service's JSON error body."""
        return JSONResponse({"error": self.error, "detail": self.detail}, status_code=self.status)
