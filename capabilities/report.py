"""The photo report: technical and composition measures of a decoded photo, combined with the LAION aesthetic score.

What danactive/history's admin page shows on ``POST /scores`` (``overall_score``, ``visual_interest_score``,
``rule_of_thirds_score``, ``sharpness_score``) and what its later backend adds, computed here with numpy on the
gateway's decoded image (no model): :func:`measure` gives the measures, :func:`report` combines them with the
aesthetic score. The README ("Photo report") gives each formula and range. Bulk scoring (``--report``) calls the
same two functions, so its rows equal the HTTP answers.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from serving.schemas import Measures, PhotoReport

ANALYSIS_SIDE = 512  # measures are taken on a grey copy whose longer side is this (as the photo looks on a screen)
SHARPNESS_FULL = 1000.0  # variance of the Laplacian (grey 0-255) that scores 10
RESOLUTION_RANGE = (64, 2048)  # short side in pixels scoring 0 and 10 (log scale between)
CLIPPED_DARK, CLIPPED_BRIGHT = 5, 250  # grey levels counted as clipped shadows / highlights
EDGE = 20.0  # gradient magnitude (grey 0-255) above which a pixel counts as an edge
EDGE_DENSITY_FULL = 0.2  # share of edge pixels that scores 10 on its half of visual interest
THIRDS_BAND = 1 / 12  # half-width of the bands around the thirds lines, as a share of the side
WEIGHTS = {"technical": {"sharpness": 0.4, "exposure": 0.4, "resolution": 0.2},
           "overall": {"aesthetic": 0.4, "technical": 0.45, "composition": 0.15}}


def grey(img: Image.Image) -> np.ndarray:
    """float32 grey levels 0-255 (ITU-R 601 luma) of ``img`` scaled so its longer side is at most ANALYSIS_SIDE."""
    scale = ANALYSIS_SIDE / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(img.convert("L"), dtype=np.float32)


def _clip10(x: float) -> float:
    return float(min(10.0, max(0.0, 10.0 * x))) if math.isfinite(x) else 0.0


def sharpness(g: np.ndarray) -> float:
    """10 * log(1 + var(Laplacian)) / log(1 + 1000), clipped to 0-10; 0 for images under 3x3 pixels."""
    if min(g.shape) < 3:
        return 0.0
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return _clip10(math.log1p(float(lap.var(dtype=np.float64))) / math.log1p(SHARPNESS_FULL))


def exposure(g: np.ndarray) -> tuple[float, float, float, float]:
    """(score, clipped shadows, clipped highlights, brightness): score = 10 * max(0, 1 - 2 (shadows + highlights))
    * (1 - ((brightness - 0.5) / 0.5)^2)."""
    dark, bright = float((g <= CLIPPED_DARK).mean()), float((g >= CLIPPED_BRIGHT).mean())
    mean = float(g.mean(dtype=np.float64)) / 255
    return _clip10(max(0.0, 1 - 2 * (dark + bright)) * (1 - ((mean - 0.5) / 0.5) ** 2)), dark, bright, mean


def resolution(width: int, height: int) -> float:
    """10 * log2(short side / 64) / log2(2048 / 64), clipped to 0-10."""
    low, high = RESOLUTION_RANGE
    return _clip10(math.log2(max(min(width, height), 1) / low) / math.log2(high / low))


def gradient(g: np.ndarray) -> np.ndarray:
    """Gradient magnitude |dx| + |dy| from forward differences (the last row and column are zero), the edge map of
    the composition measures."""
    mag = np.zeros_like(g)
    if min(g.shape) >= 2:
        np.abs(g[:-1, 1:] - g[:-1, :-1], out=mag[:-1, :-1])
        mag[:-1, :-1] += np.abs(g[1:, :-1] - g[:-1, :-1])
    return mag


def rule_of_thirds(mag: np.ndarray) -> float:
    """The share of edge energy in bands (half-width 1/12 of the side) around the four thirds lines, over the bands'
    share of the area (5/9): 1 for edges spread evenly. Score = 10 * (ratio - 0.5), clipped; 0 without edges."""
    total = float(mag.sum(dtype=np.float64))
    if total <= 0:
        return 0.0
    h, w = mag.shape
    ys, xs = (np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w
    near_y = np.minimum(abs(ys - 1 / 3), abs(ys - 2 / 3)) <= THIRDS_BAND
    near_x = np.minimum(abs(xs - 1 / 3), abs(xs - 2 / 3)) <= THIRDS_BAND
    band = near_y[:, None] | near_x[None, :]
    area = float(band.mean())
    if area <= 0:
        return 0.0
    return _clip10(float(mag[band].sum(dtype=np.float64)) / total / area - 0.5)


def visual_interest(g: np.ndarray, mag: np.ndarray) -> float:
    """10 * (0.5 * min(1, edge density / 0.2) + 0.5 * grey-level entropy / 8 bits): detail and tonal variety."""
    density = float((mag > EDGE).mean())
    counts = np.bincount(g.astype(np.uint8).ravel(), minlength=256)
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * np.log2(p)).sum())
    return _clip10(0.5 * min(1.0, density / EDGE_DENSITY_FULL) + 0.5 * entropy / 8)


def measure(img: Image.Image, size: tuple[int, int]) -> Measures:
    """The measures of a decoded RGB photo whose original is ``size`` (width, height)."""
    g = grey(img)
    mag = gradient(g)
    score, dark, bright, mean = exposure(g)
    return Measures(sharpness_score=sharpness(g), exposure_score=score, resolution_score=resolution(*size),
                    rule_of_thirds_score=rule_of_thirds(mag), visual_interest_score=visual_interest(g, mag),
                    image_width=size[0], image_height=size[1], clipped_shadows=dark, clipped_highlights=bright,
                    brightness=mean)


def notes(m: Measures) -> list[str]:
    """Plain sentences naming what limits the photo, worst first; one sentence when nothing does."""
    found: list[tuple[float, str]] = []
    if m.sharpness_score < 4:
        found.append((m.sharpness_score, "The image appears soft."))
    if m.clipped_highlights > 0.05:
        found.append((10 - 100 * m.clipped_highlights,
                      f"Highlights are clipped: {100 * m.clipped_highlights:.0f}% of the image is pure white."))
    if m.clipped_shadows > 0.05:
        found.append((10 - 100 * m.clipped_shadows,
                      f"Shadows are clipped: {100 * m.clipped_shadows:.0f}% of the image is pure black."))
    if m.brightness < 0.25:
        found.append((m.exposure_score, "The image is dark (underexposed)."))
    elif m.brightness > 0.75:
        found.append((m.exposure_score, "The image is bright (overexposed)."))
    if m.resolution_score < 4:
        found.append((m.resolution_score, f"The image is small ({m.image_width}x{m.image_height}); it will look soft "
                                          "when shown large."))
    if m.visual_interest_score < 3:
        found.append((m.visual_interest_score, "The image has little detail or texture."))
    elif m.rule_of_thirds_score < 2:
        found.append((m.rule_of_thirds_score + 1, "Little of the detail sits on the thirds lines."))
    return [text for _, text in sorted(found, key=lambda item: item[0])] or ["No technical problems found."]


def weighted(parts: dict[str, float], weights: dict[str, float]) -> float:
    return sum(weights[k] * parts[k] for k in weights)


def report(m: Measures, aesthetic_score: float) -> PhotoReport:
    """The measures with the technical, composition and overall scores and the notes."""
    technical = weighted({"sharpness": m.sharpness_score, "exposure": m.exposure_score,
                          "resolution": m.resolution_score}, WEIGHTS["technical"])
    composition = (m.rule_of_thirds_score + m.visual_interest_score) / 2
    aesthetic = min(10.0, max(0.0, aesthetic_score))
    overall = 10 * weighted({"aesthetic": aesthetic, "technical": technical, "composition": composition},
                            WEIGHTS["overall"])
    return PhotoReport(**m.model_dump(), technical_score=technical, composition_score=composition,
                       aesthetic_score=aesthetic, overall_score=min(100.0, max(0.0, overall)), notes=notes(m))
