"""Species answers without a model: the taxonomy check, roll-up sums, thresholds, the organism gate through fake
runners, and danactive's organism shape."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from capabilities import taxa
from model_store.store import SaveError
from model_store.taxonomy import RANKS, Groups, Taxonomy, build, dev_taxonomy, read_common_names, read_taxonomy
from tests.conftest import encode, photo
from tests.unit.test_gateway import make_ctx

LABELS = ["Cardinalis cardinalis", "Cardinalis sinuatus", "Pyrrhuloxia x", "Turdus migratorius", "Turdus merula",
          "Quercus alba"]
PATHS = [("Animalia", "Chordata", "Aves", "Passeriformes", "Cardinalidae", "Cardinalis"),
         ("Animalia", "Chordata", "Aves", "Passeriformes", "Cardinalidae", "Cardinalis"),
         ("Animalia", "Chordata", "Aves", "Passeriformes", "Cardinalidae", "Pyrrhuloxia"),
         ("Animalia", "Chordata", "Aves", "Passeriformes", "Turdidae", "Turdus"),
         ("Animalia", "Chordata", "Aves", "Passeriformes", "Turdidae", "Turdus"),
         ("Plantae", "Tracheophyta", "Magnoliopsida", "Fagales", "Fagaceae", "Quercus")]
TAXONOMY = Taxonomy(lineages=PATHS, common_names=["Northern Cardinal", None, None, "American Robin", None, None],
                    source="test")
LIMITS = taxa.Thresholds(rollup_min=0.8, identified_min=0.5, identified_margin=0.2, gate_min=0.6)


def top_of(probs: list[float]) -> SimpleNamespace:
    """What the species runner answers for these full-softmax probabilities."""
    import engines

    p = np.array([probs], np.float32)
    scores, indices = engines.top_k(p, 10)
    ranks = [SimpleNamespace(rank=r, name=n, score=s) for r, n, s in Groups(TAXONOMY).best(p)[0]]
    return SimpleNamespace(labels=[LABELS[i] for i in indices[0]], scores=scores[0].tolist(),
                           indices=indices[0].tolist(), ranks=ranks)


def test_a_genus_wins_when_its_species_split_the_mass() -> None:
    top = top_of([0.45, 0.40, 0.05, 0.05, 0.03, 0.02])
    rolled = taxa.rollup(top, TAXONOMY, 0.8)
    assert (rolled.rank, rolled.name, round(rolled.score, 6)) == ("genus", "Cardinalis", 0.85)
    assert rolled.lineage == list(PATHS[0])
    assert taxa.status(top.scores, None, LIMITS) == "uncertain"  # 0.45 is not sure, nor clear of 0.40


def test_a_family_wins_when_its_genera_split_the_mass_and_the_kingdom_when_nothing_else_does() -> None:
    family = taxa.rollup(top_of([0.40, 0.0, 0.42, 0.1, 0.05, 0.03]), TAXONOMY, 0.8)
    assert (family.rank, family.name) == ("family", "Cardinalidae") and family.score == pytest.approx(0.82)
    spread = taxa.rollup(top_of([0.2, 0.2, 0.2, 0.2, 0.15, 0.05]), TAXONOMY, 0.8)
    assert (spread.rank, spread.name, spread.lineage) == ("order", "Passeriformes", list(PATHS[0][:4]))
    assert taxa.rollup(top_of([0.2, 0.1, 0.1, 0.1, 0.1, 0.4]), TAXONOMY, 0.8) is None  # not even a kingdom


def test_a_sure_species_rolls_up_to_itself_and_is_identified() -> None:
    top = top_of([0.02, 0.9, 0.02, 0.02, 0.02, 0.02])
    rolled = taxa.rollup(top, TAXONOMY, 0.8)
    assert (rolled.rank, rolled.name) == ("species", "Cardinalis sinuatus")
    assert rolled.lineage == [*PATHS[1], "Cardinalis sinuatus"]
    assert taxa.status(top.scores, None, LIMITS) == "identified"
    close = top_of([0.55, 0.40, 0.02, 0.01, 0.01, 0.01])  # sure enough, but too close to the second
    assert taxa.status(close.scores, None, LIMITS) == "uncertain"


def test_the_gate_overrides_the_species_when_it_says_not_an_organism() -> None:
    sure = top_of([0.02, 0.9, 0.02, 0.02, 0.02, 0.02]).scores
    assert taxa.status(sure, taxa.Gate(organism=0.3, not_organism=0.7), LIMITS) == "not_organism"
    assert taxa.status(sure, taxa.Gate(organism=0.5, not_organism=0.5), LIMITS) == "identified"


def test_predictions_carry_lineage_ending_in_the_species_and_common_names() -> None:
    found = taxa.predictions(top_of([0.1, 0.1, 0.1, 0.6, 0.05, 0.05]), 2, TAXONOMY)
    assert [p.species for p in found] == ["Turdus migratorius", "Cardinalis cardinalis"]
    assert found[0].lineage == [*PATHS[3], "Turdus migratorius"] and found[0].common_name == "American Robin"
    assert found[0].rank == "species" and found[1].common_name == "Northern Cardinal"
    assert taxa.predictions(top_of([0.1, 0.1, 0.1, 0.6, 0.05, 0.05]), 1, None)[0].lineage is None


def test_match_strength_follows_danactive() -> None:
    assert taxa.match_strength(0, 0.9, "identified", 0.1) == "strong"
    assert taxa.match_strength(0, 0.9, "uncertain", 0.1) == "possible"
    assert taxa.match_strength(1, 0.05, "identified", 0.1) == "weak"


def _write(tmp_path: Path, items: list[dict]) -> Path:
    path = tmp_path / "taxonomy.json"
    path.write_text(json.dumps(items))
    return path


def test_the_taxonomy_check_refuses_a_misordered_or_foreign_file(tmp_path: Path) -> None:
    items = [{"id": i, "name": n, **dict(zip(RANKS, p))} for i, (n, p) in enumerate(zip(LABELS, PATHS))]
    assert read_taxonomy(_write(tmp_path, items), LABELS) == PATHS
    with pytest.raises(SaveError, match="not in the model's class order: entry 0"):
        read_taxonomy(_write(tmp_path, items[1:2] + items[:1] + items[2:]), LABELS)
    with pytest.raises(SaveError, match="has 5 classes; the model has 6"):
        read_taxonomy(_write(tmp_path, items[:5]), LABELS)
    wrong = [dict(item) for item in items]
    wrong[3]["genus"] = "Merula"
    with pytest.raises(SaveError, match="class 3 .* has genus 'Merula', not the first word"):
        read_taxonomy(_write(tmp_path, wrong), LABELS)
    del wrong[3]["family"]
    with pytest.raises(SaveError, match="lacks a rank"):
        read_taxonomy(_write(tmp_path, wrong), LABELS)


def test_common_names_are_read_in_class_order_and_blank_ones_are_none(tmp_path: Path) -> None:
    items = [{"id": i, "name": n, "birder_common_name": c} for i, (n, c) in
             enumerate(zip(LABELS, ["Northern Cardinal", "", None, "American Robin", " ", "White Oak"]))]
    path = tmp_path / "names.json"
    path.write_text(json.dumps(items))
    assert read_common_names(path, LABELS) == ["Northern Cardinal", None, None, "American Robin", None, "White Oak"]
    built = build(LABELS, None, path, dev=True)
    assert built.dev and built.common_names_source == "names.json" and built.lineages == dev_taxonomy(LABELS)
    assert build(LABELS, None, None, dev=False) is None  # a release model without a file gets none


def test_a_dev_taxonomy_nests_every_rank_in_the_one_above() -> None:
    labels = [f"dev class {i:04d}" for i in range(10_000)]
    dev = dev_taxonomy(labels)
    assert dev[21][4:] == ("Devfamily1", "Devgenus4") and dev[9999][:4] == (
        "Devkingdom", "Devphylum1", "Devclass9", "Devorder49")
    groups = Groups(Taxonomy(lineages=dev, source="dev", dev=True)).names
    assert len(groups[4]) == 500 and len(groups[5]) == 2000  # families of 20, genera of 5
    for depth in range(1, len(dev[0])):  # each taxon has one parent
        parents = {}
        for lineage in dev:
            assert parents.setdefault(lineage[depth], lineage[depth - 1]) == lineage[depth - 1]


def test_the_gate_on_dev_models_through_fake_runners_says_not_organism(species_dev_model, aesthetic_models,
                                                                        zero_shot_models) -> None:
    """The gateway's /classify with a fake species runner and a fake aesthetic tower whose image embedding is the
    'building' prompt's: the gate answers not_organism whatever the species scores, and the prompts are asked
    once per worker."""
    from runners import TopK
    from service import Gateway

    building = taxa.GATE_PROMPTS.index("a photo of a building.")

    class FakeTower:
        def __init__(self) -> None:
            self.prompt_calls = 0
            self.to_async = SimpleNamespace(embed_images=self.embed_images, class_embeddings=self.class_embeddings)

        async def embed_images(self, images):
            return np.eye(len(taxa.GATE_PROMPTS), dtype=np.float32)[[building] * len(images)]

        async def class_embeddings(self, classes, templates):
            self.prompt_calls += 1
            assert classes == list(taxa.GATE_PROMPTS) and templates == ["{}"]
            return np.eye(len(classes), dtype=np.float32)

    class FakeSpecies:
        def __init__(self) -> None:
            self.to_async = SimpleNamespace(predict=self.predict)

        async def predict(self, images):
            return [TopK(labels=["a", "b"], scores=[0.95, 0.01], indices=[0, 1]) for _ in images]

    gw = Gateway.inner()
    gw.species, gw.aesthetic = FakeSpecies(), (tower := FakeTower())
    first = asyncio.run(gw.classify(encode(photo("coffee")), ctx=make_ctx()))
    second = asyncio.run(gw.classify(encode(photo("chelsea")), ctx=make_ctx()))
    assert first.status == second.status == "not_organism" and tower.prompt_calls == 1
    assert first.gate.not_organism > 0.99 and first.gate.organism < 0.01
    gw.aesthetic.to_async.embed_images = _failing  # a failing gate leaves the species answer standing
    alone = asyncio.run(gw.classify(encode(photo("coffee")), ctx=make_ctx()))
    assert alone.gate is None and alone.status == "identified"


async def _failing(images):
    raise RuntimeError("the tower is away")
