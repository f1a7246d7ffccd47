"""``python -m bulk SOURCE --out DIR [--species] [--aesthetic] [--report] [--embedding l14,b32]``: score photos.

SOURCE is a folder (searched recursively for images), a list file (one path or URI per line) or a .parquet/.csv
file with a column of paths; local paths or URIs of any filesystem pyarrow or fsspec knows (s3://, gs://, ...).
The output is a folder of Parquet parts, one row per input; see the README, "Bulk scoring".
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import catalog
from bulk.inputs import IMAGE_EXTENSIONS, InputError
from serving.errors import ServiceError

logger = logging.getLogger("bulk")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bulk", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="folder, list file, or .parquet/.csv of paths (local path or URI)")
    parser.add_argument("--out", required=True, help="output folder of Parquet parts (local path or URI)")
    tasks = parser.add_argument_group("tasks (at least one)")
    tasks.add_argument("--species", action="store_true", help="top-k iNat21 species (EVA02-L/14@336)")
    tasks.add_argument("--aesthetic", action="store_true", help="LAION aesthetic score, clamped and raw")
    tasks.add_argument("--report", action="store_true",
                       help="the photo report of POST /scores: sharpness, exposure, resolution, composition, "
                            "overall score and notes (brings --aesthetic)")
    tasks.add_argument("--embedding", default="", metavar="MODELS",
                       help="comma-separated CLIP towers: " + ", ".join(f"{m.alias} ({m.name})"
                                                                         for m in catalog.embedding_models()))
    tasks.add_argument("--top-k", type=int, default=3, help="species per image, 1-10 (default 3)")
    inputs = parser.add_argument_group("inputs and output")
    inputs.add_argument("--column", default="path", help="the column of paths in a .parquet/.csv SOURCE")
    inputs.add_argument("--extensions", default=",".join(IMAGE_EXTENSIONS), help="file types taken from a folder")
    inputs.add_argument("--resume", action="store_true", help="continue a run: skip inputs already in --out")
    inputs.add_argument("--part-rows", type=int, default=1000, help="rows per Parquet part (what a kill can lose)")
    ray_group = parser.add_argument_group("Ray")
    ray_group.add_argument("--ray-address", help="join this Ray cluster (e.g. ray://head:10001 or auto); "
                                                 "by default a local Ray starts and stops with the command")
    ray_group.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    ray_group.add_argument("--actors", type=int, help="actors per model (default: one per GPU share, or 1)")
    ray_group.add_argument("--gpus-per-actor", type=float, help="GPU share of each model actor")
    ray_group.add_argument("--cpus-per-actor", type=float, help="CPUs reserved by each model actor")
    ray_group.add_argument("--decode-batch", type=int, default=16, help="images per decoding task batch")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", action="store_true", help="also log Ray Data's per-stage statistics")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from capabilities.embedding import tower_name

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    args = parse_args(argv)
    if args.verbose:
        logging.getLogger("bulk").setLevel(logging.DEBUG)
    try:
        embeddings = list(dict.fromkeys(tower_name(m) for m in args.embedding.split(",") if m.strip()))
    except ServiceError as err:
        logger.error("--embedding: %s", err.detail.replace("model=", ""))
        return 2
    if not (args.species or args.aesthetic or args.report or embeddings):
        logger.error("Choose at least one task: --species, --aesthetic, --report, --embedding MODELS.")
        return 2
    if not 1 <= args.top_k <= 10 or args.part_rows < 1 or args.decode_batch < 1:
        logger.error("--top-k must be 1-10, --part-rows and --decode-batch at least 1.")
        return 2
    from bulk.run import run

    try:
        summary = run(args.source, args.out, species=args.species, aesthetic=args.aesthetic, embeddings=embeddings,
                      top_k=args.top_k, report=args.report, column=args.column,
                      extensions=tuple(args.extensions.split(",")),
                      resume=args.resume, part_rows=args.part_rows, decode_batch_size=args.decode_batch,
                      ray_address=args.ray_address, num_cpus=args.num_cpus, actors=args.actors,
                      gpus_per_actor=args.gpus_per_actor, cpus_per_actor=args.cpus_per_actor,
                      progress=not args.no_progress)
    except (InputError, RuntimeError) as exc:
        logger.error("%s", exc)
        return 2
    errors = ", ".join(f"{n} {code}" for code, n in sorted(summary["errors"].items())) or "none"
    logger.info("Done: %d inputs, %d already written, %d scored (%d ok; errors: %s) in %.1f s, %s images/s; "
                "%d parts in %s", summary["inputs"], summary["already_done"], summary["processed"], summary["ok"],
                errors, summary["seconds"], summary["images_per_s"], summary["parts"], args.out)
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
