"""ASGI middleware in front of BentoML's request parsing."""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any, Awaitable, Callable, Iterable

from serving.errors import field_path

logger = logging.getLogger(__name__)
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


def _json(status: int, error: str, detail: str, extra: list[tuple[bytes, bytes]] = ()) -> tuple[dict, dict]:
    body = json.dumps({"error": error, "detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    return ({"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body})


class GuardMiddleware:
    """The checks every request passes first: API key, body size, and the shape of shed requests.

    - ``api_key``: when set, every route but the health and metrics routes (and ``open_paths``) needs
      ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (401 otherwise).
    - ``max_in_flight``: requests being served by this worker at once; more get 429 with ``Retry-After``.
    - ``max_body_bytes``: a declared Content-Length above it is refused with 413 before any byte is read; a
      chunked body is counted as it arrives and refused once it passes the limit.
    - Every error answer leaves in the service's ``{"error", "detail"}`` shape (BentoML's own are reshaped), and
      shed requests (429, 503) carry ``Retry-After``.
    """

    OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})

    def __init__(self, app: ASGIApp, max_body_bytes: int, api_key: str | None = None,
                 max_in_flight: int | None = None, open_paths: Iterable[str] = ()) -> None:
        self.app, self.max_body_bytes, self.api_key = app, max_body_bytes, api_key
        self.max_in_flight, self.in_flight = max_in_flight, 0
        self.open_paths = self.OPEN_PATHS | frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.api_key and scope["path"] not in self.open_paths and not self._authorized(headers):
            return await self._reply(send, 401, "unauthorized", "Send the API key as 'Authorization: Bearer <key>'.")
        content_type = headers.get(b"content-type", b"").lower()
        if content_type.startswith(b"multipart/") and b"boundary=" not in content_type:
            return await self._reply(send, 400, "bad_request", "A multipart body needs a boundary; send JSON or raw bytes.")
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            return await self._reply(send, 413, "payload_too_large",
                                     f"The body is {declared.decode(errors='replace')} bytes; the limit is "
                                     f"{self.max_body_bytes}.")
        if declared is None and scope.get("method") in ("POST", "PUT", "PATCH"):
            body = await self._read_limited(receive)
            if body is None:
                return await self._reply(send, 413, "payload_too_large",
                                         f"The body passed the limit of {self.max_body_bytes} bytes.")
            receive = _replay(body)
        if scope["path"] in self.open_paths or self.max_in_flight is None:
            return await _answered(self.app, scope, receive, _shape_errors(send, scope))
        if self.in_flight >= self.max_in_flight:  # shed instead of queueing without bound
            for message in _json(429, "overloaded", "Too many requests in flight; retry after the Retry-After seconds.",
                                 [(b"retry-after", b"1")]):
                await send(message)
            return
        self.in_flight += 1
        try:
            await _answered(self.app, scope, receive, _shape_errors(send, scope))
        finally:
            self.in_flight -= 1

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        key = headers.get(b"x-api-key", b"").decode(errors="replace")
        auth = headers.get(b"authorization", b"").decode(errors="replace")
        if auth.lower().startswith("bearer "):
            key = key or auth[7:].strip()
        return hmac.compare_digest(key.encode(), self.api_key.encode())

    async def _read_limited(self, receive: Callable) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks)
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                return b"".join(chunks)

    @staticmethod
    async def _reply(send: Callable, status: int, error: str, detail: str) -> None:
        for message in _json(status, error, detail):
            await send(message)


async def _answered(app: ASGIApp, scope: Scope, receive: Callable, send: Callable) -> None:
    """Run ``app``; an exception before any response is answered with a JSON error instead of no answer.

    BentoML's TimeoutMiddleware, around this one, waits for the first message sent, not for the handler, so an
    exception that escapes a handler (``/readyz`` does so while a runner is still starting) left the request
    hanging for the whole traffic timeout, and kept a SIGTERMed gateway from exiting until then.
    """
    started = False

    async def tracked(message: dict) -> None:
        nonlocal started
        started = True
        await send(message)

    try:
        await app(scope, receive, tracked)
    except Exception:
        if started:
            raise
        if scope["path"] == "/readyz":
            logger.debug("/readyz: a dependency is not reachable yet")
            status, error, detail = 503, "unavailable", "Not ready: a runner is not reachable yet."
        else:
            logger.exception("unhandled error on %s %s", scope.get("method"), scope["path"])
            status, error, detail = 500, "internal_error", "The request failed inside the service; see its log."
        for message in _json(status, error, detail, [(b"retry-after", b"1")] if status == 503 else []):
            await send(message)


def _replay(body: bytes) -> Callable:
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


ERROR_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
               422: "invalid_request", 429: "overloaded", 500: "internal_error", 503: "unavailable"}


def _error_body(status: int, body: bytes, request_line: str) -> bytes | None:
    """The service's ``{"error", "detail"}`` body for an error BentoML or Starlette wrote, or None if it has one."""
    try:
        payload = json.loads(body or b"null")
    except ValueError:
        payload = body.decode(errors="replace").strip()
    if isinstance(payload, dict) and "error" in payload and isinstance(payload.get("detail"), str):
        return None
    if isinstance(payload, dict) and isinstance(payload.get("detail"), list):  # BentoML's pydantic ValidationError
        return json.dumps({"error": "invalid_request", "detail": _validation_detail(payload["detail"])}).encode()
    if isinstance(payload, list) and payload and isinstance(payload[0], dict):
        payload = payload[0]  # bentoml.exceptions render as a one-item array
    message = payload.get("error") if isinstance(payload, dict) else payload
    if status == 429:
        message = "Too many requests in flight; retry after the Retry-After seconds."
    elif status in (404, 405):  # the router's own answer for an unknown path or method
        message = f"No route {request_line}; see /docs."
    return json.dumps({"error": ERROR_CODES.get(status, "error"), "detail": str(message or "")[:500]}).encode()


def _validation_detail(errors: list) -> str:
    """pydantic's error list as one line: ``field: message`` for each (the first five)."""
    parts = [f"{field_path(err.get('loc'))}: {err.get('msg', '')}" if isinstance(err, dict) else f"body: {err}"
             for err in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return ("; ".join(parts) + more + ". See /docs for the route's fields.")[:500]


def _shape_errors(send: Callable, scope: Scope) -> Callable:
    """Every 4xx/5xx leaves in the service's error shape; shed requests (429, 503) carry Retry-After."""
    held: dict | None = None
    chunks: list[bytes] = []

    async def wrapped(message: dict) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and message["status"] >= 400:
            held = message
            return
        if held is None or message["type"] != "http.response.body":
            return await send(message)
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        start, held, body = held, None, b"".join(chunks)
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        if (shaped := _error_body(start["status"], body, f'{scope.get("method")} {scope.get("path")}')) is not None:
            body = shaped
            headers = [(k, v) for k, v in headers if k.lower() != b"content-type"] + [
                (b"content-type", b"application/json")]
        if start["status"] in (429, 503) and not any(k.lower() == b"retry-after" for k, _ in headers):
            headers.append((b"retry-after", b"1"))
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return wrapped
