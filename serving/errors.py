"""One error shape for every endpoint: ``{"error": <code>, "detail": <how to fix it>}``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, TypeVar

from starlette.responses import JSONResponse

logger = logging.getLogger(__name__)
T = TypeVar("T")


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


def field_path(loc: Any) -> str:
    """Where a pydantic error is, as a client names it (``images.0``), or ``body`` for the whole body."""
    return ".".join(str(p) for p in loc or ()) or "body"


class RunnerBusy(Exception):
    """No runner slot freed up within the deadline: the request is shed before it reaches the runner
    (raised by ``serving.admission.RunnerGate``)."""


def is_overload(exc: BaseException) -> bool:
    """True when a request was shed before it ran: by the gateway's runner gate, or by BentoML's batcher when it
    could not meet its latency budget."""
    from bentoml.exceptions import ServiceUnavailable

    return isinstance(exc, (ServiceUnavailable, RunnerBusy))


def overloaded(model: str) -> ServiceError:
    return ServiceError(503, "overloaded", f"The {model} model is at capacity; retry shortly.", {"Retry-After": "1"})


RESEND_DELAYS_S = (0.0, 0.05, 0.2, 0.5)


async def call_runner(method: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """Call a runner API, and send it again when the pooled connection had been closed by the runner.

    BentoML 1.4's runner servers close idle keep-alive connections after 5 s while the caller's pool keeps them
    for 15 s, so a burst after a pause writes into connections that are closing ("Cannot write to closing
    transport"): 49 of 128 /score requests failed so in one benchmark burst, and three immediate tries were not
    enough, since every pooled connection expires at once. Each failure drops one stale connection; the resends
    back off so the runner's closing finishes. The request never ran, and inference has no side effects.
    """
    import aiohttp

    for delay in RESEND_DELAYS_S:
        await asyncio.sleep(delay)
        try:
            return await method(*args, **kwargs)
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
            logger.warning("runner connection was closed (%s); sending again", exc)
    return await method(*args, **kwargs)
