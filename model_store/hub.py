"""Shared save-time helpers: hub downloads that fail fast and clearly, idempotent store entries, and --force
replacements that keep the stored entry until its successor is saved."""

from __future__ import annotations

import logging
import shutil
import tempfile
import functools
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import bentoml

from model_store import store
from model_store.store import SaveError

logger = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


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


_ASIDE: list[tuple[str, Path, Path]] = []  # (tag, store folder, where it waits) while a replacement is saved
_ASIDE_DEPTH = [0]


def existing(tag: str, force: bool) -> bentoml.Model | None:
    """The stored model to keep (idempotent saves); when ``force``, None after moving it aside, to be restored by
    :func:`keeps_on_failure` if its successor is not saved."""
    model = store.stored(tag)
    if model is not None and force:
        logger.info("--force: replacing %s (kept aside until the new one is saved)", tag)
        folder = Path(model.path)
        aside = Path(tempfile.mkdtemp(prefix="replacing-", dir=folder.parents[2])) / folder.name
        folder.rename(aside)
        _ASIDE.append((tag, folder, aside))
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


def keeps_on_failure(save: Callable[P, R]) -> Callable[P, R]:
    """For a saver: entries moved aside by :func:`existing` are dropped if it succeeds and put back if it fails,
    so a failed ``--force`` (a wrong taxonomy, the hub unreachable) never loses what was stored."""

    @functools.wraps(save)
    def scoped(*args: P.args, **kwargs: P.kwargs) -> R:
        if _ASIDE_DEPTH[0]:  # a saver called by another: the outer one decides
            return save(*args, **kwargs)
        _ASIDE_DEPTH[0] += 1
        try:
            result = save(*args, **kwargs)
        except BaseException:
            for tag, folder, aside in reversed(_ASIDE):
                if folder.exists():
                    logger.error("%s: a partial replacement is in the store; the previous one is in %s", tag, aside)
                    continue
                aside.rename(folder)
                shutil.rmtree(aside.parent, ignore_errors=True)
                logger.info("%s: not replaced; the stored one is kept", tag)
            raise
        else:
            for _, _, aside in _ASIDE:
                shutil.rmtree(aside.parent, ignore_errors=True)
            return result
        finally:
            _ASIDE.clear()
            _ASIDE_DEPTH[0] -= 1

    return scoped
