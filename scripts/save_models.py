"""Register the service's models (catalog.py) in the BentoML model store, through :mod:`model_store`.

    python scripts/save_models.py species                    # EVA02-L iNat21 from the Hugging Face Hub
    python scripts/save_models.py species --from-dir ./eva02 # offline import of a local checkpoint
    python scripts/save_models.py species --taxonomy inat21_taxonomy.json --common-names names.json  # with lineage
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

import catalog  # noqa: E402
from model_store.save import SaveOptions, save_group  # noqa: E402
from model_store.store import SaveError  # noqa: E402

logger = logging.getLogger("save_models")


def _source_args(parser: argparse.ArgumentParser, what: str) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--dev", action="store_true", help=f"tiny random-initialised {what}, labelled dev")
    group.add_argument("--from-dir", type=Path, help=f"local folder with the {what} weights (offline import)")
    parser.add_argument("--revision", help="hub revision (commit, branch or tag); default main")
    parser.add_argument("--force", action="store_true", help="replace existing store entries")
    parser.add_argument("--full-size", action="store_true",
                        help="with --dev: random weights in the real architecture (version 'bench', for benchmarks)")


def _taxonomy_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--taxonomy", type=Path, help="kingdom..genus per class, a JSON list in class order "
                                                      "(inat21_taxonomy.json); dev models without it get a dev one")
    parser.add_argument("--common-names", type=Path, help="a common name per class, a JSON list in class order "
                                                          "(inat21_common_names_birder.json)")


def _models(group: str) -> list[catalog.ModelEntry]:
    return [m for m in catalog.MODELS if m.group == group]


def _help(group: str) -> str:
    return "; ".join(m.description for m in _models(group))


def build_parser() -> argparse.ArgumentParser:
    """One subcommand per catalog group (species, aesthetic, zero-shot) and ``all``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="model", required=True)
    for group in catalog.GROUPS:
        models = _models(group)
        kinds = {m.kind for m in models}
        weights = [m for m in models if m.kind != "linear-head"]
        sp = sub.add_parser(group, help=_help(group))
        _source_args(sp, " or ".join(m.name for m in weights))
        if "timm-classifier" in kinds:
            sp.add_argument("--labels", type=Path, help='JSON of class names, keys "0".."N-1" in model index order')
            _taxonomy_args(sp)
            sp.add_argument("--arch", help="timm config used when --from-dir has no config.json (default: the "
                                           "catalog's)")
        if "linear-head" in kinds:
            sp.add_argument("--head", type=Path, help="local head file, e.g. sa_0_4_vit_b_16_linear.pth (default: "
                                                      "models/aesthetic/, else download)")
        if len(weights) > 1:
            sp.add_argument("--model", dest="model_name", choices=[m.name for m in weights],
                            help="only this model (required with --from-dir)")
    al = sub.add_parser("all", help="every model the service uses, from the hub or as dev models")
    al.add_argument("--dev", action="store_true", help="tiny random-initialised models, labelled dev")
    al.add_argument("--labels", type=Path, help="class names for the species classifier")
    _taxonomy_args(al)
    al.add_argument("--head", type=Path, help="local LAION head file")
    al.add_argument("--force", action="store_true", help="replace existing store entries")
    al.add_argument("--full-size", action="store_true",
                    help="with --dev: random weights in the real architectures (version 'bench', for benchmarks)")
    return parser


def save(args: argparse.Namespace) -> dict[str, str]:
    """Run the saves ``args`` ask for; return {setting: tag}."""
    options = SaveOptions(dev=args.dev, from_dir=getattr(args, "from_dir", None),
                          revision=getattr(args, "revision", None), force=args.force, full_size=args.full_size,
                          labels=getattr(args, "labels", None), arch=getattr(args, "arch", None),
                          head=getattr(args, "head", None), taxonomy=getattr(args, "taxonomy", None),
                          common_names=getattr(args, "common_names", None))
    return save_group(args.model, options, only=getattr(args, "model_name", None))


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
