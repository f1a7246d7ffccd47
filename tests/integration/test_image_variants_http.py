"""Every image variant a camera or editor produces gets the answer of its plain RGB version, or a clear 415."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import encode, photo

pytestmark = pytest.mark.integration


def png(img: Image.Image, **kwargs) -> bytes:
    return encode(img, "PNG", **kwargs)


def raw_score(server, body: bytes) -> float:
    response = httpx.post(f"{server.url}/score", content=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["raw"]


RGB = Image.fromarray(photo("coffee"))


@pytest.mark.parametrize("name,variant,reference", [
    ("grayscale", png(RGB.convert("L")), png(RGB.convert("L").convert("RGB"))),
    ("alpha", png(RGB.convert("RGBA")), png(RGB)),
    ("palette", png(RGB.convert("P")), png(RGB.convert("P").convert("RGB"))),
    ("16-bit grey", png(Image.fromarray(np.asarray(RGB.convert("L"), dtype=np.uint16) * 257)),
     png(RGB.convert("L").convert("RGB"))),
    ("cmyk jpeg", encode(RGB.convert("CMYK"), "JPEG", quality=95),
     png(Image.open(io.BytesIO(encode(RGB.convert("CMYK"), "JPEG", quality=95))).convert("RGB"))),
])
def test_colour_variants_score_like_their_rgb_conversion(server, name, variant, reference) -> None:
    assert raw_score(server, variant) == pytest.approx(raw_score(server, reference), abs=1e-5)


def test_exif_orientation_is_applied_before_scoring(server) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    tagged = png(RGB, exif=exif.tobytes())
    upright = png(RGB.transpose(Image.Transpose.ROTATE_270))
    assert raw_score(server, tagged) == pytest.approx(raw_score(server, upright), abs=1e-5)
    assert raw_score(server, tagged) != pytest.approx(raw_score(server, png(RGB)), abs=1e-5)


def _multi_frame(fmt: str) -> bytes:
    frames = [Image.fromarray(photo("chelsea")), Image.fromarray(photo("coffee")).resize((451, 300))]
    buf = io.BytesIO()
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:])
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
@pytest.mark.parametrize("path", ["/classify", "/score"])
def test_animated_gif_and_multi_frame_tiff_are_415(server, fmt: str, path: str) -> None:
    response = httpx.post(f"{server.url}{path}", content=_multi_frame(fmt), timeout=60)
    assert response.status_code == 415 and response.json()["error"] == "unsupported_media_type"


def test_unwritable_job_store_is_a_clear_startup_error(species_dev_model, aesthetic_models, zero_shot_models,
                                                      tmp_path) -> None:
    from tests.integration.conftest import own_home, start_server

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    # BentoML respawns a gateway whose start-up fails, so the server never turns ready (/readyz stays 503).
    with pytest.raises(RuntimeError, match="not ready"):
        start_server(tmp_path / "serve.log", {"JOB_STORE_PATH": str(blocker / "jobs.sqlite"),
                                              "BENTOML_HOME": own_home(tmp_path / "home")}, timeout=30)
    assert "with a writable file on a local disk" in (tmp_path / "serve.log").read_text()
