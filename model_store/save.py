"""The save step for any catalog entry: one saver per kind, over :mod:`model_store.timm_classifier`,
:mod:`model_store.clip` and :mod:`model_store.linear_head`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import bentoml

import catalog
from model_store.store import SaveError


@dataclass(frozen=True)
class SaveOptions:
    """Where the weights come from: the hub (default), ``from_dir``, or a dev model (``dev``; ``full_size``: the
    real architecture with random weights, for speed measurements)."""

    dev: bool = False
    from_dir: Path | None = None
    revision: str | None = None
    force: bool = False
    full_size: bool = False
    labels: Path | None = None  # classifiers: class names
    arch: str | None = None  # classifiers: timm config for a --from-dir folder without config.json
    head: Path | None = None  # heads: a local file
    taxonomy: Path | None = None  # classifiers: kingdom..genus per class (inat21_taxonomy.json)
    common_names: Path | None = None  # classifiers: a common name per class


def save_entry(entry: catalog.ModelEntry, options: SaveOptions) -> bentoml.Model:
    """Register ``entry`` in the store (idempotent unless ``force``); the stored model."""
    if options.full_size and not options.dev:
        raise SaveError("--full-size only goes with --dev: it registers random weights for speed measurements.")
    if entry.kind == "timm-classifier":
        from model_store.timm_classifier import save_species

        return save_species(dev=options.dev, from_dir=options.from_dir, labels=options.labels,
                            revision=options.revision, arch=options.arch or entry.save.arch, force=options.force,
                            full_size=options.full_size, taxonomy=options.taxonomy,
                            common_names=options.common_names)
    if entry.kind == "clip":
        from model_store.clip import ClipSpec, save_clip

        return save_clip(ClipSpec.of(entry), dev=options.dev, from_dir=options.from_dir, revision=options.revision,
                         force=options.force, full_size=options.full_size)
    if entry.kind == "linear-head":
        from model_store.linear_head import save_head

        return save_head(options.head, force=options.force, dev=options.dev)
    raise SaveError(f"{entry.name}: no saver for kind {entry.kind!r}")


def save_group(group: str, options: SaveOptions, only: str | None = None) -> dict[str, str]:
    """Save every entry of ``group`` ("all" for every group), or just ``only``; {setting: stored tag}."""
    chosen = [m for m in catalog.MODELS if group in ("all", m.group) and only in (None, m.name)]
    weights = [m for m in chosen if m.kind != "linear-head"]  # a head comes from --head, never --from-dir
    if options.from_dir is not None and len(weights) > 1:
        names = ", ".join(m.name for m in weights)
        raise SaveError(f"--from-dir imports one model: add --model with one of {names}.")
    return {m.setting: str(save_entry(m, options).tag) for m in chosen}
