"""The gateway's guard middleware answers every request, also when a handler raises before answering."""

from __future__ import annotations

import asyncio
import json

import pytest

from serving.middleware import GuardMiddleware


def _call(app, path: str) -> list[dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": []}
    asyncio.run(GuardMiddleware(app, max_body_bytes=100, max_in_flight=4)(scope, receive, send))
    return sent


async def _raises(scope, receive, send) -> None:
    raise ConnectionError("runner socket not there yet")


@pytest.mark.parametrize(("path", "status", "error"), [("/readyz", 503, "unavailable"),
                                                       ("/classify", 500, "internal_error")])
def test_a_handler_that_raises_before_answering_still_gets_a_json_answer(path: str, status: int, error: str) -> None:
    start, body = _call(_raises, path)
    assert start["status"] == status
    payload = json.loads(body["body"])
    assert payload["error"] == error and "runner socket" not in payload["detail"]  # no internals


def test_an_error_after_the_answer_started_is_not_answered_twice() -> None:
    async def half(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        _call(half, "/score")
