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


def _answers(status: int, payload: object):
    async def app(scope, receive, send) -> None:
        body = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


def test_bentoml_validation_errors_are_reshaped_into_one_readable_line() -> None:
    bentoml_body = {"error": "2 validation errors for Input", "detail": [
        {"type": "missing", "loc": ["texts"], "msg": "Field required"},
        {"type": "string_type", "loc": ["model"], "msg": "Input should be a valid string"}]}
    start, body = _call(_answers(400, bentoml_body), "/embed/text")
    assert start["status"] == 400
    assert json.loads(body["body"]) == {
        "error": "invalid_request",
        "detail": "texts: Field required; model: Input should be a valid string. See /docs for the route's fields."}


def test_the_service_own_errors_pass_unchanged() -> None:
    ours = {"error": "invalid_image", "detail": "The bytes are not an image."}
    _, body = _call(_answers(400, ours), "/score")
    assert json.loads(body["body"]) == ours


def test_a_text_value_in_a_file_field_is_refused_without_fetching_it() -> None:
    from _bentoml_impl import serde
    from bentoml.exceptions import BentoMLException

    from serving import forms

    forms.install()
    assert serde.ALL_SERDE["multipart/form-data"] is serde.ALL_SERDE["application/x-www-form-urlencoded"] \
        is forms.FormSerde
    with pytest.raises(BentoMLException, match="not fetched") as raised:
        asyncio.run(forms.FormSerde.ensure_file("http://127.0.0.1:9/photo.jpg"))
    assert raised.value.error_code == 400
