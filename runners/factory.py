"""One BentoML service per served catalog entry, built by one factory from the entry (no class per model).

Each runner loads its store entry's engine (:mod:`engines`) on its one inference thread and exposes batchable
APIs for what the entry can do: ``predict`` for a classifier; ``embed_images`` for a CLIP image tower, ``score``
where the entry has a head (the aesthetic ViT-B/16 with LAION's head), ``embed_texts`` and
``class_embeddings`` where it keeps the text tower; ``info`` for all. Inputs are uint8 ``(N, H, W, 3)`` batches
resized and cropped by the gateway; outputs are checked against inputs in count.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import bentoml
import numpy as np
from pydantic import BaseModel

import catalog
import engines
from engines.thread import InferenceThread
from model_store import open_entry, taxonomy
from serving.cache import LRU
from serving.settings import settings

logger = logging.getLogger(__name__)

TOP_K = 10  # a classifier runner always returns 10; the gateway trims to the caller's top_k
BATCHERS = ("idle-aware", "bentoml")


class RankScore(BaseModel):
    """The group of one rank (genus, family, ...) holding the most probability, summed over all its classes."""

    rank: str
    name: str
    score: float


class TopK(BaseModel):
    """The best classes for one image, best first; with a stored taxonomy also the best group of each rank above
    the species, deepest first, from the full softmax (whatever top_k the caller asked for)."""

    labels: list[str]
    scores: list[float]
    indices: list[int] = []
    ranks: list[RankScore] = []


def service_resources() -> dict[str, Any]:
    """BentoML ``resources`` for a runner, from RUNNER_GPUS.

    ``auto`` declares each runner's share of one GPU (1 / number of runners, :func:`catalog.gpu_share`) when CUDA
    is visible, so every runner lands on the same GPU instead of some being handed devices that do not exist,
    else CPU only. A number declares that many GPUs regardless of this machine, e.g. when building a Bento for
    GPU clouds on a CPU-only machine.
    """
    import torch

    if settings.runner_gpus == "auto":
        share = catalog.gpu_share() if torch.cuda.is_available() else 0.0
    else:
        try:
            share = float(settings.runner_gpus)
        except ValueError:
            raise ValueError(f"RUNNER_GPUS={settings.runner_gpus!r}: use 'auto' or a number such as "
                             f"{catalog.gpu_share()}") from None
    return {"gpu": share} if share > 0 else {"cpu": "1"}


def runner_config() -> dict[str, Any]:
    """``@bentoml.service`` options shared by every model runner.

    ``runner_connection``: BentoML 1.4 recycles a caller's connection session after 100 requests or 300 s and
    closes the old one while requests are still in flight on it, which fails them under load; the runners are
    local, so the session is never recycled.
    """
    return {
        "resources": service_resources(),
        "workers": 1,
        "traffic": {"timeout": settings.request_timeout_s},
        "runner_connection": {"max_requests": 2**62, "max_age": 1e12},
    }


def prompts_for(classes: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every template filled with every class name, class-major. ``{}`` is replaced literally, never formatted."""
    return [t.replace("{}", c) for c in classes for t in templates]


def _checked(out: Any, inputs: Sequence[Any] | np.ndarray, what: str) -> Any:
    if len(out) != len(inputs):
        raise RuntimeError(f"model returned {len(out)} {what} for {len(inputs)} inputs")
    return out


class RunnerBase:
    """What every runner does at start: load its entry's engine (and head) on its inference thread, warm up."""

    entry: catalog.ModelEntry

    def __init__(self) -> None:
        name = self.entry.runner or self.entry.name
        self.stored = open_entry(self.entry.name)
        self.cfg = self.stored.meta.require_preprocess()
        self.thread = InferenceThread(name)
        self.engine = self.thread.call(engines.load, self.stored, settings.engine_options(self.entry))
        self.thread.call(self.engine.warm_up)
        self.head = None
        if self.entry.head:
            self.head_stored = open_entry(self.entry.head)
            self.head = self.thread.call(engines.load, self.head_stored, settings.engine_options(self.entry))
            self.thread.call(self.head.warm_up)
        text = "text" in self.entry.towers and "text" in (self.stored.meta.towers or self.entry.towers)
        self.cache = LRU(settings.zero_shot_text_cache) if text else None
        self.groups = None
        if self.entry.kind == "timm-classifier" and (taxa := taxonomy.read_stored(self.stored.path)) is not None:
            self.groups = taxonomy.Groups(taxa)
        self.described = {**self.stored.describe(), "engine": self.engine.backend, "device": self.engine.device,
                          "precision": self.engine.precision,
                          "preprocess": self.cfg.model_dump(mode="json"),
                          **({"logit_scale": self.stored.meta.logit_scale,
                              "context_length": self.engine.context_length} if text else {})}
        if "text" in self.entry.towers and not text:
            logger.warning("%s is stored without its text tower, which text embeddings need: register it again with "
                           "'python scripts/save_models.py %s --force' (with --dev for dev models)", self.stored.tag,
                           self.entry.group)
        logger.info("%s ready: %s%s on %s in %s (%s engine; ENGINE=%s, PRECISION=%s)", name, self.stored.tag,
                    f" + {self.head_stored.tag}" if self.head else "", self.engine.device, self.engine.precision,
                    self.engine.backend, settings.engine or "unset", settings.precision_of(self.entry) or "unset")

    # the work each API hands to the inference thread
    def _top_k(self, images: np.ndarray) -> list[TopK]:
        if self.groups is None:
            scores, indices = self.engine.classify(images, TOP_K)
            ranks: list[list[tuple[str, str, float]]] = [[] for _ in range(len(images))]
        else:  # the full softmax, summed by genus, family, ... for the roll-up
            probs = self.engine.probabilities(images)
            scores, indices = engines.top_k(probs, TOP_K)
            ranks = self.groups.best(probs)
        labels = self.engine.labels
        return [TopK(labels=[labels[i] for i in idx], scores=s, indices=idx,
                     ranks=[RankScore(rank=r, name=n, score=p) for r, n, p in best])
                for idx, s, best in zip(indices.tolist(), scores.tolist(), ranks)]

    def _encode_images(self, images: np.ndarray) -> np.ndarray:
        return self.engine.embed_images(images)

    def _score(self, images: np.ndarray) -> np.ndarray:
        return self.head.apply(self.engine.embed_images(images))

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        return self.engine.embed_texts(texts)

    def _class_embeddings(self, classes: list[str], templates: list[str]) -> np.ndarray:
        key_base = tuple(templates)
        found = {c: self.cache.get((key_base, c)) for c in classes}
        missing = [c for c, v in found.items() if v is None]
        if missing:
            prompts = self._encode_texts(prompts_for(missing, templates)).reshape(len(missing), len(templates), -1)
            means = prompts.mean(axis=1)
            means /= np.linalg.norm(means, axis=-1, keepdims=True)
            for c, emb in zip(missing, means):
                self.cache.put((key_base, c), emb)
                found[c] = emb
        return np.stack([found[c] for c in classes])


def _apis(entry: catalog.ModelEntry) -> dict[str, Callable[..., Any]]:
    """The BentoML APIs of ``entry``'s runner, by what the entry can do."""
    size, latency = settings.batch(entry)
    batched = bentoml.api(batchable=True, batch_dim=0, max_batch_size=size, max_latency_ms=latency)
    apis: dict[str, Callable[..., Any]] = {}

    async def info(self) -> dict[str, Any]:
        """Store tag, variant, engine, device, preprocessing (and for text towers the logit scale and the
        text-cache counters)."""
        return {**self.described, **({"cache": self.cache.stats()} if self.cache is not None else {})}

    apis["info"] = bentoml.api(info)
    if entry.kind == "timm-classifier":
        async def predict(self, images: np.ndarray) -> list[TopK]:
            """uint8 ``(N, H, W, 3)`` -> one ``TopK`` (10 best classes) per image, in input order."""
            return _checked(await self.thread.run(self._top_k, images), images, "results")

        apis["predict"] = batched(predict)
        return apis

    async def embed_images(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, 3)`` -> L2-normalised image embeddings ``(N, D)`` float32."""
        return _checked(await self.thread.run(self._encode_images, images), images, "embeddings")

    apis["embed_images"] = batched(embed_images)
    if entry.head:
        async def score(self, images: np.ndarray) -> np.ndarray:
            """uint8 ``(N, H, W, 3)`` -> the head's raw (unclamped) outputs ``(N,)`` float32."""
            return _checked(await self.thread.run(self._score, images), images, "scores")

        apis["score"] = batched(score)
    if "text" in entry.towers:
        async def embed_texts(self, texts: list[str]) -> np.ndarray:
            """Strings -> L2-normalised text embeddings ``(N, D)`` float32."""
            return _checked(await self.thread.run(self._encode_texts, list(texts)), texts, "embeddings")

        async def truncated(self, texts: list[str]) -> list[bool]:
            """Per string: longer than the text tower's context (``info()["context_length"]`` tokens), so
            ``embed_texts`` embeds it cut to the context. Tokenising only, but on the inference thread: a Hugging
            Face tokenizer's truncation setting is shared state, and counting beside an embedding call raced."""
            return _checked(await self.thread.run(self.engine.truncated, list(texts)), texts, "flags")

        async def class_embeddings(self, classes: list[str], templates: list[str]) -> np.ndarray:
            """One L2-normalised embedding per class: the mean of its normalised prompt embeddings, renormalised
            (CLIP's zero-shot recipe), kept in a bounded LRU keyed by (templates, class name)."""
            return await self.thread.run(self._class_embeddings, classes, templates)

        apis["embed_texts"] = batched(embed_texts)
        apis["class_embeddings"] = bentoml.api(class_embeddings)
        apis["truncated"] = bentoml.api(truncated)
    return apis


def make_runner(entry: catalog.ModelEntry) -> Any:
    """The BentoML service that runs catalog ``entry`` (one per model, so each has its own batching)."""
    if not entry.runner:
        raise ValueError(f"{entry.name} runs inside another entry's runner, not on its own")
    namespace: dict[str, Any] = {"entry": entry, "__doc__": f"Runner of {entry.name}: {entry.description}.",
                                 "model_ref": bentoml.models.BentoModel(settings.tag(entry.name)), **_apis(entry)}
    if entry.head:
        namespace["head_ref"] = bentoml.models.BentoModel(settings.tag(entry.head))
    cls = type(entry.runner, (RunnerBase,), namespace)
    return bentoml.service(name=entry.runner, **runner_config())(cls)
