"""Bodies a fuzzer sends: odd-shaped images, unreadable JSON and forms. Each gets an answer or a clear JSON 4xx,
never a 500, and a form never makes the server fetch a URL."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image

from tests.conftest import encode, photo

pytestmark = pytest.mark.integration

ZERO_SHOT = "/api/tasks/zero-shot-image-classification/open-clip-vit-b32/jobs"


def grey_png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, 128).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def assert_error(response: httpx.Response, status: int, error: str) -> str:
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"error", "detail"} and payload["error"] == error, payload
    assert isinstance(payload["detail"], str) and payload["detail"] and "Traceback" not in response.text
    return payload["detail"]


@pytest.mark.parametrize("path", ["/classify", "/score", "/embed?model=b32"])
def test_a_10kb_png_of_10_million_by_1_px_answers_like_any_grey_image(server, path: str) -> None:
    """Resized whole, its short side to 224 px, it would need gigabytes; the center crop is all grey either way."""
    extreme = httpx.post(f"{server.url}{path}", content=grey_png((10_000_000, 1)), timeout=120)
    square = httpx.post(f"{server.url}{path}", content=grey_png((500, 500)), timeout=120)
    assert extreme.status_code == square.status_code == 200, extreme.text
    assert extreme.json() == square.json()


def test_a_batch_with_an_extreme_panorama_answers_every_image(server) -> None:
    files = [("images", (f"{i}.png", data, "image/png"))
             for i, data in enumerate([grey_png((1, 10_000_000)), encode(photo("coffee"))])]
    response = httpx.post(f"{server.url}/score/batch", files=files, timeout=120)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 2 and all("error" not in r for r in results), results


@pytest.mark.parametrize("name,body", [
    ("image bytes as JSON", encode(photo("coffee"))),
    ("latin-1", '{"image": "caf\u00e9", "classes": ["a", "b"]}'.encode("latin-1")),
    ("nested 100000 deep", b'{"image":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ("a 5000-digit number", b'{"image": ' + b"9" * 5000 + b', "classes": ["a", "b"]}'),
])
def test_unreadable_json_on_a_job_route_is_invalid_json(server, name: str, body: bytes) -> None:
    response = httpx.post(f"{server.url}{ZERO_SHOT}", content=body, headers={"Content-Type": "application/json"},
                          timeout=60)
    assert_error(response, 400, "invalid_json")


@pytest.mark.parametrize("name,kwargs", [
    ("malformed multipart", {"content": b"--xx\r\nfoo",
                             "headers": {"Content-Type": "multipart/form-data; boundary=yy"}}),
    ("1001 files", {"files": [("images", (f"{i}.png", b"x", "image/png")) for i in range(1001)]}),
    ("an image under a JSON field", {"files": [("model", (None, "b32")),
                                               ("texts", ("a.jpg", encode(photo("coffee")), "image/jpeg"))]}),
])
def test_unreadable_forms_are_bad_request(server, name: str, kwargs: dict) -> None:
    path = "/embed/text" if name == "an image under a JSON field" else "/score/batch"
    assert_error(httpx.post(f"{server.url}{path}", timeout=60, **kwargs), 400, "bad_request")


@pytest.mark.parametrize("value", ["abc", "http://example.invalid/photo.jpg", "file:///etc/passwd"])
def test_text_in_a_file_field_is_refused_not_fetched(server, value: str) -> None:
    for kwargs in ({"files": [("images", (None, value))]}, {"data": {"images": value}}):
        detail = assert_error(httpx.post(f"{server.url}/classify/batch", timeout=60, **kwargs), 400, "bad_request")
        assert "not fetched" in detail


def test_bentoml_validation_errors_leave_in_the_service_shape(server) -> None:
    detail = assert_error(httpx.post(f"{server.url}/embed/text", json={"model": "b32"}, timeout=60), 400,
                          "invalid_request")
    assert "texts: Field required" in detail


def test_a_data_uri_image_of_extreme_aspect_runs_as_a_job(server) -> None:
    uri = "data:image/png;base64," + base64.b64encode(grey_png((10_000_000, 1))).decode()
    response = httpx.post(f"{server.url}{ZERO_SHOT}", json={"image": uri, "classes": ["a", "b"]}, timeout=60)
    assert response.status_code == 200, response.text
    job = httpx.get(f"{server.url}/api/tasks/zero-shot-image-classification/jobs/{response.json()['id']}",
                    params={"wait": 30}, timeout=60).json()
    assert job["status"] == "complete", job
