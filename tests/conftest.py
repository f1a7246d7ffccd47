"""Test fixtures. Every test runs against a throwaway BentoML store, never the user's own."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

# Must happen before bentoml is imported anywhere: it reads BENTOML_HOME once.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="bentoml-test-home-")
os.environ["SPECIES_MODEL"] = "eva02-inat21:dev"
os.environ["AESTHETIC_CLIP_MODEL"] = "clip-vit-b16-openai:dev"
os.environ["AESTHETIC_HEAD_MODEL"] = "laion-aesthetic-vit-b16:8ad3923d7ecf"  # the published head's sha256[:12]
os.environ["ZERO_SHOT_L14_MODEL"] = "clip-vit-large-patch14:dev"
os.environ["ZERO_SHOT_B32_MODEL"] = "open-clip-vit-b32:dev"
os.environ["JOB_STORE_PATH"] = str(Path(os.environ["BENTOML_HOME"]) / "jobs" / "jobs.sqlite")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SHARED_DATA_DIR", ROOT.parent / "shared" / "data"))


def shared_file(relative: str) -> Path:
    """A third-party data file from ``$SHARED_DATA_DIR`` (default ``../shared/data``), or skip."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"{path} is absent: set SHARED_DATA_DIR to the folder holding {relative} (see README, Tests)")
    return path


def photo(name: str) -> np.ndarray:
    """A real RGB photo shipped with scikit-image."""
    import skimage.data
    import skimage.io

    if name == "rocket":
        return skimage.io.imread(Path(skimage.data.__file__).parent / "rocket.jpg")
    return getattr(skimage.data, name)()


def encode(array_or_img, fmt: str = "JPEG", **kwargs) -> bytes:
    """Encode an array or PIL image to bytes in ``fmt``."""
    img = array_or_img if isinstance(array_or_img, Image.Image) else Image.fromarray(array_or_img)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="session")
def inat21_labels() -> Path:
    return shared_file("inat21/inat21_class_index.json")


@pytest.fixture(scope="session")
def laion_head() -> Path:
    return shared_file("aesthetic/sa_0_4_vit_b_16_linear.pth")


@pytest.fixture(scope="session")
def aesthetic_models(laion_head):
    """(dev CLIP ViT-B/16 image tower, the real LAION head) in the test store."""
    from scripts.aesthetic_head import save_head
    from scripts.clip_models import AESTHETIC_CLIP, save_clip

    return save_clip(AESTHETIC_CLIP, dev=True), save_head(laion_head)


@pytest.fixture(scope="session")
def zero_shot_models() -> dict:
    """Both dev zero-shot CLIPs (image and text towers) in the test store, by API model id."""
    from scripts.clip_models import ZERO_SHOT_CLIPS, save_clip

    return {name: save_clip(spec, dev=True) for name, spec in ZERO_SHOT_CLIPS.items()}


@pytest.fixture(scope="session")
def species_dev_model():
    """The dev species model in the test store, with real iNat21 names when ../shared is present."""
    from scripts.species_model import save_species

    labels = SHARED_DATA / "inat21" / "inat21_class_index.json"
    return save_species(dev=True, labels=labels if labels.is_file() else None)
