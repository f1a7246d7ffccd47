"""The photo report's measures on synthetic images (their extremes) and on real photos (monotonic checks)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from capabilities.report import measure, notes, report, resolution
from tests.conftest import photo

PHOTOS = ["chelsea", "coffee", "astronaut", "rocket"]


def rgb(grey: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).convert("RGB")


def measured(img: Image.Image):
    return measure(img, img.size)


FLAT = rgb(np.full((300, 400), 128))
CHECKER = rgb(np.indices((300, 400)).sum(0) % 2 * 255)
GRADIENT = rgb(np.tile(np.linspace(0, 255, 400), (300, 1)))
WHITE = rgb(np.full((300, 400), 255))


def test_flat_grey_has_no_detail_and_a_perfect_exposure() -> None:
    m = measured(FLAT)
    assert m.sharpness_score == 0 and m.visual_interest_score == 0 and m.rule_of_thirds_score == 0
    assert m.exposure_score == pytest.approx(10, abs=0.05) and m.clipped_shadows == m.clipped_highlights == 0
    assert "The image appears soft." in notes(m) and "The image has little detail or texture." in notes(m)


def test_a_checkerboard_is_as_sharp_as_can_be_and_half_clipped() -> None:
    m = measured(CHECKER)
    assert m.sharpness_score == 10 and m.exposure_score == 0
    assert m.clipped_shadows == pytest.approx(0.5) and m.clipped_highlights == pytest.approx(0.5)
    assert 4 <= m.rule_of_thirds_score <= 6  # edges everywhere: the thirds bands hold their share of the area


def test_a_smooth_gradient_is_soft_but_well_exposed_and_varied_in_tone() -> None:
    m = measured(GRADIENT)
    assert m.sharpness_score < 1 and m.exposure_score > 8 and m.visual_interest_score > 4


def test_clipped_white_scores_no_exposure_and_says_so() -> None:
    m = measured(WHITE)
    assert m.exposure_score == 0 and m.clipped_highlights == 1 and m.brightness == 1
    assert notes(m)[0] == "Highlights are clipped: 100% of the image is pure white."


def test_edges_on_the_thirds_lines_score_above_edges_in_the_centre() -> None:
    thirds, centre = np.zeros((300, 300)), np.zeros((300, 300))
    thirds[:, 99:101] = thirds[99:101, :] = 255
    centre[140:160, 140:160] = 255
    assert measured(rgb(thirds)).rule_of_thirds_score == 10
    assert measured(rgb(centre)).rule_of_thirds_score == 0


def test_resolution_is_log_scaled_between_64_and_2048_px_on_the_short_side() -> None:
    assert resolution(64, 5000) == 0 and resolution(2048, 2048) == 10 and resolution(1, 1) == 0
    assert resolution(362, 362) == pytest.approx(5, abs=0.01) and resolution(4000, 3000) == 10


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (20000, 20), (20, 20000), (5, 1)])
def test_degenerate_sizes_give_finite_values(size) -> None:
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    r = report(measure(img, size), 5.0)
    values = [v for v in r.model_dump().values() if isinstance(v, float)]
    assert values and all(math.isfinite(v) for v in values) and r.notes


@pytest.mark.parametrize("name", PHOTOS)
def test_blurring_darkening_brightening_and_downscaling_lower_their_measure(name: str) -> None:
    img = Image.fromarray(photo(name))
    base = measured(img)
    assert measured(img.filter(ImageFilter.GaussianBlur(2))).sharpness_score < base.sharpness_score
    assert measured(ImageEnhance.Brightness(img).enhance(0.3)).exposure_score < base.exposure_score
    assert measured(ImageEnhance.Brightness(img).enhance(4)).exposure_score < base.exposure_score  # over-exposed
    small = img.resize((img.width // 4, img.height // 4))
    assert measure(small, small.size).resolution_score < base.resolution_score


@pytest.mark.parametrize("name", PHOTOS)
def test_overall_orders_a_photo_above_its_blurred_dark_small_copy_at_the_same_aesthetic(name: str) -> None:
    img = Image.fromarray(photo(name))
    worse = ImageEnhance.Brightness(img.filter(ImageFilter.GaussianBlur(3))).enhance(0.35)
    worse = worse.resize((img.width // 3, img.height // 3))
    good, bad = report(measured(img), 5.0), report(measure(worse, worse.size), 5.0)
    assert good.overall_score > bad.overall_score and good.technical_score > bad.technical_score
    assert any(n.startswith("The image is small") for n in bad.notes) and len(bad.notes) > len(good.notes)


def test_overall_is_the_documented_weighting() -> None:
    r = report(measured(Image.fromarray(photo("coffee"))), 7.5)
    technical = 0.4 * r.sharpness_score + 0.4 * r.exposure_score + 0.2 * r.resolution_score
    composition = (r.rule_of_thirds_score + r.visual_interest_score) / 2
    assert r.technical_score == pytest.approx(technical) and r.composition_score == pytest.approx(composition)
    assert r.overall_score == pytest.approx(10 * (0.4 * 7.5 + 0.45 * technical + 0.15 * composition))
    assert report(measured(FLAT), 42.0).aesthetic_score == 10  # clamped as score is
