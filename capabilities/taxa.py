"""Species answers a person can trust: lineage and common names, the roll-up, a status, and the organism gate.

Pure logic over a runner's :class:`runners.TopK` (top classes and, with a stored taxonomy, the best group of each
rank summed over the full softmax) and the stored taxonomy (:mod:`model_store.taxonomy`); the species capability
(:mod:`capabilities.species`) and bulk scoring shape their answers with it. Thresholds are settings
(``SPECIES_*``, README "Species answers").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from capabilities.zero_shot.requests import probabilities
from model_store.taxonomy import Taxonomy
from serving.schemas import Gate, Prediction, Rollup

IDENTIFIED, UNCERTAIN, NOT_ORGANISM = "identified", "uncertain", "not_organism"
# The organism gate's prompts (CLIP zero-shot, as written: no template), after danactive/history's BioCLIP gate.
ORGANISM_PROMPTS = ("a photo of an animal.", "a photo of a bird.", "a photo of an insect.", "a photo of a fish.",
                    "a photo of a plant.", "a photo of a flower.", "a photo of a tree.", "a photo of a mushroom.")
OTHER_PROMPTS = ("a photo of a person.", "a photo of people.", "a photo of a building.", "a photo of a vehicle.",
                 "a photo of food.", "a photo of a landscape without animals or plants.", "a screenshot.",
                 "a photo of a document.")
GATE_PROMPTS = ORGANISM_PROMPTS + OTHER_PROMPTS


@dataclass(frozen=True)
class Thresholds:
    rollup_min: float
    identified_min: float
    identified_margin: float
    gate_min: float

    @classmethod
    def from_settings(cls, settings: Any) -> "Thresholds":
        return cls(settings.species_rollup_min, settings.species_identified_min, settings.species_identified_margin,
                   settings.species_gate_min)


def gate(image_embedding: np.ndarray, prompt_embeddings: np.ndarray, logit_scale: float) -> Gate:
    """The gate's probabilities: CLIP's softmax over GATE_PROMPTS, summed per side."""
    probs = probabilities(np.asarray(image_embedding)[None], prompt_embeddings, logit_scale)[0]
    organism = float(probs[: len(ORGANISM_PROMPTS)].sum())
    return Gate(organism=min(1.0, organism), not_organism=min(1.0, max(0.0, 1.0 - organism)))


def lineage(taxonomy: Taxonomy | None, index: int, species: str) -> list[str] | None:
    """kingdom ... genus, species of class ``index``; None without a taxonomy."""
    if taxonomy is None or index < 0:
        return None
    return [*taxonomy.lineages[index], species]


def common_name(taxonomy: Taxonomy | None, index: int) -> str | None:
    if taxonomy is None or taxonomy.common_names is None or index < 0:
        return None
    return taxonomy.common_names[index]


def predictions(top: Any, k: int, taxonomy: Taxonomy | None) -> list[Prediction]:
    """The first ``k`` species of a TopK with their names and lineage."""
    return [Prediction(species=s, label=s, score=p, common_name=common_name(taxonomy, i),
                       lineage=lineage(taxonomy, i, s))
            for s, p, i in zip(top.labels[:k], top.scores[:k], top.indices[:k] or [-1] * k)]


def rollup(top: Any, taxonomy: Taxonomy | None, minimum: float) -> Rollup | None:
    """The deepest rank, from the species up to the kingdom, whose best taxon has at least ``minimum`` of the
    probability (summed over all its species); None without a taxonomy or when even the kingdom has less."""
    if taxonomy is None or not top.ranks or not top.indices:
        return None
    first = top.indices[0]
    if top.scores[0] >= minimum:
        return Rollup(rank="species", name=top.labels[0], score=top.scores[0],
                      lineage=[*taxonomy.lineages[first], top.labels[0]])
    for best in top.ranks:  # genus ... kingdom
        if best.score >= minimum:
            depth = taxonomy.ranks.index(best.rank)
            above = _lineage_of(taxonomy, depth, best.name)
            return Rollup(rank=best.rank, name=best.name, score=best.score, lineage=above)
    return None


def _lineage_of(taxonomy: Taxonomy, depth: int, name: str) -> list[str]:
    """kingdom ... the taxon ``name`` at rank index ``depth`` (from the first class that has it)."""
    for path in taxonomy.lineages:
        if path[depth] == name:
            return list(path[: depth + 1])
    return [name]


def status(scores: Sequence[float], checked_gate: Gate | None, limits: Thresholds) -> str:
    """not_organism when the gate gives the other prompts at least ``gate_min``; identified when the top species
    has at least ``identified_min`` and leads the second by ``identified_margin``; else uncertain."""
    if checked_gate is not None and checked_gate.not_organism >= limits.gate_min:
        return NOT_ORGANISM
    second = scores[1] if len(scores) > 1 else 0.0
    if scores and scores[0] >= limits.identified_min and scores[0] - second >= limits.identified_margin:
        return IDENTIFIED
    return UNCERTAIN


def match_strength(position: int, score: float, answer_status: str, possible_min: float) -> str:
    """danactive/history's matchStrength: strong for the first of an identified answer, possible at
    ``possible_min`` or more, else weak."""
    if position == 0 and answer_status == IDENTIFIED:
        return "strong"
    return "possible" if score >= possible_min else "weak"
