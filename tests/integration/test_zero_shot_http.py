"""Zero-shot jobs through a real `bentoml serve`: REST routes, BentoML clients, errors, reference probabilities."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import uuid
from pathlib import Path

import bentoml
import httpx
import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from tests.conftest import PROBABILITY_TOLERANCE, encode, photo

pytestmark = pytest.mark.integration

TASK = "/api/tasks/zero-shot-image-classification"
MODELS = ["clip-vit-large-patch14", "open-clip-vit-b32", "open-clip-vit-b32-laion2b"]


def data_uri(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def jpegs() -> dict[str, bytes]:
    return {name: encode(photo(name)) for name in ("chelsea", "coffee", "astronaut")}


@pytest.fixture(scope="module")
def reference(zero_shot_models):
    """open_clip's own zero-shot recipe on the stored dev weights: its transform, tokenizer and logit scale."""
    cache = {}

    def compute(model_id: str, data: bytes, classes: list[str], templates: list[str]) -> np.ndarray:
        entry = zero_shot_models[model_id]
        if model_id not in cache:
            text_cfg = json.loads((Path(entry.path) / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"]
            if "hf_model_name" in text_cfg:  # the XLM-R tower: its config and tokenizer are in the store entry
                hf = {**text_cfg, "hf_model_name": entry.path, "hf_tokenizer_name": entry.path,
                      "hf_model_pretrained": False}  # the CLIP weights hold the tower
                model = open_clip.create_model(f"local-dir:{entry.path}", text_cfg=hf, pretrained_text=False)
                tokenizer = open_clip.get_tokenizer(f"local-dir:{entry.path}")
            else:
                model = open_clip.create_model(f"local-dir:{entry.path}")
                tokenizer = open_clip.get_tokenizer(entry.info.metadata["architecture"])
            cfg = open_clip.transform.PreprocessCfg(**open_clip.get_model_preprocess_cfg(model.eval()))
            cache[model_id] = (model, tokenizer, open_clip.transform.image_transform_v2(cfg, is_train=False))
        model, tokenizer, transform = cache[model_id]
        with torch.no_grad():
            image = model.encode_image(transform(Image.open(io.BytesIO(data)))[None])
            image = image / image.norm(dim=-1, keepdim=True)
            weights = []
            for name in classes:
                text = model.encode_text(tokenizer([t.format(name) for t in templates]))
                text = (text / text.norm(dim=-1, keepdim=True)).mean(dim=0)
                weights.append(text / text.norm())
            logits = model.logit_scale.exp() * image @ torch.stack(weights).T
            return logits.softmax(dim=-1)[0].double().numpy()

    return compute


def submit(server, model: str, body: dict, batched: bool = False) -> httpx.Response:
    path = f"{TASK}/batched/{model}/jobs" if batched else f"{TASK}/{model}/jobs"
    return httpx.post(server.url + path, json=body, timeout=60)


def wait(server, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{server.url}{TASK}/jobs/{job_id}", timeout=10).json()
        if job["status"] in ("complete", "failed"):
            return job
        assert job["status"] in ("starting", "running") and "result" not in job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not finished after {timeout}s")


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("templates", [None, ["a photo of a {}.", "a blurry photo of a {}.", "art of the {}."]])
def test_job_probabilities_match_open_clip_reference(server, reference, jpegs, model, templates) -> None:
    classes = ["cat", "coffee cup", "astronaut", "rocket", "tabby cat"]
    body = {"image": data_uri(jpegs["chelsea"]), "classes": classes, "config": {"templates": templates} if templates else {}}
    accepted = submit(server, model, body)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] in ("starting", "running") and uuid.UUID(accepted.json()["id"])

    job = wait(server, accepted.json()["id"])
    assert job["status"] == "complete", job
    probs = np.array(job["result"]["probabilities"])
    expected = reference(model, jpegs["chelsea"], classes, templates or ["a photo of a {}."])
    np.testing.assert_allclose(probs, expected, atol=PROBABILITY_TOLERANCE)
    assert probs.sum() == pytest.approx(1.0, abs=1e-6)


def test_multilingual_class_names_match_open_clip_reference(server, reference, jpegs, zero_shot_models) -> None:
    """open-clip-vit-b32 is the XLM-R ViT-B/32: class names in Latin, Cyrillic and CJK scripts, against open_clip
    on the same stored weights and the tokenizer stored with them."""
    entry = zero_shot_models[MODELS[1]]
    assert entry.info.metadata["architecture"] == "xlm-roberta-base-ViT-B-32"
    assert entry.info.metadata["pretrained"] == "laion5b_s13b_b90k"
    classes = ["chat", "кошка", "猫", "собака", "狗", "Kaffeetasse", "кофе", "咖啡杯"]
    job = wait(server, submit(server, MODELS[1], {"image": data_uri(jpegs["chelsea"]), "classes": classes}).json()["id"])
    expected = reference(MODELS[1], jpegs["chelsea"], classes, ["a photo of a {}."])
    np.testing.assert_allclose(job["result"]["probabilities"], expected, atol=PROBABILITY_TOLERANCE)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{entry.path}")
    for name in ("кошка", "猫", "chat"):  # pieces of each script, not <unk> (ids 0-3 are <s> <pad> </s> <unk>)
        assert (tokenizer([name])[0] > 3).sum() >= 2, name


def test_class_order_is_preserved(server, jpegs) -> None:
    classes = ["cat", "dog", "car", "tree"]
    results = []
    for order in (classes, classes[::-1]):
        job = wait(server, submit(server, MODELS[1], {"image": data_uri(jpegs["coffee"]), "classes": order}).json()["id"])
        results.append(job["result"]["probabilities"])
    np.testing.assert_allclose(results[0], results[1][::-1], atol=1e-6)


def test_batched_job_returns_one_list_per_image(server, reference, jpegs) -> None:
    classes = ["cat", "coffee", "person"]
    names = ["chelsea", "coffee", "astronaut"]
    body = {"image": [data_uri(jpegs[n]) for n in names], "classes": classes, "config": {}}
    job = wait(server, submit(server, MODELS[0], body, batched=True).json()["id"])
    probs = job["result"]["probabilities"]
    assert len(probs) == 3 and all(len(p) == 3 for p in probs)
    for name, row in zip(names, probs):
        np.testing.assert_allclose(row, reference(MODELS[0], jpegs[name], classes, ["a photo of a {}."]), atol=PROBABILITY_TOLERANCE)


def test_result_stays_readable_after_it_is_read(server, jpegs) -> None:
    job_id = submit(server, MODELS[1], {"image": data_uri(jpegs["coffee"]), "classes": ["a", "b"]}).json()["id"]
    first = wait(server, job_id)
    for _ in range(3):
        again = httpx.get(f"{server.url}{TASK}/jobs/{job_id}").json()
        assert again == first
    assert first["expires_at"] > first["created_at"]


def test_models_are_listed_with_class_memo_and_text_cache_counters(server, jpegs) -> None:
    def counters() -> tuple[int, int]:
        models = httpx.get(f"{server.url}{TASK}/models/details").json()["models"]
        assert [m["id"] for m in models] == MODELS and all(m["variant"] == "dev" for m in models)
        model = next(m for m in models if m["id"] == MODELS[1])
        return model["class_memo"]["hits"], model["text_cache"]["hits"]

    classes = [f"repeated class {i}" for i in range(4)]
    body = {"image": data_uri(jpegs["chelsea"]), "classes": classes}
    wait(server, submit(server, MODELS[1], body).json()["id"])
    memo, runner = counters()
    wait(server, submit(server, MODELS[1], {**body, "classes": classes + ["a new class"]}).json()["id"])
    assert counters() == (memo, runner + 4)  # a new list: the runner encodes only the class it has not seen
    wait(server, submit(server, MODELS[1], body).json()["id"])
    assert counters() == (memo + 1, runner + 4)  # a list seen before: answered by the gateway, no runner call


NOT_AN_IMAGE = data_uri(b"just some text, base64 encoded", "image/png")

BAD_REQUESTS = [
    ("unknown model", "nope", {"image": "x", "classes": ["a"]}, False, 404, "unknown_model"),
    ("malformed data uri", MODELS[0], {"image": "data:image/jpeg,abc", "classes": ["a"]}, False, 400, "invalid_data_uri"),
    ("invalid base64", MODELS[0], {"image": "data:image/jpeg;base64,@@@", "classes": ["a"]}, False, 400, "invalid_data_uri"),
    ("not an image", MODELS[0], {"image": NOT_AN_IMAGE, "classes": ["a"]}, False, 400, "invalid_image"),
    ("empty classes", MODELS[0], {"image": NOT_AN_IMAGE, "classes": []}, False, 400, "invalid_classes"),
    ("duplicate classes", MODELS[0], {"image": NOT_AN_IMAGE, "classes": ["a", "a"]}, False, 400, "invalid_classes"),
    ("too many classes", MODELS[0], {"image": NOT_AN_IMAGE, "classes": [str(i) for i in range(300)]}, False, 400,
     "invalid_classes"),
    ("template without {}", MODELS[0], {"image": NOT_AN_IMAGE, "classes": ["a"], "config": {"templates": ["x"]}},
     False, 400, "invalid_templates"),
    ("classes not a list", MODELS[0], {"image": NOT_AN_IMAGE, "classes": "cat"}, False, 400, "invalid_request"),
    ("templates of the wrong type", MODELS[0], {"image": NOT_AN_IMAGE, "classes": ["a"], "config": {"templates": "x"}},
     False, 400, "invalid_request"),
    ("missing image", MODELS[0], {"classes": ["a"]}, False, 400, "invalid_request"),
    ("batched with a string", MODELS[0], {"image": NOT_AN_IMAGE, "classes": ["a"]}, True, 400, "invalid_request"),
    ("batched with no images", MODELS[0], {"image": [], "classes": ["a"]}, True, 400, "invalid_images"),
]


@pytest.mark.parametrize("name,model,body,batched,status,error", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_job_requests_get_json_4xx(server, name, model, body, batched, status, error) -> None:
    response = submit(server, model, body, batched)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error", "detail"} and response.json()["error"] == error
    if error == "unknown_model":
        assert all(m in response.json()["detail"] for m in MODELS)


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b""])
def test_malformed_json_is_400(server, body: bytes) -> None:
    response = httpx.post(f"{server.url}{TASK}/{MODELS[0]}/jobs", content=body,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"] in ("invalid_json", "invalid_request")


@pytest.mark.parametrize("job_id", [str(uuid.uuid4()), "123", "x' OR '1'='1"])
def test_unknown_job_is_404(server, job_id: str) -> None:
    response = httpx.get(f"{server.url}{TASK}/jobs/{job_id}")
    assert response.status_code == 404 and response.json()["error"] == "unknown_job"


def test_path_traversal_in_a_job_id_reaches_no_file(server) -> None:
    response = httpx.get(f"{server.url}{TASK}/jobs/..%2F..%2F..%2Fjobs.sqlite")
    assert response.status_code == 404
    assert response.json()["error"] in ("unknown_job", "not_found") and "SQLite" not in response.text


def test_sync_client_submits_polls_and_runs_directly(server, reference, jpegs) -> None:
    uri, classes = data_uri(jpegs["astronaut"]), ["astronaut", "cat"]
    with bentoml.SyncHTTPClient(server.url) as client:
        accepted = client.submit_zero_shot(model=MODELS[0], image=uri, classes=classes)
        assert accepted["status"] in ("starting", "running")
        deadline = time.monotonic() + 60
        while (job := client.zero_shot_job(id=accepted["id"]))["status"] not in ("complete", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        direct = client.zero_shot(model=MODELS[0], image=uri, classes=classes)
        listed = client.zero_shot_models()
    expected = reference(MODELS[0], jpegs["astronaut"], classes, ["a photo of a {}."])
    np.testing.assert_allclose(job["result"]["probabilities"], expected, atol=PROBABILITY_TOLERANCE)
    np.testing.assert_allclose(direct["probabilities"], expected, atol=PROBABILITY_TOLERANCE)
    assert [m["id"] for m in listed["models"]] == MODELS


def test_async_client_batched_job(server, jpegs) -> None:
    async def run() -> dict:
        async with bentoml.AsyncHTTPClient(server.url) as client:
            accepted = await client.submit_zero_shot_batch(
                model=MODELS[1], images=[data_uri(jpegs["chelsea"]), data_uri(jpegs["coffee"])], classes=["x", "y"],
                config={"templates": ["a photo of a {}."]})
            for _ in range(600):
                job = await client.zero_shot_job(id=accepted["id"])
                if job["status"] == "complete":
                    return job
                await asyncio.sleep(0.1)
        raise AssertionError("batched job did not complete")

    job = asyncio.run(run())
    assert np.array(job["result"]["probabilities"]).shape == (2, 2)


def test_client_errors_keep_the_json_shape(server) -> None:
    response = httpx.post(f"{server.url}/submit_zero_shot", json={"model": "nope", "image": "x", "classes": ["a"]})
    assert response.status_code == 404 and response.json()["error"] == "unknown_model"
    response = httpx.post(f"{server.url}/zero_shot_job", json={"id": str(uuid.uuid4())})
    assert response.status_code == 404 and response.json()["error"] == "unknown_job"


def test_wait_holds_the_status_read_until_the_job_is_complete(server, jpegs) -> None:
    uri = data_uri(jpegs["coffee"])
    for _ in range(3):  # one read per job, no polling loop: each answer is final
        job_id = submit(server, MODELS[1], {"image": uri, "classes": ["cup", "cat"]}).json()["id"]
        job = httpx.get(f"{server.url}{TASK}/jobs/{job_id}", params={"wait": 20}, timeout=30).json()
        assert job["status"] == "complete" and len(job["result"]["probabilities"]) == 2
    with bentoml.SyncHTTPClient(server.url) as client:
        accepted = client.submit_zero_shot(model=MODELS[0], image=uri, classes=["cup", "cat"])
        assert client.zero_shot_job(id=accepted["id"], wait=20)["status"] == "complete"


def test_wait_answers_with_the_current_status_when_time_is_up(server, jpegs) -> None:
    batch = {"image": [data_uri(jpegs["chelsea"])] * 16, "classes": [f"class {i}" for i in range(40)]}
    job_id = submit(server, MODELS[0], batch, batched=True).json()["id"]
    start = time.monotonic()
    job = httpx.get(f"{server.url}{TASK}/jobs/{job_id}", params={"wait": 0.05}, timeout=30).json()
    assert time.monotonic() - start < 5 and job["status"] in ("starting", "running", "complete")
    assert wait(server, job_id)["status"] == "complete"


@pytest.mark.parametrize("value", ["abc", "-1", "31", "nan", "inf"])
def test_bad_wait_is_400(server, value: str) -> None:
    response = httpx.get(f"{server.url}{TASK}/jobs/{uuid.uuid4()}", params={"wait": value})
    assert response.status_code == 400 and response.json()["error"] == "invalid_wait"
    assert "0 to 30" in response.json()["detail"]
    response = httpx.post(f"{server.url}/zero_shot_job", json={"id": str(uuid.uuid4()), "wait": 31})
    assert response.status_code == 400 and response.json()["error"] == "invalid_wait"


def test_cancelling_a_running_job_discards_its_result(server, jpegs) -> None:
    images = [data_uri(encode(photo("astronaut")))] * 32  # long enough to be cancelled while it runs
    job_id = submit(server, MODELS[0], {"image": images, "classes": ["a", "b"]}, batched=True).json()["id"]
    response = httpx.delete(f"{server.url}{TASK}/batched/jobs/{job_id}")
    assert response.status_code == 202 and response.json()["status"] == "running", response.text
    job = httpx.get(f"{server.url}{TASK}/jobs/{job_id}", params={"wait": 30}, timeout=60).json()
    assert job["status"] == "cancelled" and "result" not in job and "error" not in job
    again = httpx.delete(f"{server.url}{TASK}/jobs/{job_id}")
    assert again.status_code == 409 and again.json()["error"] == "job_finished"


def test_cancelling_finished_or_unknown_jobs(server, jpegs) -> None:
    job_id = submit(server, MODELS[1], {"image": data_uri(jpegs["coffee"]), "classes": ["a", "b"]}).json()["id"]
    assert wait(server, job_id)["status"] == "complete"
    response = httpx.delete(f"{server.url}{TASK}/jobs/{job_id}")
    assert response.status_code == 409 and set(response.json()) == {"error", "detail"}
    assert "complete" in response.json()["detail"]
    assert httpx.get(f"{server.url}{TASK}/jobs/{job_id}").json()["status"] == "complete"  # untouched
    for unknown in (str(uuid.uuid4()), "not-a-uuid"):
        response = httpx.delete(f"{server.url}{TASK}/jobs/{unknown}")
        assert response.status_code == 404 and response.json()["error"] == "unknown_job"
    with bentoml.SyncHTTPClient(server.url) as client:
        with pytest.raises(bentoml.exceptions.BentoMLException) as info:
            client.cancel_zero_shot_job(id=job_id)
    assert "409" in str(info.value) or "already complete" in str(info.value)
