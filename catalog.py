"""The model catalog: every model the service runs, named once.

Everything else is derived from these entries: the settings that pick each store tag and batch size
(:mod:`serving.settings`), the runner services (:mod:`runners`), the gateway's dependencies and gates
(``service.py``), the zero-shot and embedding model lists (:mod:`capabilities`), the save step
(``scripts/save_models.py``, :mod:`model_store`), the bulk command's choices (:mod:`bulk`) and each runner's GPU
share. Adding a CLIP model is one :class:`ModelEntry` in ``MODELS`` (plus its tests), as a model is one entry in
open_clip's ``pretrained.py``.

This module is plain data: it imports nothing heavy, so any process may read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["timm-classifier", "clip", "linear-head"]
Group = Literal["species", "aesthetic", "zero-shot"]


@dataclass(frozen=True)
class Batching:
    """A runner's adaptive batching: read from ``<PREFIX>_MAX_BATCH_SIZE`` and ``<PREFIX>_MAX_LATENCY_MS``."""

    prefix: str
    max_batch_size: int
    max_latency_ms: int = 10_000


@dataclass(frozen=True)
class SaveSpec:
    """Where the save step gets the weights: a timm hub repo, or an open_clip architecture and pretrained tag."""

    arch: str  # timm registry config, or open_clip architecture
    licence: str
    repo: str | None = None  # hub repo (timm); open_clip's is looked up from (arch, pretrained)
    pretrained: str | None = None  # open_clip pretrained tag
    dev_arch: str | None = None  # a tiny architecture of the same family for dev models (timm)
    hf_text: str | None = None  # hub repo of a Hugging Face text tower: its config and tokenizer are stored too
    num_classes: int | None = None


@dataclass(frozen=True)
class ModelEntry:
    """One served model.

    ``name`` is its public name (API model id, store name); ``setting`` the environment variable holding its store
    tag; ``runner`` the BentoML service that runs it (None for a head, which runs inside its tower's runner) and
    ``key`` that runner's attribute on the gateway, its gate and its log name.
    """

    name: str
    kind: Kind
    group: Group  # the save step's subcommand
    setting: str
    save: SaveSpec
    description: str
    runner: str | None = None
    key: str | None = None
    towers: tuple[str, ...] = ()
    batching: Batching | None = None
    alias: str | None = None  # short embedding name (bulk --embedding, /embed?model=); None: no embedding route
    head: str | None = None  # a linear-head entry run on this tower's embeddings
    zero_shot: bool = False  # listed as a zero-shot model (needs the text tower)

    @property
    def save_hint(self) -> str:
        """How to register this model, for errors that find it missing."""
        return f"python scripts/save_models.py {self.group}   (or --dev for tiny test models)"


SPECIES_BATCHING = Batching("SPECIES", 32)
AESTHETIC_BATCHING = Batching("AESTHETIC", 64)
ZERO_SHOT_BATCHING = Batching("ZERO_SHOT", 64)  # images (or prompts) per forward pass
OPENAI_LICENCE = "MIT (OpenAI CLIP)"

MODELS: tuple[ModelEntry, ...] = (
    ModelEntry(
        "eva02-inat21", "timm-classifier", "species", "SPECIES_MODEL",
        SaveSpec("eva02_large_patch14_clip_336.merged2b", "cc-by-nc-4.0",
                 repo="timm/eva02_large_patch14_clip_336.merged2b_ft_inat21", dev_arch="eva02_tiny_patch14_224",
                 num_classes=10_000),
        "EVA02-Large/14 @ 336 fine-tuned on iNaturalist 2021 (10,000 species)",
        runner="SpeciesRunner", key="species", batching=SPECIES_BATCHING),
    ModelEntry(
        "clip-vit-b16-openai", "clip", "aesthetic", "AESTHETIC_CLIP_MODEL",
        SaveSpec("ViT-B-16", OPENAI_LICENCE, pretrained="openai"),
        "OpenAI CLIP ViT-B/16 (the aesthetic score's image tower; its text tower for text embeddings)",
        runner="AestheticRunner", key="aesthetic", towers=("visual", "text"), batching=AESTHETIC_BATCHING, alias="b16",
        head="laion-aesthetic-vit-b16"),
    ModelEntry(
        "laion-aesthetic-vit-b16", "linear-head", "aesthetic", "AESTHETIC_HEAD_MODEL",
        SaveSpec("Linear(512, 1)", "MIT (LAION-AI/aesthetic-predictor)"),
        "LAION aesthetic predictor head for CLIP ViT-B/16 (sa_0_4_vit_b_16_linear.pth)"),
    ModelEntry(
        "clip-vit-large-patch14", "clip", "zero-shot", "ZERO_SHOT_L14_MODEL",
        SaveSpec("ViT-L-14", OPENAI_LICENCE, pretrained="openai"),
        "OpenAI CLIP ViT-L/14",
        runner="ClipL14Runner", key="zero_shot_l14", towers=("visual", "text"), batching=ZERO_SHOT_BATCHING,
        alias="l14", zero_shot=True),
    ModelEntry(
        "open-clip-vit-b32", "clip", "zero-shot", "ZERO_SHOT_B32_MODEL",
        SaveSpec("xlm-roberta-base-ViT-B-32", "MIT (OpenCLIP, LAION-5B; XLM-RoBERTa base: MIT)",
                 pretrained="laion5b_s13b_b90k", hf_text="FacebookAI/xlm-roberta-base"),
        "multilingual OpenCLIP ViT-B/32 with an XLM-RoBERTa text tower (LAION-5B), as in vitrivr's FES",
        runner="OpenClipB32Runner", key="zero_shot_b32", towers=("visual", "text"), batching=ZERO_SHOT_BATCHING,
        alias="b32", zero_shot=True),
    ModelEntry(
        "open-clip-vit-b32-laion2b", "clip", "zero-shot", "ZERO_SHOT_B32_LAION2B_MODEL",
        SaveSpec("ViT-B-32", "MIT (OpenCLIP, LAION-2B)", pretrained="laion2b_s34b_b79k"),
        "English OpenCLIP ViT-B/32 (LAION-2B)",
        runner="OpenClipB32Laion2bRunner", key="zero_shot_b32_laion2b", towers=("visual", "text"),
        batching=ZERO_SHOT_BATCHING, alias="b32-laion2b", zero_shot=True),
)

GROUPS: tuple[Group, ...] = ("species", "aesthetic", "zero-shot")


def entry(name: str) -> ModelEntry:
    """The entry called ``name``; KeyError names the known ones."""
    for model in MODELS:
        if model.name == name:
            return model
    raise KeyError(f"no model {name!r} in the catalog; known: {', '.join(m.name for m in MODELS)}")


def served() -> list[ModelEntry]:
    """Entries with a runner of their own, in catalog order."""
    return [m for m in MODELS if m.runner]


def species_model() -> ModelEntry:
    """The species classifier (the one timm classifier)."""
    return next(m for m in MODELS if m.kind == "timm-classifier")


def aesthetic_tower() -> ModelEntry:
    """The CLIP tower that carries the aesthetic head."""
    return next(m for m in MODELS if m.head)


def zero_shot_models() -> list[ModelEntry]:
    """CLIP models with a text tower, listed for zero-shot classification."""
    return [m for m in MODELS if m.zero_shot]


def embedding_models() -> list[ModelEntry]:
    """CLIP image towers with an embedding alias (``/embed``, bulk ``--embedding``)."""
    return [m for m in MODELS if m.alias]


def aliases() -> dict[str, str]:
    """Short embedding alias -> model name."""
    return {m.alias: m.name for m in embedding_models() if m.alias}


def batchings() -> list[Batching]:
    """Each distinct batching group once (several runners may share one setting)."""
    return list(dict.fromkeys(m.batching for m in MODELS if m.batching))


def gpu_share() -> float:
    """Each runner's share of one GPU, so that all of them land on the same device."""
    return round(1 / len(served()), 4)
