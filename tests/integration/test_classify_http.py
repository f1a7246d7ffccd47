"""POST /classify through a real `bentoml serve` process."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import encode, photo, served_engine, served_precision
from tests.integration.conftest import batch_histogram, burst

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
    assert set(payload) == {"predictions", "model", "status", "rollup", "ranks", "gate"}
    assert payload["status"] in {"identified", "uncertain", "not_organism"}
    preds = payload["predictions"]
    assert len(preds) == k
    assert all(set(p) == {"species", "label", "score", "common_name", "lineage", "rank"} and p["label"] == p["species"]
               and p["lineage"][-1] == p["species"] and p["rank"] == "species" for p in preds)
    assert all(p["species"] in names for p in preds)
    scores = [p["score"] for p in preds]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores == sorted(scores, reverse=True)
    assert payload["model"] == {"tag": "eva02-inat21:dev", "variant": "dev", "precision": served_precision(),
                                "engine": served_engine()}


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


def test_bad_top_k_gets_json_400(server, jpeg: bytes) -> None:
    response = classify(server, jpeg, params={"top_k": "11"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_parameter"


def test_concurrent_requests_are_batched(server, jpeg: bytes, label_names) -> None:
    before = batch_histogram(server, "SpeciesRunner")

    responses = burst(server, "/classify", jpeg, 32)
    assert [r.status_code for r in responses] == [200] * 32
    for r in responses:
        assert_valid_predictions(r.json(), label_names)

    after = batch_histogram(server, "SpeciesRunner")
    batches, images, singles = (a - b for a, b in zip(after, before))
    assert images == 32
    assert batches < 32, f"{batches} batches for 32 concurrent requests: no batching"
    assert batches - singles >= 1, "no batch held more than one image"


def test_dev_model_is_announced_at_startup(server) -> None:
    log = server.log.read_text(errors="replace")
    assert "Serving DEV model eva02-inat21:dev" in log


def test_a_burst_past_the_connection_recycle_point_is_served_and_sheds_only_after_the_budget(server, jpeg) -> None:
    # BentoML recycles runner connections every 100 requests by default and fails in-flight calls when it does
    # (503 inference_failed): none may fail so. A request may be shed (503 overloaded) only once it has waited out
    # the 10 s latency budget to get into the runner; fed the whole burst, BentoML's batcher once shed 64 of 150
    # early, on a noisy learned cost estimate.
    responses = burst(server, "/classify", jpeg, 150)
    shed = [r for r in responses if r.status_code != 200]
    assert all(r.status_code == 503 and r.json()["error"] == "overloaded" for r in shed)
    assert all(r.elapsed.total_seconds() >= 9.5 for r in shed), sorted(r.elapsed.total_seconds() for r in shed)
    assert len(shed) < 150
