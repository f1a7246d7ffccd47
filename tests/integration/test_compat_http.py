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
def test_admin_scores_is_the_score_answer_plus_the_report(client, headers) -> None:
    body = encode(photo("coffee"))
    scores = client.post("/scores", content=body, headers=headers)
    score = client.post("/score", content=body, headers=headers)
    reported = client.post("/score?report=1", content=body, headers=headers)
    assert scores.status_code == score.status_code == reported.status_code == 200
    assert {k: scores.json()[k] for k in score.json()} == score.json()
    assert scores.json()["aesthetic_score"] == score.json()["score"] and 0 <= score.json()["score"] <= 10
    assert reported.json() == scores.json() and reported.headers["X-Model-Tag"] == score.headers["X-Model-Tag"]


# What danactive/history's admin page reads from POST /scores: PreviewImage.tsx (July 2026) shows these four, with
# "N/A" for a missing one; its later backend adds the rest.
PREVIEW_FIELDS = ("overall_score", "visual_interest_score", "rule_of_thirds_score", "sharpness_score")
BACKEND_FIELDS = ("technical_score", "exposure_score", "resolution_score", "composition_score", "aesthetic_score",
                  "image_width", "image_height")


@pytest.mark.parametrize("name", ["chelsea", "coffee", "astronaut", "rocket"])
def test_the_admin_preview_gets_a_number_for_every_field_it_shows(client, name: str) -> None:
    """PreviewImage.tsx's fetch: the raw JPEG, Content-Type image/jpeg; every field it reads is a number (no "N/A"),
    the breakdown on hover too; notes are sentences."""
    img = photo(name)
    response = client.post("/scores", content=encode(img), headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200, response.text
    body = response.json()
    for field in PREVIEW_FIELDS + BACKEND_FIELDS:
        assert isinstance(body[field], (int, float)) and not isinstance(body[field], bool), field
    assert 0 <= body["overall_score"] <= 100
    assert all(0 <= body[f] <= 10 for f in PREVIEW_FIELDS[1:] + BACKEND_FIELDS[:5])
    assert (body["image_width"], body["image_height"]) == (img.shape[1], img.shape[0])
    assert body["notes"] and all(isinstance(n, str) and n.endswith(".") for n in body["notes"])


def test_scores_errors_have_the_service_shape(client) -> None:
    response = client.post("/scores", content=b"not an image", headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_image" and set(response.json()) == {"error", "detail"}
