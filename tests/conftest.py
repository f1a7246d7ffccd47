"""Test fixtures. Every test runs against a throwaway BentoML store, never the user's own."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SHARED_DATA_DIR", ROOT.parent / "shared" / "data"))
REAL_HEAD = SHARED_DATA / "aesthetic" / "sa_0_4_vit_b_16_linear.pth"
REAL_LABELS = SHARED_DATA / "inat21" / "inat21_class_index.json"
REAL_TAXONOMY = SHARED_DATA / "inat21" / "inat21_taxonomy.json"
REAL_COMMON_NAMES = SHARED_DATA / "inat21" / "inat21_common_names_birder.json"
# The real LAION head where ../shared has it (tag: the published head's sha256[:12]), else the dev head.
HEAD_TAG = "laion-aesthetic-vit-b16:8ad3923d7ecf" if REAL_HEAD.is_file() else "laion-aesthetic-vit-b16:dev"

# Must happen before bentoml is imported anywhere: it reads BENTOML_HOME once.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="bentoml-test-home-")
os.environ["SPECIES_MODEL"] = "eva02-inat21:dev"
os.environ["AESTHETIC_CLIP_MODEL"] = "clip-vit-b16-openai:dev"
os.environ["AESTHETIC_HEAD_MODEL"] = HEAD_TAG
os.environ["AESTHETIC_HEAD_URL"] = "http://127.0.0.1:9/sa_0_4_vit_b_16_linear.pth"  # refused at once: no network
os.environ["ZERO_SHOT_L14_MODEL"] = "clip-vit-large-patch14:dev"
os.environ["ZERO_SHOT_B32_MODEL"] = "open-clip-vit-b32:dev"
os.environ["ZERO_SHOT_B32_LAION2B_MODEL"] = "open-clip-vit-b32-laion2b:dev"
os.environ["JOB_STORE_PATH"] = str(Path(os.environ["BENTOML_HOME"]) / "jobs" / "jobs.sqlite")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402


def served_precision() -> str:
    """The precision a server started by the tests runs its models in on this machine (PRECISION; unset: auto)."""
    from engines.precision import resolve_precision

    return resolve_precision(os.environ.get("PRECISION", ""), "cpu")


def served_engine() -> str:
    """The engine a server started by the tests runs its classifier and CLIP towers on (ENGINE; unset: auto)."""
    from engines import openvino_installed

    setting = os.environ.get("ENGINE", "") or "auto"
    return ("openvino" if openvino_installed() else "torch") if setting == "auto" else setting


# How far an answer may be from an independent fp32 reference: exact up to float noise in fp32, and within the
# parity bounds of bf16 (README, "CPU precision") where the models run in bf16.
EXACT = served_precision() == "fp32"
SCORE_TOLERANCE = 1e-3 if EXACT else 0.05
PROBABILITY_TOLERANCE = 1e-4 if EXACT else 1e-3


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
def aesthetic_models():
    """(dev CLIP ViT-B/16 image tower, head) in the test store: the real LAION head when ../shared has it, else
    the dev head, so the tests run on a bare clone too."""
    from model_store.linear_head import save_dev_head, save_head
    from model_store.clip import AESTHETIC_CLIP, save_clip

    head = save_head(REAL_HEAD) if REAL_HEAD.is_file() else save_dev_head()
    assert str(head.tag) == HEAD_TAG
    return save_clip(AESTHETIC_CLIP, dev=True), head


@pytest.fixture(scope="session")
def zero_shot_models() -> dict:
    """Both dev zero-shot CLIPs (image and text towers) in the test store, by API model id."""
    from model_store.clip import ZERO_SHOT_CLIPS, save_clip

    return {name: save_clip(spec, dev=True) for name, spec in ZERO_SHOT_CLIPS.items()}


@pytest.fixture(scope="session")
def species_dev_model():
    """The dev species model in the test store, with real iNat21 names, taxonomy and common names when ../shared is
    present (else dev names and a dev taxonomy)."""
    from model_store.timm_classifier import save_species

    real = REAL_LABELS.is_file()
    return save_species(dev=True, labels=REAL_LABELS if real else None,
                        taxonomy=REAL_TAXONOMY if real and REAL_TAXONOMY.is_file() else None,
                        common_names=REAL_COMMON_NAMES if real and REAL_COMMON_NAMES.is_file() else None)


def pytest_addoption(parser) -> None:
    parser.addoption("--max-skipped", type=int, default=None,
                     help="fail the run when more tests than this were skipped (GPU tests not counted)")


def pytest_sessionfinish(session, exitstatus) -> None:
    """``--max-skipped N``: how a bare clone (no ../shared) proves it runs all but the real-data tests."""
    limit = session.config.getoption("--max-skipped")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if limit is None or reporter is None:
        return
    skipped = [r for r in reporter.stats.get("skipped", []) if "gpu" not in getattr(r, "keywords", {})]
    if len(skipped) > limit:
        where = "\n".join(f"  {r.nodeid}: {r.longrepr[-1] if isinstance(r.longrepr, tuple) else r.longrepr}"
                          for r in skipped)
        reporter.write_line(f"{len(skipped)} tests skipped, more than --max-skipped {limit}:\n{where}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def postgres_server():
    """A new throwaway PostgreSQL server (tests/support/local_postgres.py), or a skip naming the package to install."""
    from tests.support.local_postgres import PostgresServer

    try:
        return PostgresServer()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session; skipped only when none is installed."""
    server = postgres_server()
    yield server
    server.close()
