"""The requests of the API this service replaces, replayed as its real clients send them.

Sources (danactive/history, read from its public repository):
- ``app/api/admin/classify/route.ts`` and ``app/api/admin/scores/route.ts``: ``fetch(url, {method: 'POST',
  headers: {'Content-Type': 'image/jpeg'}, body})`` with the file's raw bytes, to ``/classify`` and ``/scores``;
  ``src/components/AdminAlbum/Photo.tsx`` then renders ``predictions[].label`` and ``predictions[].score``.
- ``apps/api/tests/test_routes.py``: ``GET /health`` == ``{"status": "ok"}``; ``POST /scores`` with a 224 px blue
  JPEG as the body and no Content-Type, reading a float ``aesthetic_score``; ``POST /classify`` with a green one,
  asserting every prediction has ``label`` and ``score``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.conftest import encode, photo

pytestmark = pytest.mark.integration


def solid_jpeg(color: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (224, 224), color=color).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def test_health_check(client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_scores_route_as_its_python_test_sends_it(client) -> None:
    response = client.post("/scores", content=solid_jpeg("blue"))
    assert response.status_code == 200
    assert isinstance(response.json()["aesthetic_score"], float)


def test_classify_route_as_its_python_test_sends_it(client, species_dev_model) -> None:
    response = client.post("/classify", content=solid_jpeg("green"))
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert isinstance(predictions, list) and predictions
    assert all("label" in p and "score" in p for p in predictions)


@pytest.mark.parametrize("headers", [{"Content-Type": "image/jpeg"}, {}], ids=["image/jpeg", "no-content-type"])
def test_admin_classify_reads_label_and_score(client, species_dev_model, headers) -> None:
    names = set(json.loads((Path(species_dev_model.path) / "config.json").read_text())["label_names"])
    response = client.post("/classify", content=encode(photo("chelsea")), headers=headers)
    assert response.status_code == 200
    for p in response.json()["predictions"]:  # what Photo.tsx renders: a Wikipedia link on label, score in %
        assert p["label"] in names and p["label"] == p["species"]
        assert 0 <= p["score"] * 100 <= 100


@pytest.mark.parametrize("headers", [{"Content-Type": "image/jpeg"}, {}], ids=["image/jpeg", "no-content-type"])
def test_admin_scores_is_the_score_answer_plus_aesthetic_score(client, headers) -> None:
    body = encode(photo("coffee"))
    scores = client.post("/scores", content=body, headers=headers)
    score = client.post("/score", content=body, headers=headers)
    assert scores.status_code == score.status_code == 200
    assert scores.json() == {**score.json(), "aesthetic_score": score.json()["score"]}
    assert 0 <= scores.json()["aesthetic_score"] <= 10


def test_scores_errors_have_the_service_shape(client) -> None:
    response = client.post("/scores", content=b"not an image", headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_image" and set(response.json()) == {"error", "detail"}
