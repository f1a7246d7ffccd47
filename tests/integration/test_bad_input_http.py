"""Every raw-image endpoint answers bad input with a JSON 4xx, never a 500 or a stack trace."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import encode, photo

pytestmark = pytest.mark.integration

ENDPOINTS = ["/classify", "/score"]


def _truncated_jpeg() -> bytes:
    data = encode(photo("coffee"))
    return data[: len(data) // 3]


BAD_INPUTS = [
    ("empty", b"", {}, 400, "empty_body"),
    ("text", b"hello, I am not a picture", {}, 400, "invalid_image"),
    ("declared png, text body", b"not a png", {"Content-Type": "image/png"}, 400, "invalid_image"),
    ("truncated jpeg", _truncated_jpeg(), {"Content-Type": "image/jpeg"}, 400, "invalid_image"),
    ("gif", encode(photo("chelsea"), "GIF"), {"Content-Type": "image/gif"}, 415, "unsupported_media_type"),
    ("bmp", encode(photo("chelsea"), "BMP"), {}, 415, "unsupported_media_type"),
    ("url body", b"http://127.0.0.1:1/photo.jpg", {"Content-Type": "image/jpeg"}, 400, "invalid_image"),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("name,body,headers,status,error", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_json_4xx(server, endpoint, name, body, headers, status, error) -> None:
    response = httpx.post(f"{server.url}{endpoint}", content=body, headers=headers, timeout=60)
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"error", "detail"}
    assert payload["error"] == error and payload["detail"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize("method,path,status,error", [
    ("GET", "/api/foo", 404, "not_found"),
    ("POST", "/no/such/route", 404, "not_found"),
    ("DELETE", "/api/tasks/zero-shot-image-classification/models", 405, "method_not_allowed"),
])
def test_unknown_routes_and_methods_get_json_errors(server, method, path, status, error) -> None:
    response = httpx.request(method, f"{server.url}{path}", timeout=30)
    assert response.status_code == status
    assert response.json() == {"error": error, "detail": f"No route {method} {path}; see /docs."}
