"""Models in the BentoML store: the typed entry format (:mod:`model_store.entry`), look-ups (:mod:`model_store.store`)
and the save step per kind (:mod:`model_store.save`, over ``timm_classifier``, ``clip`` and ``linear_head``)."""

from model_store.entry import EntryMetadata
from model_store.store import (
    DEV,
    RELEASE,
    SaveError,
    StoredEntry,
    describe,
    is_dev,
    latest,
    open_entry,
    read_labels,
    require,
    sha256_file,
    stored,
)

__all__ = ["DEV", "RELEASE", "EntryMetadata", "SaveError", "StoredEntry", "describe", "is_dev", "latest",
           "open_entry", "read_labels", "require", "sha256_file", "stored"]
