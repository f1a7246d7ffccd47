"""vitrivr's feature-extraction-server (FES) clients, replayed as they send, against a real ``bentoml serve``.

Sources (read from their public repositories):
- vitrivr-engine ``vitrivr-engine-module-fes`` (``api/ZeroShotClassificationApi.kt``, ``api/AbstractApi.kt``,
  ``implementations/classification/ImageClassificationExtractor.kt``, ``common/ExternalFesAnalyser.kt``, and the
  client generated from FES's ``openapi_spec.json``): the extractor always goes through the batched routes,
  ``POST /api/tasks/zero-shot-image-classification/batched/{model}/jobs`` with ``{"image": [PNG data URIs],
  "classes": [...]}`` and no ``config``, then ``GET .../batched/jobs/{id}`` every ``pollingIntervalMs`` (1000 ms)
  until ``status`` is ``complete`` (``failed`` retries), and decodes ``result`` as a list of
  ``{"probabilities": [...]}``, one per image, zipped with the images and indexed against ``classes``. Status
  values must be one of starting, running, complete, failed; unknown JSON keys are ignored.
- vitrivr/feature-extraction-server ``test/test_integration.py`` (at 0cde687a): ``GET /api/tasks``; zero-shot with
  model ``clip_vit_large_patch14``, a bare base64 PNG, ``classes`` ``["photo", "document"]``, ``config`` ``{}``,
  JSON sent as ``data=json.dumps(...)`` with ``Content-Type: application/json``; asserts 200 on the submit and on
  every poll, polls every second until ``complete``, then checks ``result["probabilities"]`` is a list of
  ``len(classes)`` floats. (Its other two cases send an image list to the single route; FES itself answers those
  with 422.)
"""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest

from tests.integration.conftest import poll_job as poll
from tests.conftest import encode, photo

pytestmark = pytest.mark.integration

API = "/api"
TASK = "zero-shot-image-classification"
MODELS = ["clip-vit-large-patch14", "open-clip-vit-b32", "open-clip-vit-b32-laion2b"]
JSON = {"Content-Type": "application/json"}


def png_data_uri(name: str) -> str:
    return "data:image/png;base64," + base64.b64encode(encode(photo(name), "PNG")).decode()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url + API, timeout=60) as http:
        yield http


@pytest.mark.parametrize("model", MODELS)
def test_vitrivr_engine_batched_extraction(client, model: str) -> None:
    classes = ["cat", "coffee", "astronaut", "rocket"]
    names = ["chelsea", "coffee", "astronaut"]
    body = json.dumps({"image": [png_data_uri(n) for n in names], "classes": classes}, indent=4)  # prettyPrint
    submitted = client.post(f"/tasks/{TASK}/batched/{model}/jobs", content=body, headers=JSON)
    assert submitted.status_code == 200 and submitted.json()["status"] in ("starting", "running")
    job = poll(client, f"/tasks/{TASK}/batched/jobs/{submitted.json()['id']}")
    result = job["result"]
    assert isinstance(result, list) and len(result) == len(names)
    for item in result:  # zipped with the images, indexed against classes
        assert len(item["probabilities"]) == len(classes)
        assert all(isinstance(p, float) for p in item["probabilities"])
        assert sum(item["probabilities"]) == pytest.approx(1.0, abs=1e-6)


def test_batched_result_is_per_image_and_in_image_order(client) -> None:
    classes, names = ["cat", "coffee"], ["coffee", "chelsea", "coffee"]
    single = [client.post(f"/legacy/tasks/{TASK}/{MODELS[1]}/jobs",
                          json={"image": png_data_uri(n), "classes": classes}).json()["probabilities"] for n in names]
    submitted = client.post(f"/tasks/{TASK}/batched/{MODELS[1]}/jobs",
                            json={"image": [png_data_uri(n) for n in names], "classes": classes})
    result = poll(client, f"/tasks/{TASK}/batched/jobs/{submitted.json()['id']}")["result"]
    np.testing.assert_allclose([r["probabilities"] for r in result], single, atol=1e-6)
    assert result[0] == result[2] != result[1]


def test_fes_integration_test_flow(client) -> None:
    tasks = client.get("/tasks")
    assert tasks.status_code == 200 and isinstance(tasks.json(), list) and isinstance(tasks.json()[0], str)
    classes = ["photo", "document"]
    image = base64.b64encode(encode(photo("coffee"), "PNG")).decode("utf-8")  # bare base64, no data: prefix
    payload = {"image": image, "classes": classes, "config": {}}
    response = client.post(f"/tasks/{TASK}/clip_vit_large_patch14/jobs", content=json.dumps(payload), headers=JSON)
    assert response.status_code == 200, response.text
    job = poll(client, f"/tasks/{TASK}/jobs/{response.json()['id']}")
    element = job["result"]["probabilities"]
    assert isinstance(element, list) and len(element) == len(classes) and isinstance(element[0], float)


def test_legacy_route_answers_the_probabilities_at_once(client) -> None:
    response = client.post(f"/legacy/tasks/{TASK}/open_clip_vit_b32/jobs",
                           json={"image": png_data_uri("chelsea"), "classes": ["cat", "dog", "car"], "config": {}})
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"probabilities"} and len(response.json()["probabilities"]) == 3


def test_listing_routes_have_fes_shapes(client) -> None:
    assert client.get("/tasks").json() == [TASK, "image-embedding", "text-embedding"]
    assert client.get(f"/tasks/{TASK}/models").json() == MODELS
    assert client.get("/tasks/zero_shot_image_classification/models").json() == MODELS
    assert client.get("/models").json() == MODELS + ["clip-vit-b16-openai"]
    for model in MODELS + ["open_clip_vit_b32"]:
        assert client.get(f"/models/{model}/tasks").json() == [TASK, "image-embedding", "text-embedding"]
        status = client.get(f"/models/{model}/status").json()
        assert status["status"] == "running" and isinstance(status["jobs"], list)
        assert all(set(j) == {"id", "status"} for j in status["jobs"])
    details = client.get(f"/tasks/{TASK}/models/details").json()["models"]
    assert [m["id"] for m in details] == MODELS and all({"tag", "variant", "logit_scale", "class_memo"} <= set(m) for m in details)


def test_unknown_names_are_404_with_the_error_shape(client) -> None:
    for path in ("/tasks/nope/models", "/models/nope/tasks", "/models/nope/status", f"/tasks/{TASK}/jobs/nope"):
        response = client.get(path)
        assert response.status_code == 404 and set(response.json()) == {"error", "detail"}, path
    response = client.post(f"/tasks/nope/{MODELS[0]}/jobs", json={"image": png_data_uri("coffee"), "classes": ["a"]})
    assert response.status_code == 404 and response.json()["error"] == "unknown_task"


def test_unknown_config_keys_are_ignored_and_known_ones_still_checked(client) -> None:
    body = {"image": png_data_uri("coffee"), "classes": ["a", "b"]}
    plain = client.post(f"/legacy/tasks/{TASK}/{MODELS[1]}/jobs", json=body).json()
    extra = client.post(f"/legacy/tasks/{TASK}/{MODELS[1]}/jobs", json={**body, "config": {"top_k": 5, "x": [1]}})
    assert extra.status_code == 200 and extra.json() == plain
    bad = client.post(f"/legacy/tasks/{TASK}/{MODELS[1]}/jobs", json={**body, "config": {"templates": ["no slot"]}})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_templates"


def test_a_batch_over_the_limit_names_the_setting(client) -> None:
    images = [png_data_uri("coffee")] * 33
    response = client.post(f"/tasks/{TASK}/batched/{MODELS[1]}/jobs", json={"image": images, "classes": ["a"]})
    assert response.status_code == 400 and "ZERO_SHOT_MAX_BATCH_IMAGES" in response.json()["detail"]


def test_the_previous_batched_route_still_works_for_one_release(client) -> None:
    submitted = client.post(f"/tasks/{TASK}/{MODELS[0]}/batched/jobs",
                            json={"image": [png_data_uri("coffee")] * 2, "classes": ["a", "b"], "config": {}})
    assert submitted.status_code == 202
    response = client.get(f"/tasks/{TASK}/jobs/{submitted.json()['id']}", params={"wait": 30})
    assert response.json()["status"] == "complete"
    probs = response.json()["result"]["probabilities"]  # its own shape: a list per image
    assert len(probs) == 2 and all(len(p) == 2 for p in probs)
    spec = client.get("/openapi.json").json()["paths"]
    assert spec["/tasks/{task}/{model}/batched/jobs"]["post"]["deprecated"] is True
    assert "deprecated" not in spec["/tasks/{task}/batched/{model}/jobs"]["post"]
