"""POST /embed through a real `bentoml serve`: CLIP image embeddings from each tower the service holds."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.conftest import encode, photo

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("model", ["clip-vit-b16-openai", "b16", "clip-vit-large-patch14", "open_clip_vit_b32",
                                   "open-clip-vit-b32-laion2b"])
def test_each_tower_answers_a_unit_vector_and_names_its_model(server, model: str) -> None:
    response = httpx.post(f"{server.url}/embed?model={model}", content=encode(photo("chelsea")), timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dim"] == len(body["embedding"]) > 0
    assert abs(np.linalg.norm(body["embedding"]) - 1) < 1e-4
    assert body["model"]["variant"] == "dev" and response.headers["X-Model-Variant"] == "dev"


def test_the_b16_embedding_is_the_aesthetic_towers_and_differs_by_image(server) -> None:
    cat, coffee = (httpx.post(f"{server.url}/embed?model=b16", content=encode(photo(n)), timeout=60).json()
                   for n in ("chelsea", "coffee"))
    assert cat["model"]["tag"] == "clip-vit-b16-openai:dev"
    assert not np.allclose(cat["embedding"], coffee["embedding"])
    again = httpx.post(f"{server.url}/embed?model=b16", content=encode(photo("chelsea")), timeout=60).json()
    assert np.allclose(cat["embedding"], again["embedding"], atol=1e-6)


@pytest.mark.parametrize("query", ["", "?model=vit-h-14"])
def test_a_missing_or_unknown_model_is_400_listing_the_choices(server, query: str) -> None:
    response = httpx.post(f"{server.url}/embed{query}", content=encode(photo("chelsea")), timeout=60)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_parameter" and "clip-vit-large-patch14 (l14)" in response.json()["detail"]


def test_a_corrupt_image_is_400(server) -> None:
    response = httpx.post(f"{server.url}/embed?model=l14", content=b"not an image", timeout=60)
    assert response.status_code == 400 and response.json()["error"] == "invalid_image"
