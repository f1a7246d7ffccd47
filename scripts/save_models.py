"""Register the service's models in the BentoML model store.

    python scripts/save_models.py species                    # EVA02-L iNat21 from the Hugging Face Hub
    python scripts/save_models.py species --from-dir ./eva02 # offline import of a local checkpoint
    python scripts/save_models.py aesthetic --head sa_0_4_vit_b_16_linear.pth
    python scripts/save_models.py zero-shot                  # CLIP ViT-L/14 and OpenCLIP ViT-B/32
    python scripts/save_models.py all --dev --labels inat21_class_index.json   # every model, tiny dev versions
    python scripts/save_models.py all --dev                  # the same offline: dev class names, a dev head

Saving is idempotent: what is already stored is kept unless --force. Standard output gets one
``SETTING=tag`` line per model (the environment variables the service reads), for scripts to use;
progress and errors go to standard error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.aesthetic_head import save_head  # noqa: E402
from scripts.clip_models import AESTHETIC_CLIP, ZERO_SHOT_CLIPS, save_clip  # noqa: E402
from scripts.species_model import SPECIES_ARCH, SPECIES_REPO, save_species  # noqa: E402
from serving.model_store import SaveError  # noqa: E402
from serving.settings import ZERO_SHOT_B32_LAION2B_NAME, ZERO_SHOT_B32_NAME, ZERO_SHOT_L14_NAME  # noqa: E402

ZERO_SHOT_SETTINGS = {ZERO_SHOT_L14_NAME: "ZERO_SHOT_L14_MODEL", ZERO_SHOT_B32_NAME: "ZERO_SHOT_B32_MODEL",
                      ZERO_SHOT_B32_LAION2B_NAME: "ZERO_SHOT_B32_LAION2B_MODEL"}

logger = logging.getLogger("save_models")


def _source_args(parser: argparse.ArgumentParser, what: str) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--dev", action="store_true", help=f"tiny random-initialised {what}, labelled dev")
    group.add_argument("--from-dir", type=Path, help=f"local folder with the {what} weights (offline import)")
    parser.add_argument("--revision", help="hub revision (commit, branch or tag); default main")
    parser.add_argument("--force", action="store_true", help="replace existing store entries")
    parser.add_argument("--full-size", action="store_true",
                        help="with --dev: random weights in the real architecture (version 'bench', for benchmarks)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="model", required=True)
    sp = sub.add_parser("species", help=f"EVA02-L iNat21 classifier ({SPECIES_REPO})")
    _source_args(sp, "EVA02 classifier")
    sp.add_argument("--labels", type=Path, help='JSON of class names, keys "0".."9999" in model index order')
    sp.add_argument("--arch", default=SPECIES_ARCH, help="timm config used when --from-dir has no config.json")
    ae = sub.add_parser("aesthetic", help="CLIP ViT-B/16 image tower + LAION aesthetic head")
    _source_args(ae, "CLIP ViT-B/16")
    ae.add_argument("--head", type=Path, help="local sa_0_4_vit_b_16_linear.pth (default: models/aesthetic/, else download)")
    zs = sub.add_parser("zero-shot", help="CLIP ViT-L/14 (OpenAI), OpenCLIP XLM-R ViT-B/32 (multilingual) and "
                                             "ViT-B/32 (LAION-2B), both towers")
    _source_args(zs, "CLIP model")
    zs.add_argument("--model", dest="model_name", choices=list(ZERO_SHOT_CLIPS),
                    help="only this model (required with --from-dir)")
    al = sub.add_parser("all", help="every model the service uses, from the hub or as dev models")
    al.add_argument("--dev", action="store_true", help="tiny random-initialised models, labelled dev")
    al.add_argument("--labels", type=Path, help="class names for the species classifier")
    al.add_argument("--head", type=Path, help="local LAION head file")
    al.add_argument("--force", action="store_true", help="replace existing store entries")
    al.add_argument("--full-size", action="store_true",
                    help="with --dev: random weights in the real architectures (version 'bench', for benchmarks)")
    return parser


def save(args: argparse.Namespace) -> dict[str, str]:
    """Run the saves ``args`` ask for; return {setting: tag}."""
    tags: dict[str, str] = {}
    from_dir, revision = getattr(args, "from_dir", None), getattr(args, "revision", None)
    if args.full_size and not args.dev:
        raise SaveError("--full-size only goes with --dev: it registers random weights for speed measurements.")
    if args.model in ("species", "all"):
        model = save_species(dev=args.dev, from_dir=from_dir, labels=args.labels, revision=revision,
                             arch=getattr(args, "arch", SPECIES_ARCH), force=args.force,
                             full_size=args.full_size)
        tags["SPECIES_MODEL"] = str(model.tag)
    if args.model in ("aesthetic", "all"):
        clip = save_clip(AESTHETIC_CLIP, dev=args.dev, from_dir=from_dir, revision=revision, force=args.force,
                         full_size=args.full_size)
        tags["AESTHETIC_CLIP_MODEL"] = str(clip.tag)
        tags["AESTHETIC_HEAD_MODEL"] = str(save_head(args.head, force=args.force, dev=args.dev).tag)
    if args.model in ("zero-shot", "all"):
        chosen = getattr(args, "model_name", None)
        if from_dir is not None and chosen is None:
            raise SaveError(f"--from-dir imports one model: add --model with one of {', '.join(ZERO_SHOT_CLIPS)}.")
        for name, spec in ZERO_SHOT_CLIPS.items():
            if chosen in (None, name):
                model = save_clip(spec, dev=args.dev, from_dir=from_dir, revision=revision, force=args.force,
                                  full_size=args.full_size)
                tags[ZERO_SHOT_SETTINGS[name]] = str(model.tag)
    return tags


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        tags = save(args)
    except SaveError as exc:
        logger.error("%s", exc)
        return 2
    sys.stdout.write("".join(f"{key}={tag}\n" for key, tag in tags.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
