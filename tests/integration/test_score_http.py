"""POST /score through a real `bentoml serve` process, checked against an independent open_clip reference."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.conftest import HEAD_TAG, REAL_HEAD, SCORE_TOLERANCE, encode, photo, served_engine, served_precision
from tests.integration.conftest import batch_histogram, burst

pytestmark = pytest.mark.integration

PHOTOS = ["chelsea", "coffee", "astronaut", "rocket"]


def open_clip_scorer(clip, head: dict):
    """Score bytes the way open_clip's own docs do: its eval transform, encode_image, L2 norm, then ``head``."""
    model = open_clip.create_model(f"local-dir:{clip.path}", load_weights=False).eval()
    state = load_file(str(Path(clip.path) / "open_clip_model.safetensors"))
    model.visual.load_state_dict({k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")})
    transform = open_clip.transform.image_transform_v2(
        open_clip.transform.PreprocessCfg(**open_clip.get_model_preprocess_cfg(model)), is_train=False
    )

    def score(data: bytes) -> float:
        with torch.no_grad():
            emb = model.encode_image(transform(Image.open(io.BytesIO(data)))[None])
            emb = emb / emb.norm(dim=-1, keepdim=True)
            return (emb @ head["weight"].T + head["bias"]).item()

    return score


@pytest.fixture(scope="module")
def reference(aesthetic_models):
    """The independent reference on the stored head (the real LAION head when ../shared has it, else the dev head)."""
    clip, head = aesthetic_models
    return open_clip_scorer(clip, load_file(str(Path(head.path) / "head.safetensors")))


def post_score(server, body: bytes, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}/score", content=body, headers=headers or {}, timeout=60)


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("fmt,content_type", [("JPEG", "image/jpeg"), ("PNG", "image/png")])
def test_served_score_matches_open_clip_reference(server, reference, name, fmt, content_type) -> None:
    body = encode(photo(name), fmt)
    response = post_score(server, body, {"Content-Type": content_type})
    assert response.status_code == 200, response.text
    payload = response.json()
    assert set(payload) == {"score", "raw", "model"}
    assert payload["raw"] == pytest.approx(reference(body), abs=SCORE_TOLERANCE)
    assert payload["score"] == min(max(payload["raw"], 0.0), 10.0)
    assert payload["model"] == {"tag": "clip-vit-b16-openai:dev", "variant": "dev", "head": HEAD_TAG,
                                "head_variant": "release" if REAL_HEAD.is_file() else "dev",
                                "precision": served_precision(), "engine": served_engine()}
    assert response.headers["x-model-variant"] == "dev"


def test_served_score_uses_the_published_laion_head(server, aesthetic_models, laion_head: Path) -> None:
    clip, _ = aesthetic_models
    published = open_clip_scorer(clip, torch.load(laion_head, map_location="cpu", weights_only=True))
    body = encode(photo("chelsea"))
    response = post_score(server, body)
    assert response.json()["model"]["head"] == "laion-aesthetic-vit-b16:8ad3923d7ecf"
    assert response.json()["raw"] == pytest.approx(published(body), abs=SCORE_TOLERANCE)


def test_score_is_served_without_a_content_type(server) -> None:
    body = encode(photo("coffee"))
    assert post_score(server, body).json() == post_score(server, body, {"Content-Type": "image/jpeg"}).json()


def test_concurrent_scores_are_batched(server) -> None:
    body = encode(photo("astronaut"))
    before = batch_histogram(server, "AestheticRunner")

    responses = burst(server, "/score", body, 32)
    assert [r.status_code for r in responses] == [200] * 32
    raws = [r.json()["raw"] for r in responses]
    assert max(raws) - min(raws) < 1e-5  # batch composition changes only float rounding

    batches, images, singles = (a - b for a, b in zip(batch_histogram(server, "AestheticRunner"), before))
    assert images == 32
    assert batches < 32 and batches - singles >= 1
