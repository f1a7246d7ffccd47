"""Retrieval: image and text embeddings of one CLIP model, comparable by dot product (CLIP search).

What vitrivr-engine's ``DenseEmbedding`` analyser asks of vitrivr's feature-extraction-server (FES): the
``image-embedding`` task to index images and the ``text-embedding`` task to embed a query, with the same model
(:class:`EmbeddingTask`, served as durable jobs by :mod:`capabilities.fes`), and ``POST /embed/text`` beside
``/embed`` (:mod:`capabilities.embedding`). Every CLIP model of the catalog runs both: the zero-shot ones and the
aesthetic ViT-B/16, whose text tower is loaded for this. Embeddings are L2-normalised, as FES's are.
"""

from __future__ import annotations

from typing import Any, Mapping

import anyio
import bentoml
import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from capabilities.common import Runners, answers, fail, gather_or_cancel, model_headers, run_model, until_answering
from capabilities.embedding import TOWERS, Embedding, tower_name
from capabilities.zero_shot.requests import decode_data_uri
from jobs import Job
from serving.admission import RunnerGate
from serving.errors import ServiceError
from serving.imaging import prepare
from serving.schemas import EmbeddingResult, TextEmbedResponse
from serving.settings import settings

IMAGE_TASK, TEXT_TASK = "image-embedding", "text-embedding"


class EmbeddingConfig(BaseModel):
    """FES's free-form ``config``: accepted and ignored (vitrivr sends none)."""

    model_config = ConfigDict(extra="ignore")


class ImageJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: str = Field(description="The image as a data URI (data:image/jpeg;base64,...) or bare base64")
    config: EmbeddingConfig = Field(default_factory=EmbeddingConfig)


class BatchedImageJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: list[str] = Field(description="Images as data URIs or bare base64; one embedding each, in order")
    config: EmbeddingConfig = Field(default_factory=EmbeddingConfig)


class TextJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(description="The text to embed (any language on the multilingual open-clip-vit-b32)")
    config: EmbeddingConfig = Field(default_factory=EmbeddingConfig)


class BatchedTextJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: list[str] = Field(description="Texts; one embedding each, in order")
    config: EmbeddingConfig = Field(default_factory=EmbeddingConfig)


def check_texts(texts: list[str]) -> list[str]:
    """1 to EMBED_MAX_TEXTS non-blank strings of at most EMBED_MAX_TEXT_CHARS characters, as given."""
    limit, chars = settings.embed_max_texts, settings.embed_max_text_chars
    if not 1 <= len(texts) <= limit:
        raise ServiceError(400, "invalid_texts", f"Give 1 to {limit} texts; got {len(texts)}. The limit is the "
                                                 "EMBED_MAX_TEXTS setting.")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ServiceError(400, "invalid_texts", f"Text {i} is empty; every text needs some words.")
        if len(text) > chars:
            raise ServiceError(400, "invalid_texts", f"Text {i} has {len(text)} characters; the limit is {chars} "
                               "(EMBED_MAX_TEXT_CHARS). Texts past the model's context (77 tokens for CLIP) are cut "
                               "anyway: send the words that matter.")
    return list(texts)


class Retrieval(Embedding):
    """Embeds images and texts with any catalog CLIP model, through its runner (adaptively batched there): the
    towers of :class:`capabilities.embedding.Embedding`, with their text towers.

    ``runners(key)`` returns a model's runner client and ``gates[key]`` admits calls to it (``key`` being the
    catalog entry's); both are read at call time. A model stored without its text tower embeds images only.
    """

    RAW_ROUTES = ()

    def __init__(self, runners: Runners, gates: Mapping[str, RunnerGate]) -> None:
        super().__init__(runners, gates)
        self.texts = [n for n, e in self.entries.items() if "text" in (e.meta.towers or e.entry.towers)]
        self.image_task, self.text_task = EmbeddingTask(self, IMAGE_TASK), EmbeddingTask(self, TEXT_TASK)

    def runner(self, name: str) -> Any:
        return self._runners(TOWERS[name].key)

    def check_text_model(self, name: str) -> None:
        if name not in self.texts:
            raise ServiceError(404, "unknown_model", f"{name} is stored without its text tower, so it embeds images "
                               f"only; register it again: python scripts/save_models.py {TOWERS[name].group} --force "
                               f"(with --dev for dev models). Text models: {', '.join(self.texts)}.")

    async def images(self, name: str, data: list[bytes]) -> np.ndarray:
        """Decode and preprocess images for tower ``name``, off the event loop: uint8 ``(N, H, W, 3)``."""
        cfg = self.cfgs[name]
        return await anyio.to_thread.run_sync(
            lambda: np.stack([prepare(d, cfg, settings.max_image_pixels) for d in data]))

    async def embed_images(self, name: str, pixels: np.ndarray) -> np.ndarray:
        """L2-normalised embeddings ``(N, D)``; one runner call per image, so the runner batches them with
        everyone else's."""
        runner, gate = self.runner(name), self._gates[TOWERS[name].key]
        rows = await gather_or_cancel([gate.call(runner.to_async.embed_images, p[None]) for p in pixels])
        return np.concatenate([np.asarray(r) for r in rows])

    async def embed_texts(self, name: str, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
        """(L2-normalised embeddings ``(N, D)``, per text whether it was cut to the model's context)."""
        runner, gate = self.runner(name), self._gates[TOWERS[name].key]
        embedded, cut = await gather_or_cancel([gate.call(runner.to_async.embed_texts, texts),
                                                runner.to_async.truncated(texts)])
        embedded = np.asarray(embedded)
        if len(embedded) != len(texts) or len(cut) != len(texts):
            raise RuntimeError(f"runner answered {len(embedded)} embeddings for {len(texts)} texts")
        return embedded, [bool(c) for c in cut]

    async def embed_text(self, model: str, texts: list[str], ctx: bentoml.Context) -> TextEmbedResponse | Response:
        """``POST /embed/text``: the embeddings of up to EMBED_MAX_TEXTS texts."""
        try:
            name = tower_name(model)
            self.check_text_model(name)
            texts = check_texts(texts)
            vectors, cut = await run_model(self.embed_texts(name, texts), name)
        except ServiceError as err:
            return fail(ctx, err)
        info = await self.facts.with_precision(self.infos[name], TOWERS[name].key)
        facts = await self.facts.of(TOWERS[name].key)
        model_headers(ctx, info)
        return TextEmbedResponse(embeddings=vectors.tolist(), dim=vectors.shape[1], truncated=cut,
                                 context_length=int(facts.get("context_length", 0)) or None, model=info)


class EmbeddingTask:
    """The FES ``image-embedding`` or ``text-embedding`` task (:class:`capabilities.fes.Task`): a job stores the
    preprocessed pixels, or the texts, and its result is ``{"embedding": [...]}`` (a list per input when
    batched), with ``truncated`` where a text was cut to the model's context."""

    def __init__(self, retrieval: Retrieval, name: str) -> None:
        self.retrieval, self.name, self.text = retrieval, name, name == TEXT_TASK

    def models(self) -> list[str]:
        return list(self.retrieval.texts if self.text else TOWERS)

    def check_model(self, model: str) -> str:
        name = model.replace("_", "-")
        if name not in TOWERS:
            raise ServiceError(404, "unknown_model", f"No {self.name} model {model[:100]!r}; available: "
                                                     f"{', '.join(self.models())}.")
        if self.text:
            self.retrieval.check_text_model(name)
        return name

    def request(self, batched: bool) -> type[BaseModel]:
        if self.text:
            return BatchedTextJobRequest if batched else TextJobRequest
        return BatchedImageJobRequest if batched else ImageJobRequest

    async def inputs(self, model: str, body: Any, batched: bool) -> tuple[np.ndarray, list[str], list[str]]:
        if self.text:
            return np.array(check_texts(body.text if batched else [body.text]), dtype=str), [], []
        images = body.image if batched else [body.image]
        if not 1 <= len(images) <= settings.zero_shot_max_batch_images:
            raise ServiceError(400, "invalid_images", f"Give 1 to {settings.zero_shot_max_batch_images} images; got "
                               f"{len(images)}. The limit is the ZERO_SHOT_MAX_BATCH_IMAGES setting.")
        decoded = [decode_data_uri(uri) for uri in images]
        return await self.retrieval.images(model, decoded), [], []

    async def _embed(self, model: str, inputs: np.ndarray) -> dict[str, Any]:
        if self.text:
            vectors, cut = await self.retrieval.embed_texts(model, inputs.tolist())
            return {"embedding": vectors.tolist(), **({"truncated": cut} if any(cut) else {})}
        return {"embedding": (await self.retrieval.embed_images(model, inputs)).tolist()}

    async def execute(self, job: Job, inputs: np.ndarray) -> dict[str, Any]:
        """The stored result: always one embedding (and truncation flag) per input."""
        return await self._embed(job.model, inputs)

    @staticmethod
    def view(result: Any, batched: bool, per_image: bool) -> EmbeddingResult | list[EmbeddingResult]:
        vectors, cut = result["embedding"], result.get("truncated") or [False] * len(result["embedding"])
        if per_image:
            return [EmbeddingResult(embedding=v, truncated=c or None) for v, c in zip(vectors, cut)]
        if batched:
            return EmbeddingResult(embedding=vectors, truncated=cut if any(cut) else None)
        return EmbeddingResult(embedding=vectors[0], truncated=cut[0] or None)

    async def now(self, model: str, body: Any) -> EmbeddingResult:
        inputs, _, _ = await self.inputs(model, body, batched=False)
        return self.view(await run_model(self._embed(model, inputs), model), batched=False, per_image=False)

    async def ready(self) -> None:
        await until_answering([self.retrieval.runner(name) for name in self.models()])

    async def runner_state(self, model: str) -> str:
        return "running" if await answers(self.retrieval.runner(model)) else "starting"

    async def details(self) -> dict[str, Any]:
        models = []
        for name in self.models():
            facts = await self.retrieval.facts.of(TOWERS[name].key)
            models.append({"id": name, **self.retrieval.infos[name].model_dump(exclude_none=True),
                           **{k: facts[k] for k in ("engine", "precision", "context_length") if k in facts}})
        return {"models": models}
