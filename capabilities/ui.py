"""``GET /ui``: a page to try the service in a browser (static files shipped with the service, no CDN).

The page calls the public routes (``/classify``, ``/score``, the zero-shot job routes, and ``/embed`` and
``/embed/text`` for its search over the photos on the page) from the browser; behind
``API_KEY`` it asks for the key once and keeps it in the tab's session storage. The page and its two assets are
open routes, so the browser can load it before it knows the key.
"""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse
from starlette.routing import Route

logger = logging.getLogger(__name__)
FOLDER = Path(__file__).with_name("ui")
ASSETS = {"ui.js": "text/javascript", "ui.css": "text/css"}
PATHS = ("/ui", "/ui/", *(f"/ui/{name}" for name in ASSETS))
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
           "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'"}


async def page(request: Request) -> FileResponse:
    return FileResponse(FOLDER / "index.html", media_type="text/html", headers=HEADERS)


async def slash(request: Request) -> RedirectResponse:
    return RedirectResponse("/ui")


def _asset(name: str):
    async def serve(request: Request) -> FileResponse:
        return FileResponse(FOLDER / name, media_type=ASSETS[name], headers=HEADERS)
    return serve


routes = [Route("/ui", page, methods=["GET"]), Route("/ui/", slash, methods=["GET"]),
          *(Route(f"/ui/{name}", _asset(name), methods=["GET"]) for name in ASSETS)]


def announce() -> None:
    logger.info("Try it in a browser: open /ui on this server (e.g. http://localhost:3000/ui)")
