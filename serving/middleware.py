"""ASGI middleware in front of BentoML's request parsing."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterable

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]


class RawImageBodyMiddleware:
    """Let the bytes, not the header, decide what a raw image body is.

    BentoML picks its body parser from the Content-Type: curl's default
    ``application/x-www-form-urlencoded`` or ``multipart/form-data`` would be parsed as a form and fail.
    For the raw-image routes every POST body is handed over as ``application/octet-stream``;
    the gateway then sniffs the format from the bytes.
    """

    def __init__(self, app: ASGIApp, routes: Iterable[str]) -> None:
        self.app = app
        self.routes = frozenset(routes)

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST" and scope.get("path") in self.routes:
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
            headers.append((b"content-type", b"application/octet-stream"))
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)
