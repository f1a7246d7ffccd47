"""The LAION aesthetic head (``sa_0_4_vit_b_16_linear.pth``) into the BentoML store.

Downloaded from its canonical place (GitHub LAION-AI/aesthetic-predictor at a pinned commit) and checked against
its sha256, unless ``--head PATH`` gives a local copy. Loaded with strict key and shape checks before storing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import bentoml

from runners.aesthetic import HEAD_DIM, HEAD_FILE, load_head
from scripts import hub
from serving import model_store
from serving.model_store import RELEASE, SaveError
from serving.settings import AESTHETIC_HEAD_NAME as HEAD_NAME

logger = logging.getLogger(__name__)

HEAD_COMMIT = "6d122adad522ab246644d9dc1c6d7a3810ee255f"
HEAD_FILENAME = "sa_0_4_vit_b_16_linear.pth"
HEAD_URL = f"https://raw.githubusercontent.com/LAION-AI/aesthetic-predictor/{HEAD_COMMIT}/{HEAD_FILENAME}"
HEAD_SHA256 = "8ad3923d7ecf019df20ecd2ab5542a3075fbba0278d239c0371345f3d7fcbde0"
DEFAULT_HEAD_PATH = Path(__file__).resolve().parents[1] / "models" / "aesthetic" / HEAD_FILENAME


def fetch_head(dest: Path, url: str = HEAD_URL, sha256: str = HEAD_SHA256) -> Path:
    """Download the head to ``dest`` and check its sha256; nothing is left behind on failure."""
    import httpx

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    logger.info("Downloading %s", url)
    try:
        with httpx.stream("GET", url, timeout=10, follow_redirects=True) as response:
            response.raise_for_status()
            with open(tmp, "wb") as fh:
                for chunk in response.iter_bytes():
                    fh.write(chunk)
    except httpx.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        raise SaveError(
            f"Cannot download the LAION head from {url} ({type(exc).__name__}: {exc}).\n"
            f"Offline option: --head PATH (a local copy of {HEAD_FILENAME}), or place it at {DEFAULT_HEAD_PATH}."
        ) from None
    got = model_store.sha256_file(tmp)
    if got != sha256:
        tmp.unlink()
        raise SaveError(f"Downloaded head has sha256 {got}, expected {sha256}; refusing it.")
    tmp.replace(dest)
    return dest


def read_head_file(path: Path):
    """The head's tensors, loaded without executing pickled code, checked to be a Linear(512, 1)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SaveError(f"{path} is not a PyTorch state dict: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(state, dict):
        raise SaveError(f"{path} holds a {type(state).__name__}, not a state dict of a Linear({HEAD_DIM}, 1).")
    try:
        load_head(state)
    except ValueError as exc:
        raise SaveError(f"{path}: {exc}. Use the head for OpenAI CLIP ViT-B/16 ({HEAD_FILENAME}).") from None
    return state


def save_head(head: Path | None = None, force: bool = False) -> bentoml.Model:
    """Register the head from ``head``, the default local path, or the canonical download."""
    from safetensors.torch import save_file

    path = Path(head) if head is not None else DEFAULT_HEAD_PATH
    if head is None and not path.is_file():
        fetch_head(path)
    if not path.is_file():
        raise SaveError(f"--head {path} does not exist.")
    sha = model_store.sha256_file(path)
    if (kept := hub.existing(f"{HEAD_NAME}:{sha[:12]}", force)) is not None:
        return kept
    state = read_head_file(path)
    canonical = sha == HEAD_SHA256
    if not canonical:
        logger.warning("%s is not the published LAION head (sha256 %s); storing it as given", path, sha)
    labels = {"variant": RELEASE, "task": "aesthetic-head", "framework": "torch"}
    with bentoml.models.create(f"{HEAD_NAME}:{sha[:12]}", labels=labels, module="torch") as entry:
        save_file({k: v.contiguous() for k, v in state.items()}, str(Path(entry.path) / HEAD_FILE))
        entry.info.metadata.update({
            "input": "OpenAI CLIP ViT-B/16 image embedding (512-d, L2-normalised)",
            "output": "LAION aesthetic rating, 0-10 scale, unbounded regression",
            "source": f"{HEAD_URL}" if canonical else f"local:{path}",
            "revision": HEAD_COMMIT if canonical else "unknown",
            "licence": "MIT (LAION-AI/aesthetic-predictor)",
            "sha256": sha,
            "canonical": canonical,
        })
    logger.info("Registered %s (%s)", entry.tag, "canonical LAION head" if canonical else "non-canonical head")
    return bentoml.models.get(entry.tag)
