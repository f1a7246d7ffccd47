"""Species classifier: timm EVA02-Large/14 @ 336 fine-tuned on iNaturalist 2021, into the BentoML store.

Every source goes through one path: a timm hub-format folder (config.json + weights) is loaded strictly with
``timm.create_model("local-dir:...")`` and written to the store as safetensors with its preprocessing config,
class names, source, revision, licence and sha256.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import bentoml

import catalog
from model_store import hub, store
from model_store.entry import EntryMetadata
from model_store.store import DEV, RELEASE, SaveError
from serving.imaging import PreprocessConfig

logger = logging.getLogger(__name__)

SPECIES = catalog.species_model()
SPECIES_MODEL_NAME = SPECIES.name
SPECIES_REPO = SPECIES.save.repo
SPECIES_ARCH = SPECIES.save.arch  # timm registry config, used when a folder lacks config.json
SPECIES_DEV_ARCH = SPECIES.save.dev_arch
SPECIES_LICENCE = SPECIES.save.licence
SPECIES_CLASSES = SPECIES.save.num_classes
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def as_timm_folder(src: Path, arch: str, workdir: Path) -> Path:
    """``src`` itself if it has config.json, else a folder linking its weights beside timm's default config."""
    if not src.is_dir():
        raise SaveError(f"--from-dir {src} is not a folder; point it at a folder holding {' or '.join(WEIGHT_FILES)}.")
    weights = next((src / f for f in WEIGHT_FILES if (src / f).is_file()), None)
    if weights is None:
        raise SaveError(f"{src} holds neither {' nor '.join(WEIGHT_FILES)}; nothing to import.")
    if (src / "config.json").is_file():
        return src
    import timm

    num_classes = _head_classes(weights)
    logger.info("%s has no config.json; using timm's config for %s with %d classes", src, arch, num_classes)
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    (workdir / weights.name).symlink_to(weights.resolve())
    from timm.models._hub import save_config_for_hf

    save_config_for_hf(model, workdir / "config.json")
    return workdir


def _head_classes(weights: Path) -> int:
    """Number of classes in a checkpoint's classifier (``head.weight`` rows)."""
    if weights.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as fh:
            shape = fh.get_slice("head.weight").get_shape() if "head.weight" in fh.keys() else None
    else:
        import torch

        state = torch.load(weights, map_location="cpu", weights_only=True)
        shape = list(state["head.weight"].shape) if "head.weight" in state else None
    if not shape:
        raise SaveError(f"{weights} has no head.weight; is it a timm classifier checkpoint?")
    return int(shape[0])


def label_list(names: Any, expected: int) -> list[str] | None:
    """Normalise timm's label_names (list, or dict keyed by index) to a list, if complete."""
    if isinstance(names, dict):
        names = [names.get(str(i), names.get(i)) for i in range(expected)]
    if isinstance(names, (list, tuple)) and len(names) == expected and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def register_timm_folder(
    folder: Path,
    *,
    name: str,
    version: str,
    variant: str,
    source: str,
    revision: str,
    licence: str,
    labels_file: Path | None,
    taxonomy: Path | None = None,
    common_names: Path | None = None,
) -> bentoml.Model:
    """Load a timm hub-format folder strictly and write it into the store, with its taxonomy
    (:mod:`model_store.taxonomy`: from ``taxonomy`` and ``common_names``, or a dev one for a dev model)."""
    from model_store import taxonomy as taxa

    import timm

    try:
        model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        raise SaveError(f"Cannot load a timm model from {folder}: {str(exc).splitlines()[0][:300]}") from None
    num_classes = model.num_classes
    if labels_file is not None:
        names = store.read_labels(labels_file, num_classes)
    else:
        names = label_list(model.pretrained_cfg.get("label_names"), num_classes)
        if names is None:
            raise SaveError(
                f"{source} carries no class names for its {num_classes} classes; pass --labels PATH "
                '(JSON object, keys "0".."N-1" in model index order, e.g. inat21_class_index.json).'
            )
    taxon = taxa.build(names, taxonomy, common_names, dev=variant == DEV)
    if taxon is None:
        logger.warning("%s is saved without a taxonomy: answers carry no lineage, roll-up or common names. Pass "
                       "--taxonomy inat21_taxonomy.json (and --common-names) to add them.", name)
    preprocess = PreprocessConfig.model_validate(timm.data.resolve_model_data_config(model))
    arch = model.pretrained_cfg["architecture"]
    labels = {"variant": variant, "task": "species-classification", "framework": "timm"}
    with bentoml.models.create(f"{name}:{version}", labels=labels, module="timm") as entry:
        out = Path(entry.path)
        timm.models.save_for_hf(model, out, model_config={"label_names": names}, safe_serialization=True)
        EntryMetadata(kind="timm-classifier", architecture=arch, num_classes=num_classes, preprocess=preprocess,
                      source=source, revision=revision, licence=licence,
                      sha256=store.sha256_file(out / "model.safetensors"), weights="model.safetensors",
                      taxonomy=taxa.write(out, taxon) if taxon else None).write(entry)
    logger.info("Registered %s (%s, %s, %d classes)", entry.tag, variant, arch, num_classes)
    return bentoml.models.get(entry.tag)


@hub.keeps_on_failure
def save_species(
    *,
    dev: bool = False,
    from_dir: Path | None = None,
    labels: Path | None = None,
    revision: str | None = None,
    arch: str = SPECIES_ARCH,
    force: bool = False,
    full_size: bool = False,
    taxonomy: Path | None = None,
    common_names: Path | None = None,
) -> bentoml.Model:
    """Register the species classifier from the hub, a local folder, or as a dev model, with its taxonomy.

    ``full_size`` with ``dev``: random weights in the real EVA02-L/14 @ 336 architecture (version ``bench``), for
    speed measurements; still labelled dev.
    """
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if dev:
            dev_arch = SPECIES_ARCH if full_size else SPECIES_DEV_ARCH
            version, variant, source, rev = "bench" if full_size else DEV, DEV, f"timm:{dev_arch} (random init)", "none"
            tag = f"{SPECIES_MODEL_NAME}:{version}"
            if (kept := hub.existing(tag, force or stale_taxonomy(tag, taxonomy))) is not None:
                return kept
            import timm

            torch.manual_seed(0)
            tiny = timm.create_model(dev_arch, pretrained=False, num_classes=SPECIES_CLASSES)
            timm.models.save_for_hf(tiny, work, safe_serialization=True)
            folder, licence = work, "dev model: random weights, no licence restrictions"
            if labels is None:
                labels = work / "dev_labels.json"
                labels.write_text(json.dumps({str(i): f"dev class {i:04d}" for i in range(SPECIES_CLASSES)}))
        elif from_dir is not None:
            folder = as_timm_folder(Path(from_dir), arch, work)
            weights = next(folder / f for f in WEIGHT_FILES if (folder / f).exists())
            rev = store.sha256_file(weights)
            version, variant, source, licence = f"local-{rev[:12]}", RELEASE, f"local-dir:{from_dir}", SPECIES_LICENCE
            if (kept := hub.existing(f"{SPECIES_MODEL_NAME}:{version}", force)) is not None:
                return kept
        else:
            if (kept := hub.reuse_release(SPECIES_MODEL_NAME, revision, force)) is not None:
                return kept
            rev, _ = hub.resolve_revision(SPECIES_REPO, revision)
            version, variant, source, licence = f"hf-{rev[:12]}", RELEASE, f"hf-hub:{SPECIES_REPO}", SPECIES_LICENCE
            if (kept := hub.existing(f"{SPECIES_MODEL_NAME}:{version}", force)) is not None:
                return kept
            folder = hub.download(SPECIES_REPO, rev, ["config.json", "model.safetensors"])
        return register_timm_folder(
            folder,
            name=SPECIES_MODEL_NAME,
            version=version,
            variant=variant,
            source=source,
            revision=rev,
            licence=licence,
            labels_file=labels,
            taxonomy=taxonomy,
            common_names=common_names,
        )


def stale_taxonomy(tag: str, taxonomy: Path | None) -> bool:
    """A stored dev model to save again: saved before taxonomies were stored, with an older dev taxonomy, or with a
    dev taxonomy when a real one is given now."""
    from model_store import taxonomy as taxa

    model = store.stored(tag)
    if model is None:
        return False
    kept = model.info.metadata.get("taxonomy")
    if kept is None or (kept.get("dev") and (taxonomy is not None or kept.get("source") != taxa.DEV_SOURCE)):
        logger.info("%s has %s; saving it again with its taxonomy", tag, "a dev taxonomy" if kept else "no taxonomy")
        return True
    return False
