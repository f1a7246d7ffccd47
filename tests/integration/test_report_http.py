"""The photo report on /scores, /score?report=1 and /score/batch?report=1 through a real ``bentoml serve``."""

from __future__ import annotations

import io
import math

import httpx
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from tests.conftest import encode, photo

pytestmark = pytest.mark.integration

NUMBERS = ("sharpness_score", "exposure_score", "resolution_score", "rule_of_thirds_score", "visual_interest_score",
           "technical_score", "composition_score", "aesthetic_score", "overall_score", "clipped_shadows",
           "clipped_highlights", "brightness")


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def scores(server, body: bytes) -> dict:
    response = httpx.post(f"{server.url}/scores", content=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def test_batch_with_report_equals_scores_and_keeps_errors_in_their_slots(server) -> None:
    names = ["chelsea", "coffee", "astronaut"]
    files = [("images", (f"{n}.jpg", encode(photo(n)), "image/jpeg")) for n in names]
    files.insert(1, ("images", ("bad.jpg", b"not an image", "image/jpeg")))
    response = httpx.post(f"{server.url}/score/batch?report=1", files=files, timeout=120)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[1]["error"] == "invalid_image"
    for name, got in zip(names, results[:1] + results[2:]):
        single = scores(server, encode(photo(name)))
        assert set(got) == set(single) and got["notes"] == single["notes"]
        for field in NUMBERS + ("raw", "score", "image_width", "image_height"):
            # overall_score weighs the aesthetic score by 4 (10 x 0.4): its 1e-6 becomes 4e-6
            assert got[field] == pytest.approx(single[field], abs=4e-6 if field == "overall_score" else 1e-6), field
    plain = httpx.post(f"{server.url}/score/batch", files=files, timeout=120).json()["results"]
    assert set(plain[0]) == {"score", "raw", "model"}  # without report=1, the answer is as before


@pytest.mark.parametrize("size", [(1, 1), (20000, 20), (20, 20000), (3, 3)])
def test_degenerate_images_get_defined_values_not_nan(server, size) -> None:
    rng = np.random.default_rng(0)
    body = scores(server, png(Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))))
    assert all(math.isfinite(body[f]) for f in NUMBERS)
    assert (body["image_width"], body["image_height"]) == size and body["resolution_score"] < 1
    assert "The image is small" in " ".join(body["notes"])


@pytest.mark.parametrize(("body", "status", "error"), [
    (b"", 400, "empty_body"), (b"GIF89a" + b"\0" * 40, 400, "invalid_image"), (b"not an image", 400, "invalid_image")])
def test_the_report_never_turns_a_bad_image_into_a_5xx(server, body, status, error) -> None:
    for route in ("/scores", "/score?report=1"):
        response = httpx.post(f"{server.url}{route}", content=body, timeout=60)
        assert response.status_code == status and response.json()["error"] == error


def test_a_report_value_that_is_not_yes_or_no_is_400(server) -> None:
    response = httpx.post(f"{server.url}/score?report=maybe", content=encode(photo("coffee")), timeout=60)
    assert response.status_code == 400 and response.json()["error"] == "invalid_parameter"


def test_the_size_is_the_originals_as_shown_after_exif_rotation(server) -> None:
    img = Image.fromarray(photo("chelsea"))  # 451 x 300
    exif = img.getexif()
    exif[0x0112] = 6  # rotated a quarter turn: shown 300 x 451
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    body = scores(server, buf.getvalue())
    assert (body["image_width"], body["image_height"]) == (300, 451)


@pytest.mark.parametrize("name", ["chelsea", "coffee", "astronaut", "rocket"])
def test_a_photo_ranks_above_its_blurred_darkened_small_copy(server, name: str) -> None:
    img = Image.fromarray(photo(name))
    worse = ImageEnhance.Brightness(img.filter(ImageFilter.GaussianBlur(3))).enhance(0.35)
    worse = worse.resize((img.width // 3, img.height // 3), Image.Resampling.BILINEAR)
    good, bad = scores(server, png(img)), scores(server, png(worse))
    assert good["overall_score"] > bad["overall_score"]
    assert good["technical_score"] > bad["technical_score"]
    for field in ("sharpness_score", "exposure_score", "resolution_score"):
        assert good[field] > bad[field], field
