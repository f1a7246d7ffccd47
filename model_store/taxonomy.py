"""The species model's taxonomy, stored with it: kingdom ... genus and an optional common name per class.

The save step reads a taxonomy file (``inat21_taxonomy.json``: a list in class-index order of ``{"id", "name",
"kingdom", "phylum", "class", "order", "family", "genus"}``) and a common-names file (``{"id", "name",
"birder_common_name" or "common_name"}``), checks them against the model's class list (same order and names, the
genus the first word of the species name) and writes ``taxonomy.json`` into the store entry, naming the sources.
A dev model without a taxonomy file gets a dev taxonomy, labelled as such. Readers: :func:`read_stored`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from model_store.store import SaveError

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus")
FILE = "taxonomy.json"
DEV_SOURCE = "dev taxonomy v2 (made up: nested blocks of classes)"  # a stored dev entry with another is saved again


class Taxonomy(BaseModel):
    """Per class, in class-index order: its lineage above the species (``RANKS``) and its common name or None."""

    ranks: tuple[str, ...] = RANKS
    lineages: list[tuple[str, ...]]
    common_names: list[str | None] | None = None
    source: str
    common_names_source: str | None = None
    dev: bool = False


def _items(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SaveError(f"Cannot read {path}: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(i, dict) for i in data):
        raise SaveError(f"{path} must be a JSON list of objects, one per class in class-index order.")
    return data


def _check_order(path: Path, items: list[dict[str, Any]], labels: list[str]) -> None:
    if len(items) != len(labels):
        raise SaveError(f"{path} has {len(items)} classes; the model has {len(labels)}.")
    for i, (item, label) in enumerate(zip(items, labels)):
        if item.get("id", i) != i or item.get("name") != label:
            raise SaveError(f"{path} is not in the model's class order: entry {i} is {item.get('id')!r} "
                            f"{item.get('name')!r}, the model's class {i} is {label!r}.")


def read_taxonomy(path: Path, labels: list[str]) -> list[tuple[str, ...]]:
    """Each class's (kingdom, ..., genus) from ``path``, checked against ``labels``; SaveError names the first
    mismatch (order, a missing rank, a genus that is not the species name's first word)."""
    items = _items(path)
    _check_order(path, items, labels)
    lineages = []
    for i, item in enumerate(items):
        lineage = tuple(item.get(rank) for rank in RANKS)
        if not all(isinstance(v, str) and v.strip() for v in lineage):
            raise SaveError(f"{path}: class {i} ({labels[i]}) lacks a rank of {', '.join(RANKS)}.")
        if labels[i].split()[0] != lineage[-1]:
            raise SaveError(f"{path}: class {i} ({labels[i]}) has genus {lineage[-1]!r}, not the first word of its "
                            "name; the file does not belong to this class list.")
        lineages.append(lineage)
    return lineages


def read_common_names(path: Path, labels: list[str]) -> list[str | None]:
    """Each class's common name (or None) from ``path``, checked against ``labels``."""
    items = _items(path)
    _check_order(path, items, labels)
    names = [item.get("common_name") or item.get("birder_common_name") for item in items]
    return [n.strip() if isinstance(n, str) and n.strip() else None for n in names]


def dev_taxonomy(labels: list[str]) -> list[tuple[str, ...]]:
    """A made-up taxonomy of the same shape for dev models: the classes fall into nested blocks (5 per genus, 20
    per family, 200 per order, ...), so roll-ups have something to sum and every rank holds the one below it
    (dev names' first words, "dev", would put every class in one genus across all families)."""
    return [("Devkingdom", f"Devphylum{i // 5000}", f"Devclass{i // 1000}", f"Devorder{i // 200}",
             f"Devfamily{i // 20}", f"Devgenus{i // 5}") for i in range(len(labels))]


def build(labels: list[str], taxonomy: Path | None, common_names: Path | None, dev: bool) -> Taxonomy | None:
    """The taxonomy to store with a classifier of ``labels``: read from the files, or a dev one for a dev model
    without a taxonomy file; None for a release model without one (its answers then carry no lineage)."""
    if taxonomy is not None:
        lineages, source = read_taxonomy(taxonomy, labels), Path(taxonomy).name
    elif dev:
        lineages, source = dev_taxonomy(labels), DEV_SOURCE
    else:
        return None
    names = read_common_names(common_names, labels) if common_names is not None else None
    return Taxonomy(lineages=lineages, common_names=names, source=source,
                    common_names_source=Path(common_names).name if common_names is not None else None,
                    dev=taxonomy is None)


def write(folder: Path, taxonomy: Taxonomy) -> dict[str, Any]:
    """Write ``taxonomy.json`` into a store folder; what the entry's metadata says of it."""
    (Path(folder) / FILE).write_text(taxonomy.model_dump_json(), encoding="utf-8")
    named = sum(n is not None for n in taxonomy.common_names or [])
    said = {"file": FILE, "ranks": list(taxonomy.ranks), "source": taxonomy.source, "dev": taxonomy.dev,
            "common_names_source": taxonomy.common_names_source, "common_names": named}
    return {k: v for k, v in said.items() if v is not None}  # BentoML's metadata holds no nulls


def read_stored(folder: Path) -> Taxonomy | None:
    """The taxonomy stored with a classifier, or None for an entry saved without one."""
    path = Path(folder) / FILE
    return Taxonomy.model_validate_json(path.read_text(encoding="utf-8")) if path.is_file() else None


class Groups:
    """Sums a classifier's full softmax by each rank of a taxonomy: the best group of every rank, per image."""

    def __init__(self, taxonomy: Taxonomy) -> None:
        import numpy as np

        self.ranks = taxonomy.ranks
        self.names: list[list[str]] = []
        self.index: list[np.ndarray] = []
        for r in range(len(self.ranks)):
            names = list(dict.fromkeys(lineage[r] for lineage in taxonomy.lineages))
            position = {name: i for i, name in enumerate(names)}
            self.names.append(names)
            self.index.append(np.array([position[lineage[r]] for lineage in taxonomy.lineages], np.int64))

    def best(self, probabilities: Any) -> list[list[tuple[str, str, float]]]:
        """float ``(N, C)`` softmax -> per image, deepest rank first (genus ... kingdom): (rank, the group with
        the most probability, that probability summed over all its classes)."""
        import numpy as np

        out = []
        for row in np.asarray(probabilities, np.float64):
            found = []
            for r in reversed(range(len(self.ranks))):
                sums = np.bincount(self.index[r], weights=row, minlength=len(self.names[r]))
                i = int(sums.argmax())
                found.append((self.ranks[r], self.names[r][i], float(min(1.0, sums[i]))))
            out.append(found)
        return out
