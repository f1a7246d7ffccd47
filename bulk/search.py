"""``python -m bulk.search OUT "a query" --model b32``: search a collection scored by ``python -m bulk --embedding``.

The query is embedded by a running service (``POST /embed/text``, the same model as the Parquet column) and the
rows are ranked by dot product with their image embeddings (both L2-normalised: the cosine similarity). No
database: the Parquet parts are read whole, which suits collections up to a few million rows on one machine.
Prints one JSON line per hit, best first: ``{"rank", "path", "similarity"}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import numpy as np

import catalog
from bulk.stages import embedding_column

logger = logging.getLogger("bulk.search")


def load_embeddings(out: str, column: str) -> tuple[list[str], np.ndarray]:
    """(paths, float32 ``(N, D)`` embeddings) of the rows of a bulk output folder that have ``column``."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    dataset = ds.dataset(out, format="parquet")
    if column not in dataset.schema.names:
        found = [n for n in dataset.schema.names if n.startswith("embedding_")]
        raise ValueError(f"{out} has no column {column}; it has {found or 'no embeddings'} (score it with "
                         f"python -m bulk SOURCE --out {out} --embedding MODEL).")
    table = dataset.to_table(columns=["path", column])
    table = table.filter(pc.is_valid(table[column]))  # rows whose image failed to decode have none
    vectors = np.asarray(table[column].combine_chunks().flatten(), np.float32)
    return table["path"].to_pylist(), vectors.reshape(table.num_rows, -1)


def rank(vectors: np.ndarray, query: np.ndarray, top: int) -> list[tuple[int, float]]:
    """The ``top`` rows most similar to ``query`` (row index, dot product), best first; ties keep row order."""
    scores = vectors @ np.asarray(query, np.float32)
    order = np.argsort(-scores, kind="stable")[:top]
    return [(int(i), float(scores[i])) for i in order]


def main(argv: list[str] | None = None) -> int:
    from capabilities.embedding import tower_name
    from serving.errors import ServiceError
    from vision_client import ServiceError as ClientError
    from vision_client import VisionClient

    parser = argparse.ArgumentParser(prog="python -m bulk.search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="a python -m bulk --out folder with an embedding column")
    parser.add_argument("query", help="what to look for, in words (any language with b32, the multilingual model)")
    parser.add_argument("--model", default="b32", help="the embedding model: " + ", ".join(
        f"{m.alias} ({m.name})" for m in catalog.embedding_models()))
    parser.add_argument("--url", default="http://localhost:3000", help="the running service (default %(default)s)")
    parser.add_argument("--top", type=int, default=10, help="hits to print (default %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        name = tower_name(args.model)
        paths, vectors = load_embeddings(args.out, embedding_column(catalog.entry(name).alias or name))
        with VisionClient(args.url) as client:
            answer = client.embed_texts([args.query], model=name)
    except (ServiceError, ClientError) as err:
        logger.error("%s", getattr(err, "detail", err))
        return 2
    except (ValueError, OSError) as err:
        logger.error("%s", err)
        return 2
    if answer.truncated[0]:
        logger.warning("The query is longer than the model's %d-token context; only its start was used.",
                       answer.context_length)
    for n, (row, similarity) in enumerate(rank(vectors, np.asarray(answer.embeddings[0]), max(args.top, 0)), 1):
        sys.stdout.write(json.dumps({"rank": n, "path": paths[row], "similarity": round(similarity, 6)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
