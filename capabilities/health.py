"""``GET /health``: ``{"status": "ok"}`` while the gateway serves, for clients of the API this service replaces.

BentoML's own ``/livez`` and ``/readyz`` stay the probes to use; ``/readyz`` also waits for the runners.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

PATH = "/health"


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


routes = [Route(PATH, health, methods=["GET"])]
