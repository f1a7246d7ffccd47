"""CLIP retrieval through a real ``bentoml serve``: FES's image-embedding and text-embedding tasks as vitrivr
sends them, ``/embed/text``, and their parity with open_clip on the stored weights.

Sources (read from their public repositories):
- vitrivr-engine ``vitrivr-engine-module-fes`` (HEAD 60113c8): ``implementations/dense/DenseEmbedding.kt`` and
  ``DenseEmbeddingExtractor.kt`` (indexing always batched: ``ImageEmbeddingApi.analyseBatched``, and
  ``TextEmbeddingApi.analyseBatched`` for text content; a query goes through the single ``analyse``),
  ``api/ImageEmbeddingApi.kt`` / ``api/TextEmbeddingApi.kt`` (``POST /api/tasks/image-embedding/batched/{model}/jobs``
  with ``{"image": [data URLs]}``, ``POST /api/tasks/text-embedding/{model}/jobs`` with ``{"text": "..."}``, no
  ``config``; results read as ``result.embedding`` or, batched, ``result[i].embedding``), ``api/AbstractApi.kt``
  (a GET every ``pollingIntervalMs``, 1000 ms, until ``complete``; ``failed`` retries) and
  ``common/ExternalFesAnalyser.kt`` (field parameters ``host``, ``model``).
- vitrivr/feature-extraction-server (0cde687): ``src/image_embedding``/``src/text_embedding`` (inputs ``image`` /
  ``text`` and an optional ``config``, output ``{"embedding": [floats]}``), ``base_api`` (the routes, batched results
  unrolled to one item per input), ``legacy_api`` (the synchronous route answers the bare output); its CLIP models
  L2-normalise both embeddings.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from tests.integration.conftest import poll_job as poll
from tests.conftest import EXACT, encode, photo

pytestmark = pytest.mark.integration

API = "/api"
MODELS = ["clip-vit-b16-openai", "clip-vit-large-patch14", "open-clip-vit-b32", "open-clip-vit-b32-laion2b"]
JSON = {"Content-Type": "application/json"}
PHOTOS = ["chelsea", "coffee", "astronaut"]
TEXTS = ["a photo of a cat", "ein Foto von einer Tasse Kaffee", "宇航员的照片", "кошка на диване"]


def data_url(name: str) -> str:
    return "data:image/png;base64," + base64.b64encode(encode(photo(name), "PNG")).decode()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url + API, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def reference(aesthetic_models, zero_shot_models):
    """open_clip on each stored entry's weights and tokenizer: (encode images, encode texts), L2-normalised."""
    import open_clip
    from safetensors.torch import load_file

    from engines.torch.clip import WEIGHTS_FILE, create_open_clip, load_tokenizer
    from model_store import open_entry

    def build(name: str):
        path = open_entry(name).path
        model = create_open_clip(path, load_weights=False).eval()
        model.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
        tokenizer = load_tokenizer(path, model)
        transform = open_clip.transform.image_transform_v2(
            open_clip.transform.PreprocessCfg(**open_clip.get_model_preprocess_cfg(model)), is_train=False)

        def images(data: list[bytes]) -> np.ndarray:
            import io

            batch = torch.stack([transform(Image.open(io.BytesIO(d)).convert("RGB")) for d in data])
            with torch.no_grad():
                return torch.nn.functional.normalize(model.encode_image(batch), dim=-1).numpy()

        def texts(items: list[str]) -> np.ndarray:
            with torch.no_grad():
                return torch.nn.functional.normalize(model.encode_text(tokenizer(items)), dim=-1).numpy()

        return images, texts

    return {name: build(name) for name in MODELS}


def assert_images_match(served: np.ndarray, expected: np.ndarray) -> None:
    """fp32: within 1e-4 per component; bf16 image towers: the parity bound (cosine >= 0.9999)."""
    if EXACT:
        np.testing.assert_allclose(served, expected, atol=1e-4)
    else:
        assert (served * expected).sum(-1).min() >= 0.9999


@pytest.mark.parametrize("model", MODELS)
def test_vitrivr_dense_embedding_indexes_images_and_queries_text(client, reference, model: str) -> None:
    body = json.dumps({"image": [data_url(n) for n in PHOTOS]}, indent=4)  # the Kotlin client's prettyPrint
    submitted = client.post(f"/tasks/image-embedding/batched/{model}/jobs", content=body, headers=JSON)
    assert submitted.status_code == 200 and submitted.json()["status"] in ("starting", "running")
    result = poll(client, f"/tasks/image-embedding/batched/jobs/{submitted.json()['id']}")["result"]
    assert isinstance(result, list) and len(result) == len(PHOTOS) and all(set(r) == {"embedding"} for r in result)
    images = np.array([r["embedding"] for r in result])
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    assert_images_match(images, reference[model][0]([encode(photo(n), "PNG") for n in PHOTOS]))

    query = client.post(f"/tasks/text-embedding/{model}/jobs", json={"text": TEXTS[0]})
    assert query.status_code == 200
    found = poll(client, f"/tasks/text-embedding/jobs/{query.json()['id']}")["result"]
    assert set(found) == {"embedding"} and len(found["embedding"]) == images.shape[1]
    np.testing.assert_allclose(found["embedding"], reference[model][1]([TEXTS[0]])[0], atol=1e-4)


@pytest.mark.parametrize("model", ["open-clip-vit-b32", "clip-vit-large-patch14"])
def test_batched_text_embeddings_are_per_text_in_order_and_match_open_clip(client, reference, model) -> None:
    submitted = client.post(f"/tasks/text-embedding/batched/{model}/jobs", json={"text": TEXTS, "config": {}})
    result = poll(client, f"/tasks/text-embedding/batched/jobs/{submitted.json()['id']}")["result"]
    served = np.array([r["embedding"] for r in result])
    np.testing.assert_allclose(served, reference[model][1](TEXTS), atol=1e-4)  # non-Latin text included
    plain = client.get(f"/tasks/text-embedding/jobs/{submitted.json()['id']}").json()["result"]
    np.testing.assert_allclose(plain["embedding"], served, atol=0)  # the plain route: a list per field


def test_embed_text_matches_open_clip_for_every_model_and_says_what_ran(server, reference) -> None:
    for model in MODELS:
        response = httpx.post(f"{server.url}/embed/text", json={"model": model, "texts": TEXTS}, timeout=60)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["dim"] == len(body["embeddings"][0]) and body["truncated"] == [False] * len(TEXTS)
        assert body["context_length"] > 0 and body["model"]["variant"] == "dev"
        assert response.headers["X-Model-Tag"] == body["model"]["tag"] == f"{model}:dev"
        np.testing.assert_allclose(body["embeddings"], reference[model][1](TEXTS), atol=1e-4)


@pytest.mark.parametrize("model", MODELS)
def test_embed_the_image_embedding_task_and_the_legacy_route_agree(server, client, model: str) -> None:
    image = encode(photo("coffee"), "PNG")
    direct = httpx.post(f"{server.url}/embed?model={model}", content=image, timeout=60).json()["embedding"]
    legacy = client.post(f"/legacy/tasks/image-embedding/{model.replace('-', '_')}/jobs", json={"image": data_url(
        "coffee")})
    assert legacy.status_code == 200 and set(legacy.json()) == {"embedding"}
    job = client.post(f"/tasks/image-embedding/{model}/jobs", json={"image": data_url("coffee"), "config": {}})
    task = poll(client, f"/tasks/image-embedding/jobs/{job.json()['id']}")["result"]["embedding"]
    np.testing.assert_allclose(task, direct, atol=1e-6)
    np.testing.assert_allclose(legacy.json()["embedding"], direct, atol=1e-6)
    text = client.post(f"/legacy/tasks/text-embedding/{model}/jobs", json={"text": "a cup of coffee"}).json()
    assert len(text["embedding"]) == len(direct)


def test_the_listings_name_the_new_tasks_and_their_models(client) -> None:
    assert set(client.get("/tasks").json()) == {"zero-shot-image-classification", "image-embedding",
                                                "text-embedding"}
    for task in ("image-embedding", "text-embedding"):
        assert client.get(f"/tasks/{task}/models").json() == MODELS
        details = client.get(f"/tasks/{task}/models/details").json()["models"]
        assert [m["id"] for m in details] == MODELS and all(m["variant"] == "dev" for m in details)
    assert client.get("/models/clip-vit-b16-openai/tasks").json() == ["image-embedding", "text-embedding"]
    assert client.get("/models/open_clip_vit_b32/tasks").json() == ["zero-shot-image-classification",
                                                                    "image-embedding", "text-embedding"]
    assert client.get("/models/clip-vit-b16-openai/status").json()["status"] == "running"
    assert set(client.get("/models").json()) == set(MODELS)


def _jobs_in_store() -> int:
    import os

    with sqlite3.connect(Path(os.environ["JOB_STORE_PATH"])) as conn:
        return conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]


@pytest.mark.parametrize(("path", "body", "status", "error"), [
    ("/tasks/text-embedding/open-clip-vit-b32/jobs", {"text": "   "}, 400, "invalid_texts"),
    ("/tasks/text-embedding/batched/open-clip-vit-b32/jobs", {"text": []}, 400, "invalid_texts"),
    ("/tasks/text-embedding/batched/open-clip-vit-b32/jobs", {"text": ["cat"] * 65}, 400, "invalid_texts"),
    ("/tasks/text-embedding/open-clip-vit-b32/jobs", {"text": "x" * 2001}, 400, "invalid_texts"),
    ("/tasks/text-embedding/open-clip-vit-h14/jobs", {"text": "cat"}, 404, "unknown_model"),
    ("/tasks/image-embedding/open-clip-vit-b32/jobs", {"image": "data:image/png;base64,!!"}, 400, "invalid_data_uri"),
    ("/tasks/image-embedding/open-clip-vit-b32/jobs", {"text": "cat"}, 400, "invalid_request"),
    ("/tasks/image-embedding/batched/clip-vit-large-patch14/jobs", {"image": []}, 400, "invalid_images"),
    ("/tasks/image-embeddings/open-clip-vit-b32/jobs", {"image": "aGVsbG8="}, 404, "unknown_task"),
])
def test_bad_embedding_requests_are_4xx_json_and_queue_nothing(client, path, body, status, error) -> None:
    before = _jobs_in_store()
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error and response.json()["detail"]
    assert _jobs_in_store() == before


def test_over_long_text_is_embedded_cut_to_the_context_and_said_so(server, client) -> None:
    long = "a photo of a cat sitting on a red sofa next to a window " * 20
    response = httpx.post(f"{server.url}/embed/text", json={"model": "l14", "texts": ["a cat", long]}, timeout=60)
    assert response.status_code == 200
    assert response.json()["truncated"] == [False, True] and response.json()["context_length"] == 77
    job = client.post("/tasks/text-embedding/batched/open-clip-vit-b32/jobs", json={"text": ["a cat", long]})
    result = poll(client, f"/tasks/text-embedding/batched/jobs/{job.json()['id']}")["result"]
    assert "truncated" not in result[0] and result[1]["truncated"] is True
    single = client.post("/legacy/tasks/text-embedding/open-clip-vit-b32/jobs", json={"text": long}).json()
    assert single["truncated"] is True


@pytest.mark.parametrize(("body", "error"), [
    ({"model": "b32", "texts": []}, "invalid_texts"),
    ({"model": "b32", "texts": [""]}, "invalid_texts"),
    ({"model": "b32", "texts": ["cat"] * 65}, "invalid_texts"),
    ({"model": "vit-h-14", "texts": ["cat"]}, "invalid_parameter"),
])
def test_bad_embed_text_requests_are_400_json(server, body, error) -> None:
    response = httpx.post(f"{server.url}/embed/text", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error and response.json()["detail"]


def test_a_text_embedding_job_can_be_cancelled_or_is_already_finished(client) -> None:
    job = client.post("/tasks/text-embedding/batched/clip-vit-large-patch14/jobs", json={"text": TEXTS * 16})
    cancelled = client.delete(f"/tasks/text-embedding/batched/jobs/{job.json()['id']}")
    assert cancelled.status_code in (200, 202, 409), cancelled.text
    final = client.get(f"/tasks/text-embedding/jobs/{job.json()['id']}?wait=30").json()
    assert final["status"] == ("complete" if cancelled.status_code == 409 else "cancelled")


def test_the_typed_client_embeds_images_and_texts_and_runs_embedding_jobs(server) -> None:
    from vision_client import VisionClient

    with VisionClient(server.url) as vc:
        query = vc.embed_texts(["ein Hund"], model="b32")
        image = vc.embed(encode(photo("chelsea")), model="b32")
        assert len(query.embeddings[0]) == image.dim and query.model.variant == "dev"
        job = vc.wait(vc.submit_embedding("open-clip-vit-b32", texts=["ein Hund"]).id)
        np.testing.assert_allclose(job.result.embedding, query.embeddings, atol=1e-6)
        images = vc.wait(vc.submit_embedding("clip-vit-b16-openai",
                                             images=[encode(photo("chelsea"))]).id)
        assert len(images.result.embedding) == 1 and len(images.result.embedding[0]) == 512


def test_the_bentoml_client_submits_embedding_jobs_and_embeds_text(server) -> None:
    import bentoml

    with bentoml.SyncHTTPClient(server.url, timeout=60) as bc:
        accepted = bc.submit_text_embedding(model="open-clip-vit-b32-laion2b", texts=["a cat", "a dog"])
        done = bc.zero_shot_job(id=accepted["id"], wait=30)
        assert done["status"] == "complete" and len(done["result"]["embedding"]) == 2, done
        image_job = bc.submit_image_embedding(model="clip-vit-large-patch14", images=[data_url("chelsea")])
        assert bc.zero_shot_job(id=image_job["id"], wait=30)["status"] == "complete"
        answer = bc.embed_text(model="l14", texts=["a cat"])
        assert len(answer["embeddings"]) == 1 and answer["truncated"] == [False]
