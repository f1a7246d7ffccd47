"""Shared save-time helpers: hub downloads that fail fast and clearly, idempotent store entries."""

from __future__ import annotations

import logging
from pathlib import Path

import bentoml

from model_store import store
from model_store.store import SaveError

logger = logging.getLogger(__name__)


def resolve_revision(repo: str, revision: str | None) -> tuple[str, list[str]]:
    """Commit sha and file names of ``repo`` at ``revision``; SaveError naming offline options if unreachable."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi().model_info(repo, revision=revision, timeout=10)
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise SaveError(f"{repo}@{revision or 'main'} does not exist on the Hugging Face Hub: {exc}") from None
    except Exception as exc:  # network, DNS, TLS, proxy or offline mode: all mean "use an offline option"
        raise SaveError(store.hub_unreachable_message(repo, exc)) from None
    return str(info.sha), [s.rfilename for s in info.siblings or []]


def download(repo: str, sha: str, files: list[str]) -> Path:
    """Download ``files`` of ``repo`` at commit ``sha`` (with progress bars); return the local folder."""
    from huggingface_hub import snapshot_download

    logger.info("Downloading %s from %s@%s", ", ".join(files), repo, sha)
    try:
        return Path(snapshot_download(repo, revision=sha, allow_patterns=files))
    except Exception as exc:
        raise SaveError(store.hub_unreachable_message(repo, exc)) from None


def existing(tag: str, force: bool) -> bentoml.Model | None:
    """The stored model to keep (idempotent saves), after deleting it when ``force``."""
    model = store.stored(tag)
    if model is not None and force:
        logger.info("--force: replacing %s", tag)
        bentoml.models.delete(tag)
        return None
    if model is not None:
        logger.info("%s is already stored; skipping (use --force to replace it)", tag)
    return model


def reuse_release(name: str, revision: str | None, force: bool) -> bentoml.Model | None:
    """For hub saves: with no --revision any stored release (hub or --from-dir) counts, so no network is needed."""
    if force:
        return None
    found = store.stored(f"{name}:hf-{revision[:12]}") if revision else store.latest(name, store.RELEASE)
    if found is not None:
        logger.info("%s is already stored; skipping (use --force or --revision to fetch)", found.tag)
    return found
