"""POST /classify/batch and /score/batch through a real `bentoml serve`: several images per request, one batch."""

from __future__ import annotations

from pathlib import Path

import bentoml
import httpx
import pytest

from tests.conftest import encode, photo
from tests.integration.conftest import batch_histogram

pytestmark = pytest.mark.integration

NAMES = ["chelsea", "coffee", "astronaut", "rocket"]


@pytest.fixture(scope="module")
def eight() -> list[bytes]:
    """Eight real photos: four JPEGs and the same four as PNGs, at their own sizes."""
    return [encode(photo(n)) for n in NAMES] + [encode(photo(n), "PNG") for n in NAMES]


def _files(images: list[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (f"{i}.img", data, "application/octet-stream")) for i, data in enumerate(images)]


def _close(a: dict, b: dict, path: str) -> None:
    if path == "/classify":
        assert [p["species"] for p in a["predictions"]] == [p["species"] for p in b["predictions"]]
        assert all(abs(p["score"] - q["score"]) < 1e-5 for p, q in zip(a["predictions"], b["predictions"]))
    else:
        assert abs(a["raw"] - b["raw"]) < 1e-5 and abs(a["score"] - b["score"]) < 1e-5
    assert a["model"] == b["model"]


@pytest.mark.parametrize(("path", "runner"), [("/classify", "SpeciesRunner"), ("/score", "AestheticRunner")])
def test_eight_photos_answer_as_eight_single_requests_in_one_runner_batch(server, eight, path: str,
                                                                          runner: str) -> None:
    singles = [httpx.post(f"{server.url}{path}", content=data, timeout=60).json() for data in eight]
    before = batch_histogram(server, runner)
    response = httpx.post(f"{server.url}{path}/batch", files=_files(eight), timeout=120)
    after = batch_histogram(server, runner)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 8
    for single, batched in zip(singles, results):
        _close(batched, single, path)
    # BentoML's histogram counts runner calls per batch: one batch holding one call, with all 8 images in it
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


@pytest.mark.parametrize("path", ["/classify", "/score"])
def test_a_corrupt_image_gets_its_error_in_its_slot_and_the_others_are_answered(server, eight, path: str) -> None:
    images = list(eight)
    images[5] = images[5][:200]  # a truncated PNG
    response = httpx.post(f"{server.url}{path}/batch", files=_files(images), timeout=120)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [set(r) == {"error", "detail"} for r in results] == [i == 5 for i in range(8)]
    single = httpx.post(f"{server.url}{path}", content=images[5], timeout=60).json()
    assert results[5] == single  # the same error as the single route gives


def test_top_k_applies_to_every_image(server, eight) -> None:
    response = httpx.post(f"{server.url}/classify/batch?top_k=7", files=_files(eight[:3]), timeout=120)
    assert [len(r["predictions"]) for r in response.json()["results"]] == [7, 7, 7]
    bad = httpx.post(f"{server.url}/classify/batch?top_k=11", files=_files(eight[:1]), timeout=60)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_parameter"


@pytest.mark.parametrize("path", ["/classify/batch", "/score/batch"])
def test_more_images_than_the_limit_is_400_naming_the_setting(server, path: str) -> None:
    small = encode(photo("chelsea")[:64, :64])
    response = httpx.post(f"{server.url}{path}", files=_files([small] * 33), timeout=120)
    assert response.status_code == 400 and "MAX_BATCH_IMAGES" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/classify/batch", "/score/batch"])
def test_a_body_over_max_body_bytes_is_413(server, path: str) -> None:
    big = b"\xff\xd8" + b"\0" * 17_000_000
    response = httpx.post(f"{server.url}{path}", files=_files([big, big]), timeout=120)
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"


def test_no_images_is_400(server) -> None:
    response = httpx.post(f"{server.url}/score/batch", files={"other": ("a.txt", b"x", "text/plain")}, timeout=60)
    assert response.status_code in (400, 422) and set(response.json()) == {"error", "detail"}


def test_the_bentoml_client_sends_a_list_of_images_and_gets_a_list_of_results(server, eight, tmp_path) -> None:
    paths = []
    for i, data in enumerate([*eight[:3], b"not an image"]):
        paths.append(tmp_path / f"photo{i}.jpg")
        paths[-1].write_bytes(data)
    with bentoml.SyncHTTPClient(server.url) as client:
        species = client.classify_batch(images=paths, top_k=2)["results"]
        scores = client.score_batch(images=[Path(p) for p in paths])["results"]
    assert [len(r["predictions"]) for r in species[:3]] == [2, 2, 2]
    assert [0 <= r["score"] <= 10 for r in scores[:3]] == [True] * 3
    assert species[3]["error"] == scores[3]["error"] == "invalid_image" and species[3]["detail"]
