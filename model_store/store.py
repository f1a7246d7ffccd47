"""Finding models in the BentoML store: by tag, by catalog entry, newest of a variant; what answers say of them."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import NotFound

import catalog
from model_store.entry import EntryMetadata

logger = logging.getLogger(__name__)

DEV = "dev"
RELEASE = "release"


class SaveError(Exception):
    """A save failed for a reason the user can fix; the message says how."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def stored(tag: str) -> bentoml.Model | None:
    """The stored model for ``tag``, or None."""
    try:
        return bentoml.models.get(tag)
    except NotFound:
        return None


def latest(name: str, variant: str) -> bentoml.Model | None:
    """The newest stored model called ``name`` with the given variant label, or None."""
    try:
        candidates = bentoml.models.list(name)
    except NotFound:
        return None
    found = [m for m in candidates if m.info.labels.get("variant") == variant]
    return max(found, key=lambda m: m.info.creation_time, default=None)


def is_dev(model: bentoml.Model) -> bool:
    """True for tiny random-initialised development models."""
    return model.info.labels.get("variant") == DEV


def describe(model: bentoml.Model) -> dict[str, Any]:
    """What responses say about the model that produced them."""
    return {"tag": str(model.tag), "variant": model.info.labels.get("variant", RELEASE)}


def require(tag: str, save_hint: str) -> bentoml.Model:
    """The stored model for ``tag``, or a RuntimeError that says how to register it."""
    model = stored(tag)
    if model is None:
        raise RuntimeError(f"Model {tag!r} is not in the BentoML model store. Register it first: {save_hint}")
    if is_dev(model):
        logger.warning(
            "Serving DEV model %s: tiny, random-initialised, for tests and demos only; its answers are meaningless.",
            model.tag,
        )
    return model


@dataclass(frozen=True)
class StoredEntry:
    """A catalog entry's model in the store, with its typed metadata."""

    entry: catalog.ModelEntry
    model: bentoml.Model
    meta: EntryMetadata

    @property
    def path(self) -> Path:
        return Path(self.model.path)

    @property
    def tag(self) -> str:
        return str(self.model.tag)

    @property
    def dev(self) -> bool:
        return is_dev(self.model)

    def describe(self) -> dict[str, Any]:
        return describe(self.model)


def open_entry(name: str, tag: str | None = None) -> StoredEntry:
    """The stored model of catalog entry ``name`` (at ``tag``, default its setting's), or a RuntimeError that
    says how to register it."""
    from serving.settings import settings

    entry = catalog.entry(name)
    model = require(tag or settings.tag(name), entry.save_hint)
    return StoredEntry(entry, model, EntryMetadata.of(model))


def read_labels(path: Path, expected: int) -> list[str]:
    """Class names from a JSON object with keys "0".."N-1" in model index order."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SaveError(f"Cannot read labels file {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise SaveError(f"{path} must be a JSON object with keys \"0\"..\"{expected - 1}\".")
    keys = [str(i) for i in range(expected)]
    if sorted(raw, key=lambda k: int(k) if k.isdigit() else -1) != keys:
        raise SaveError(f"{path} has {len(raw)} entries; expected keys \"0\"..\"{expected - 1}\" with none missing.")
    names = [raw[k] for k in keys]
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise SaveError(f"{path}: every class name must be a non-empty string.")
    return names


def hub_unreachable_message(repo: str, exc: BaseException) -> str:
    """The message shown when the Hugging Face Hub cannot be reached."""
    return (
        f"Cannot reach the Hugging Face Hub for {repo} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}).\n"
        "Offline options:\n"
        "  --from-dir PATH   import the weights from a local folder (README, 'Models and the BentoML store')\n"
        "  --dev             register a tiny random-initialised dev model (tests and demos only)"
    )
