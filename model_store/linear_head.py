"""The LAION aesthetic head (``sa_0_4_vit_b_16_linear.pth``) into the BentoML store.

Downloaded from its canonical place (GitHub LAION-AI/aesthetic-predictor at a pinned commit, or the mirror named
by ``AESTHETIC_HEAD_URL``) and checked against its sha256, unless ``--head PATH`` gives a local copy. Loaded with
strict key and shape checks before storing. With ``--dev`` and no head to be had within a few seconds, a seeded
random dev head is stored instead, labelled ``variant=dev`` like the dev towers.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import bentoml

import catalog
from engines.torch.head import HEAD_DIM, HEAD_FILE, load_head
from model_store import hub, store
from model_store.entry import EntryMetadata
from model_store.store import DEV, RELEASE, SaveError

logger = logging.getLogger(__name__)

HEAD_NAME = catalog.entry(catalog.aesthetic_tower().head).name
HEAD_COMMIT = "6d122adad522ab246644d9dc1c6d7a3810ee255f"
HEAD_FILENAME = "sa_0_4_vit_b_16_linear.pth"
CANONICAL_HEAD_URL = f"https://raw.githubusercontent.com/LAION-AI/aesthetic-predictor/{HEAD_COMMIT}/{HEAD_FILENAME}"
HEAD_URL = os.environ.get("AESTHETIC_HEAD_URL") or CANONICAL_HEAD_URL
HEAD_SHA256 = "8ad3923d7ecf019df20ecd2ab5542a3075fbba0278d239c0371345f3d7fcbde0"
DEFAULT_HEAD_PATH = Path(__file__).resolve().parents[1] / "models" / "aesthetic" / HEAD_FILENAME
DEV_TAG = f"{HEAD_NAME}:{DEV}"
HEAD_INPUT = "OpenAI CLIP ViT-B/16 image embedding (512-d, L2-normalised)"
DEV_SEED = 0
DEV_DOWNLOAD_TIMEOUT_S = 3.0  # how long --dev tries for the real head before it stores the dev head


def fetch_head(dest: Path, url: str = HEAD_URL, sha256: str = HEAD_SHA256, timeout: float = 10) -> Path:
    """Download the head to ``dest`` and check its sha256; nothing is left behind on failure."""
    import httpx

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    logger.info("Downloading %s", url)
    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as response:
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
    got = store.sha256_file(tmp)
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


def dev_head_state(seed: int = DEV_SEED) -> dict:
    """A seeded random ``Linear(512, 1)`` whose scores on L2-normalised embeddings spread around 5 (std about 2),
    so dev answers use the 0-10 scale without meaning anything."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return {"weight": torch.randn(1, HEAD_DIM, generator=generator) * 2.0, "bias": torch.tensor([5.0])}


def save_dev_head(force: bool = False) -> bentoml.Model:
    """Register the dev head as ``laion-aesthetic-vit-b16:dev`` (idempotent)."""
    from safetensors.torch import save_file

    if (kept := hub.existing(DEV_TAG, force)) is not None:
        return kept
    state = dev_head_state()
    load_head(state)
    labels = {"variant": DEV, "task": "aesthetic-head", "framework": "torch"}
    with bentoml.models.create(DEV_TAG, labels=labels, module="torch") as entry:
        save_file(state, str(Path(entry.path) / HEAD_FILE))
        EntryMetadata(kind="linear-head", input=HEAD_INPUT, output="meaningless: seeded random weights for tests and demos",
                      source=f"dev: random Linear({HEAD_DIM}, 1), seed {DEV_SEED}", revision="dev",
                      canonical=False).write(entry)
    logger.info("Registered %s (dev head)", entry.tag)
    return bentoml.models.get(entry.tag)


@hub.keeps_on_failure
def save_head(head: Path | None = None, force: bool = False, dev: bool = False) -> bentoml.Model:
    """Register the head from ``head``, the default local path, or the canonical download.

    With ``dev``, a failed download (tried for at most ``DEV_DOWNLOAD_TIMEOUT_S``) registers the dev head instead.
    """
    from safetensors.torch import save_file

    path = Path(head) if head is not None else DEFAULT_HEAD_PATH
    if head is None and not path.is_file():
        try:
            fetch_head(path, timeout=DEV_DOWNLOAD_TIMEOUT_S if dev else 10)
        except SaveError as exc:
            if not dev:
                raise
            logger.warning("No LAION head (%s); using the DEV head %s: random weights, its scores mean nothing.",
                           str(exc).splitlines()[0], DEV_TAG)
            return save_dev_head(force)
    if not path.is_file():
        raise SaveError(f"--head {path} does not exist.")
    sha = store.sha256_file(path)
    if (kept := hub.existing(f"{HEAD_NAME}:{sha[:12]}", force)) is not None:
        return kept
    state = read_head_file(path)
    canonical = sha == HEAD_SHA256
    if not canonical:
        logger.warning("%s is not the published LAION head (sha256 %s); storing it as given", path, sha)
    labels = {"variant": RELEASE, "task": "aesthetic-head", "framework": "torch"}
    with bentoml.models.create(f"{HEAD_NAME}:{sha[:12]}", labels=labels, module="torch") as entry:
        save_file({k: v.contiguous() for k, v in state.items()}, str(Path(entry.path) / HEAD_FILE))
        EntryMetadata(kind="linear-head", input=HEAD_INPUT,
                      output="LAION aesthetic rating, 0-10 scale, unbounded regression",
                      source=CANONICAL_HEAD_URL if canonical else f"local:{path}",
                      revision=HEAD_COMMIT if canonical else "unknown", licence=catalog.entry(HEAD_NAME).save.licence,
                      sha256=sha, canonical=canonical).write(entry)
    logger.info("Registered %s (%s)", entry.tag, "canonical LAION head" if canonical else "non-canonical head")
    return bentoml.models.get(entry.tag)
