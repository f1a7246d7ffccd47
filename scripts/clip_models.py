"""CLIP models (open_clip) into the BentoML store: hub download, offline import, or tiny dev models.

Every source becomes an open_clip ``local-dir`` folder (open_clip_config.json + weights), is loaded strictly
with ``open_clip.create_model("local-dir:...")`` and stored with the towers the service needs.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import bentoml

from runners._clip import CONFIG_FILE, WEIGHTS_FILE, preprocess_config, tower_state
from runners.zero_shot import VOCAB_FILE
from scripts import hub
from serving import model_store
from serving.model_store import DEV, RELEASE, SaveError
from serving.settings import AESTHETIC_CLIP_NAME, ZERO_SHOT_B32_NAME, ZERO_SHOT_L14_NAME

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class ClipSpec:
    """One CLIP model the service uses: store name, open_clip architecture and pretrained tag."""

    name: str
    arch: str
    tag: str
    licence: str
    towers: tuple[str, ...]

    @property
    def repo(self) -> str:
        import open_clip

        return open_clip.get_pretrained_cfg(self.arch, self.tag)["hf_hub"].rstrip("/")


AESTHETIC_CLIP = ClipSpec(AESTHETIC_CLIP_NAME, "ViT-B-16", "openai", "MIT (OpenAI CLIP)", ("visual",))
ZERO_SHOT_CLIPS = {
    ZERO_SHOT_L14_NAME: ClipSpec(ZERO_SHOT_L14_NAME, "ViT-L-14", "openai", "MIT (OpenAI CLIP)", ("visual", "text")),
    ZERO_SHOT_B32_NAME: ClipSpec(ZERO_SHOT_B32_NAME, "ViT-B-32", "laion2b_s34b_b79k", "MIT (OpenCLIP, LAION-2B)",
                                 ("visual", "text")),
}


def registry_config(spec: ClipSpec, dev: bool = False) -> dict:
    """open_clip_config.json for ``spec`` from open_clip's registry; ``dev`` shrinks it to 2 thin layers per tower."""
    import open_clip

    model_cfg = copy.deepcopy(open_clip.get_model_config(spec.arch))
    pretrained = open_clip.get_pretrained_cfg(spec.arch, spec.tag)
    if pretrained.get("quick_gelu"):
        model_cfg["quick_gelu"] = True
    if dev:  # same family, patch size, input size and embedding width; tiny depth and width
        model_cfg["vision_cfg"].update(layers=2, width=64, head_width=32)
        model_cfg["text_cfg"].update(layers=2, width=64, heads=2)
    preprocess = {k: pretrained[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in pretrained}
    return {"model_cfg": model_cfg, "preprocess_cfg": preprocess}


def as_open_clip_folder(src: Path, spec: ClipSpec, workdir: Path) -> Path:
    """``src`` if it has open_clip_config.json, else a folder linking its weights beside the registry config."""
    if not src.is_dir():
        raise SaveError(f"--from-dir {src} is not a folder; point it at a folder holding {WEIGHT_FILES[0]}.")
    weights = next((src / f for f in WEIGHT_FILES if (src / f).is_file()), None)
    if weights is None:
        raise SaveError(f"{src} holds none of {', '.join(WEIGHT_FILES)}; nothing to import.")
    if (src / CONFIG_FILE).is_file():
        return src
    logger.info("%s has no %s; using open_clip's config for %s/%s", src, CONFIG_FILE, spec.arch, spec.tag)
    (workdir / weights.name).symlink_to(weights.resolve())
    (workdir / CONFIG_FILE).write_text(json.dumps(registry_config(spec)))
    return workdir


def make_dev_folder(spec: ClipSpec, workdir: Path, full_size: bool = False) -> Path:
    """A random-initialised CLIP of the same family as ``spec`` (tiny, or the real size), as an open_clip folder."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    (workdir / CONFIG_FILE).write_text(json.dumps(registry_config(spec, dev=not full_size)))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{workdir}", load_weights=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(workdir / WEIGHTS_FILE))
    return workdir


def register_clip_folder(folder: Path, spec: ClipSpec, *, version: str, variant: str, source: str,
                         revision: str, licence: str) -> bentoml.Model:
    """Load an open_clip folder strictly and store the towers ``spec`` needs."""
    import open_clip
    from safetensors.torch import save_file

    try:
        model = open_clip.create_model(f"local-dir:{folder}")
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        raise SaveError(f"Cannot load an open_clip model from {folder}: {str(exc).splitlines()[0][:300]}") from None
    config = json.loads((folder / CONFIG_FILE).read_text())
    if "text" in spec.towers and config["model_cfg"].get("text_cfg", {}).get("hf_tokenizer_name"):
        raise SaveError(f"{spec.arch} uses a Hugging Face tokenizer; only open_clip's CLIP BPE tokenizer is supported.")
    preprocess = preprocess_config(open_clip.get_model_preprocess_cfg(model))
    labels = {"variant": variant, "task": "clip-" + "+".join(spec.towers), "framework": "open_clip"}
    with bentoml.models.create(f"{spec.name}:{version}", labels=labels, module="open_clip") as entry:
        out = Path(entry.path)
        (out / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        state = tower_state(model.state_dict(), spec.towers)
        save_file({k: v.contiguous() for k, v in state.items()}, str(out / WEIGHTS_FILE))
        if "text" in spec.towers:  # the tokenizer travels with the weights
            from open_clip.tokenizer import default_bpe

            shutil.copyfile(default_bpe(), out / VOCAB_FILE)
        entry.info.metadata.update({
            "architecture": spec.arch,
            "pretrained": spec.tag,
            "towers": list(spec.towers),
            "embed_dim": config["model_cfg"]["embed_dim"],
            "preprocess": preprocess.model_dump(mode="json"),
            "source": source,
            "revision": revision,
            "licence": licence,
            "sha256": model_store.sha256_file(out / WEIGHTS_FILE),
            "weights": WEIGHTS_FILE,
            **({"tokenizer": {"type": "open_clip SimpleTokenizer (CLIP BPE)", "vocab": VOCAB_FILE,
                              "context_length": config["model_cfg"]["text_cfg"]["context_length"]},
                "logit_scale": float(model.logit_scale.exp().item())} if "text" in spec.towers else {}),
        })
    logger.info("Registered %s (%s, %s %s, towers %s)", entry.tag, variant, spec.arch, spec.tag, list(spec.towers))
    return bentoml.models.get(entry.tag)


def save_clip(spec: ClipSpec, *, dev: bool = False, from_dir: Path | None = None, revision: str | None = None,
              force: bool = False, full_size: bool = False) -> bentoml.Model:
    """Register ``spec`` from the hub (default), a local folder, or as a dev model (tiny; ``full_size``: the real
    architecture with random weights, version ``bench``, for speed measurements)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if dev:
            version, variant, rev = "bench" if full_size else DEV, DEV, "none"
            licence = "dev model: random weights, no licence restrictions"
            source = f"open_clip:{spec.arch} ({'full size' if full_size else 'tiny'}, random init)"
            if (kept := hub.existing(f"{spec.name}:{version}", force)) is not None:
                return kept
            folder = make_dev_folder(spec, work, full_size)
        elif from_dir is not None:
            folder = as_open_clip_folder(Path(from_dir), spec, work)
            weights = next(folder / f for f in WEIGHT_FILES if (folder / f).exists())
            rev = model_store.sha256_file(weights)
            version, variant, source, licence = f"local-{rev[:12]}", RELEASE, f"local-dir:{from_dir}", spec.licence
            if (kept := hub.existing(f"{spec.name}:{version}", force)) is not None:
                return kept
        else:
            if (kept := hub.reuse_release(spec.name, revision, force)) is not None:
                return kept
            rev, files = hub.resolve_revision(spec.repo, revision)
            version, variant, source, licence = f"hf-{rev[:12]}", RELEASE, f"hf-hub:{spec.repo}", spec.licence
            if (kept := hub.existing(f"{spec.name}:{version}", force)) is not None:
                return kept
            weights = next((f for f in WEIGHT_FILES[:2] if f in files), None)
            if weights is None:
                raise SaveError(f"{spec.repo}@{rev} has no open_clip weights ({' or '.join(WEIGHT_FILES[:2])}).")
            folder = as_open_clip_folder(hub.download(spec.repo, rev, [weights]), spec, work)
        return register_clip_folder(folder, spec, version=version, variant=variant, source=source,
                                    revision=rev, licence=licence)
