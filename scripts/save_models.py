"""Register the service's models in the BentoML model store.

    python scripts/save_models.py species                         # Hugging Face Hub (default)
    python scripts/save_models.py species --from-dir ./eva02      # offline import of a local checkpoint
    python scripts/save_models.py species --dev --labels inat21_class_index.json   # tiny random dev model

Every source goes through one path: a timm hub-format folder (config.json + weights) is loaded with
``timm.create_model("local-dir:...")`` and written to the store as safetensors with its preprocessing
config, class names, source, revision, licence and sha256. Existing entries are kept unless --force.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import bentoml  # noqa: E402

from serving import model_store  # noqa: E402
from serving.imaging import PreprocessConfig  # noqa: E402
from serving.model_store import DEV, RELEASE, SaveError  # noqa: E402
from serving.settings import SPECIES_MODEL_NAME  # noqa: E402

logger = logging.getLogger("save_models")

SPECIES_REPO = "timm/eva02_large_patch14_clip_336.merged2b_ft_inat21"
SPECIES_ARCH = "eva02_large_patch14_clip_336.merged2b"  # timm registry config, used when a folder lacks config.json
SPECIES_DEV_ARCH = "eva02_tiny_patch14_224"
SPECIES_LICENCE = "cc-by-nc-4.0"
SPECIES_CLASSES = 10_000
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def fetch_from_hub(repo: str, revision: str | None) -> tuple[Path, str]:
    """Download config.json and model.safetensors for ``repo``; return (folder, commit sha)."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi().model_info(repo, revision=revision, timeout=10)
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise SaveError(f"{repo}@{revision or 'main'} does not exist on the Hugging Face Hub: {exc}") from None
    except Exception as exc:  # network, DNS, TLS, proxy or offline mode: all mean "use an offline option"
        raise SaveError(model_store.hub_unreachable_message(repo, exc)) from None
    logger.info("Downloading %s@%s", repo, info.sha)
    try:
        folder = snapshot_download(repo, revision=info.sha, allow_patterns=["config.json", "model.safetensors"])
    except Exception as exc:
        raise SaveError(model_store.hub_unreachable_message(repo, exc)) from None
    return Path(folder), str(info.sha)


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
) -> bentoml.Model:
    """Load a timm hub-format folder strictly and write it into the store."""
    import timm

    try:
        model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        raise SaveError(f"Cannot load a timm model from {folder}: {str(exc).splitlines()[0][:300]}") from None
    num_classes = model.num_classes
    if labels_file is not None:
        names = model_store.read_labels(labels_file, num_classes)
    else:
        names = label_list(model.pretrained_cfg.get("label_names"), num_classes)
        if names is None:
            raise SaveError(
                f"{source} carries no class names for its {num_classes} classes; pass --labels PATH "
                '(JSON object, keys "0".."N-1" in model index order, e.g. inat21_class_index.json).'
            )
    preprocess = PreprocessConfig.model_validate(timm.data.resolve_model_data_config(model))
    arch = model.pretrained_cfg["architecture"]
    labels = {"variant": variant, "task": "species-classification", "framework": "timm"}
    with bentoml.models.create(f"{name}:{version}", labels=labels, module="timm") as entry:
        out = Path(entry.path)
        timm.models.save_for_hf(model, out, model_config={"label_names": names}, safe_serialization=True)
        entry.info.metadata.update(
            {
                "architecture": arch,
                "num_classes": num_classes,
                "preprocess": preprocess.model_dump(mode="json"),
                "source": source,
                "revision": revision,
                "licence": licence,
                "sha256": model_store.sha256_file(out / "model.safetensors"),
                "weights": "model.safetensors",
            }
        )
    logger.info("Registered %s (%s, %s, %d classes)", entry.tag, variant, arch, num_classes)
    return bentoml.models.get(entry.tag)


def save_species(
    *,
    dev: bool = False,
    from_dir: Path | None = None,
    labels: Path | None = None,
    revision: str | None = None,
    arch: str = SPECIES_ARCH,
    force: bool = False,
) -> bentoml.Model:
    """Register the species classifier from the hub, a local folder, or as a dev model."""
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if dev:
            version, variant, source, rev = DEV, DEV, f"timm:{SPECIES_DEV_ARCH} (random init)", "none"
            if (existing := _existing(f"{SPECIES_MODEL_NAME}:{version}", force)) is not None:
                return existing
            import timm

            torch.manual_seed(0)
            tiny = timm.create_model(SPECIES_DEV_ARCH, pretrained=False, num_classes=SPECIES_CLASSES)
            timm.models.save_for_hf(tiny, work, safe_serialization=True)
            folder, licence = work, "dev model: random weights, no licence restrictions"
            if labels is None:
                labels = work / "dev_labels.json"
                labels.write_text(json.dumps({str(i): f"dev class {i:04d}" for i in range(SPECIES_CLASSES)}))
        elif from_dir is not None:
            folder = as_timm_folder(Path(from_dir), arch, work)
            weights = next(folder / f for f in WEIGHT_FILES if (folder / f).exists())
            rev = model_store.sha256_file(weights)
            version, variant, source, licence = f"local-{rev[:12]}", RELEASE, f"local-dir:{from_dir}", SPECIES_LICENCE
            if (existing := _existing(f"{SPECIES_MODEL_NAME}:{version}", force)) is not None:
                return existing
        else:
            if not force:
                # Without --revision any stored release (hub or --from-dir) counts: no network needed.
                pinned = f"{SPECIES_MODEL_NAME}:hf-{revision[:12]}" if revision else None
                existing = model_store.stored(pinned) if pinned else model_store.latest(SPECIES_MODEL_NAME, RELEASE)
                if existing is not None:
                    logger.info("%s is already stored; skipping (use --force or --revision to fetch)", existing.tag)
                    return existing
            folder, rev = fetch_from_hub(SPECIES_REPO, revision)
            version, variant, source, licence = f"hf-{rev[:12]}", RELEASE, f"hf-hub:{SPECIES_REPO}", SPECIES_LICENCE
            if (existing := _existing(f"{SPECIES_MODEL_NAME}:{version}", force)) is not None:
                return existing
        return register_timm_folder(
            folder,
            name=SPECIES_MODEL_NAME,
            version=version,
            variant=variant,
            source=source,
            revision=rev,
            licence=licence,
            labels_file=labels,
        )


def _existing(tag: str, force: bool) -> bentoml.Model | None:
    """The stored model to keep (idempotent saves), after deleting it when ``force``."""
    model = model_store.stored(tag)
    if model is not None and force:
        logger.info("--force: replacing %s", tag)
        bentoml.models.delete(tag)
        return None
    if model is not None:
        logger.info("%s is already stored; skipping (use --force to replace it)", tag)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="model", required=True)
    sp = sub.add_parser("species", help=f"EVA02-L iNat21 classifier ({SPECIES_REPO})")
    source = sp.add_mutually_exclusive_group()
    source.add_argument("--dev", action="store_true", help=f"tiny random {SPECIES_DEV_ARCH}, labelled dev")
    source.add_argument("--from-dir", type=Path, help="local folder with model.safetensors or pytorch_model.bin")
    sp.add_argument("--labels", type=Path, help='JSON of class names, keys "0".."9999" in model index order')
    sp.add_argument("--revision", help="hub revision (commit, branch or tag); default main")
    sp.add_argument("--arch", default=SPECIES_ARCH, help="timm architecture when --from-dir has no config.json")
    sp.add_argument("--force", action="store_true", help="replace an existing entry")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        model = save_species(
            dev=args.dev, from_dir=args.from_dir, labels=args.labels, revision=args.revision, arch=args.arch,
            force=args.force,
        )
    except SaveError as exc:
        logger.error("%s", exc)
        return 2
    sys.stdout.write(f"{model.tag}\n")  # the one line of stdout: the tag, for scripts to capture
    return 0


if __name__ == "__main__":
    sys.exit(main())
