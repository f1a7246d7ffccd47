"""POST /classify through a real `bentoml serve` process."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import encode, photo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return encode(photo("chelsea"), "JPEG", quality=90)


@pytest.fixture(scope="module")
def label_names(species_dev_model) -> set[str]:
    return set(json.loads((Path(species_dev_model.path) / "config.json").read_text())["label_names"])


def classify(server, body: bytes, headers: dict | None = None, params: dict | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}/classify", content=body, headers=headers or {}, params=params, timeout=60)


def assert_valid_predictions(payload: dict, names: set[str], k: int = 3) -> None:
    assert set(payload) == {"predictions", "model"}
    preds = payload["predictions"]
    assert len(preds) == k
    assert all(set(p) == {"species", "score"} for p in preds)
    assert all(p["species"] in names for p in preds)
    scores = [p["score"] for p in preds]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores == sorted(scores, reverse=True)
    assert payload["model"] == {"tag": "eva02-inat21:dev", "variant": "dev"}


@pytest.mark.parametrize("fmt,content_type", [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")])
def test_raw_image_bodies_get_top3(server, label_names, fmt: str, content_type: str) -> None:
    response = classify(server, encode(photo("astronaut"), fmt), {"Content-Type": content_type})
    assert response.status_code == 200, response.text
    assert_valid_predictions(response.json(), label_names)
    assert response.headers["x-model-variant"] == "dev"


@pytest.mark.parametrize(
    "content_type", [None, "application/x-www-form-urlencoded", "application/octet-stream", "multipart/form-data"]
)
def test_bytes_decide_not_the_header(server, jpeg: bytes, content_type: str | None) -> None:
    expected = classify(server, jpeg, {"Content-Type": "image/jpeg"}).json()
    headers = {"Content-Type": content_type} if content_type else {}
    response = classify(server, jpeg, headers)
    assert response.status_code == 200, response.text
    assert response.json() == expected


def test_top_k_query_parameter(server, jpeg: bytes, label_names) -> None:
    response = classify(server, jpeg, params={"top_k": 7})
    assert response.status_code == 200
    assert_valid_predictions(response.json(), label_names, k=7)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_line_works_as_written(server, jpeg: bytes, tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    line = re.search(r"^curl -X POST .*/classify$", readme, re.M).group(0)
    (tmp_path / "photo.jpg").write_bytes(jpeg)
    command = line.replace("http://localhost:3000", server.url).split()
    out = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == classify(server, jpeg).json()


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


@pytest.mark.parametrize("name,body,headers,status,error", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_json_4xx(server, name, body, headers, status, error) -> None:
    response = classify(server, body, headers)
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"error", "detail"}
    assert payload["error"] == error and payload["detail"]
    assert "Traceback" not in response.text


def test_bad_top_k_gets_json_400(server, jpeg: bytes) -> None:
    response = classify(server, jpeg, params={"top_k": "11"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_parameter"


def _batch_histogram(metrics: str) -> tuple[float, float, float]:
    """(batches, images, batches of size 1) that the SpeciesRunner's predict has run."""
    def value(pattern: str) -> float:
        found = re.findall(pattern + r'[^\n]*service_name="SpeciesRunner"[^\n]*\} ([0-9.e+]+)', metrics)
        return sum(float(v) for v in found)

    return (
        value(r"bentoml_service_adaptive_batch_size_count\{"),
        value(r"bentoml_service_adaptive_batch_size_sum\{"),
        value(r'bentoml_service_adaptive_batch_size_bucket\{le="1.0"'),
    )


def test_concurrent_requests_are_batched(server, jpeg: bytes, label_names) -> None:
    before = _batch_histogram(httpx.get(f"{server.url}/metrics").text)

    async def burst(n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            return await asyncio.gather(*(client.post("/classify", content=jpeg) for _ in range(n)))

    responses = asyncio.run(burst(32))
    assert [r.status_code for r in responses] == [200] * 32
    for r in responses:
        assert_valid_predictions(r.json(), label_names)

    after = _batch_histogram(httpx.get(f"{server.url}/metrics").text)
    batches, images, singles = (a - b for a, b in zip(after, before))
    assert images == 32
    assert batches < 32, f"{batches} batches for 32 concurrent requests: no batching"
    assert batches - singles >= 1, "no batch held more than one image"


def test_dev_model_is_announced_at_startup(server) -> None:
    log = server.log.read_text(errors="replace")
    assert "Serving DEV model eva02-inat21:dev" in log
