"""The store-entry format: one typed ``EntryMetadata``, written by the save step and read by every reader.

A BentoML store entry holds the weights (and, per kind, config and tokenizer files) in its folder, and this
metadata in ``info.metadata``: what the model is, how to preprocess its input, which inference engine runs it,
and where it came from. Entries saved before ``kind`` and ``engine`` were written read as the torch engine.
"""

from __future__ import annotations

from typing import Any

import bentoml
from pydantic import BaseModel, ConfigDict

from serving.imaging import PreprocessConfig


class EntryMetadata(BaseModel):
    """What the save step records about a stored model. Fields a kind does not use stay unset."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: str | None = None  # catalog kind: timm-classifier, clip, linear-head
    engine: str = "torch"  # the inference engine that runs it (engines/)
    architecture: str | None = None
    pretrained: str | None = None  # open_clip pretrained tag
    towers: tuple[str, ...] | None = None  # CLIP towers kept: visual, text
    embed_dim: int | None = None
    num_classes: int | None = None
    preprocess: PreprocessConfig | None = None  # the eval transform, from timm's / open_clip's saved config
    logit_scale: float | None = None  # exp(learned logit scale) of a CLIP with a text tower
    tokenizer: dict[str, Any] | None = None
    taxonomy: dict[str, Any] | None = None  # classifiers: the stored taxonomy.json (model_store/taxonomy.py)
    weights: str | None = None  # file name in the entry's folder
    input: str | None = None  # heads: what they take
    output: str | None = None  # heads: what they give
    canonical: bool | None = None  # heads: the published file (by sha256)
    source: str | None = None
    revision: str | None = None
    licence: str | None = None
    sha256: str | None = None

    @classmethod
    def of(cls, model: bentoml.Model) -> "EntryMetadata":
        """The metadata of a stored model."""
        return cls.model_validate(dict(model.info.metadata))

    def write(self, model: bentoml.Model) -> None:
        """Record this metadata on a model being created (inside ``bentoml.models.create``)."""
        model.info.metadata.update(self.model_dump(mode="json", exclude_none=True))

    def require_preprocess(self) -> PreprocessConfig:
        if self.preprocess is None:
            raise RuntimeError(f"store entry of {self.architecture} has no preprocess config; re-save it")
        return self.preprocess
