"""The BentoML gateway: wires the model runners to the capabilities that handle each public route.

No weights load here; each model runs in its own BentoML service built from its catalog entry (``catalog.py``,
:mod:`runners`), and each capability keeps its request handling in its own module under ``capabilities/``,
declaring the raw-body routes and the runners (so the gates) it needs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import bentoml
from starlette.applications import Starlette

import catalog
import runners
from capabilities import fes, health, ui
from capabilities.aesthetic import Aesthetic
from capabilities.common import gather_or_cancel  # noqa: F401  (part of this module's interface)
from capabilities.embedding import Embedding
from capabilities.retrieval import BatchedImageJobRequest, BatchedTextJobRequest, Retrieval
from capabilities.species import Species
from capabilities.zero_shot import ZeroShot, ZeroShotConfig
from capabilities.zero_shot.requests import BatchedZeroShotJobRequest, ZeroShotJobRequest
from serving import forms
from serving.admission import RunnerGate
from serving.middleware import GuardMiddleware, RawImageBodyMiddleware
from serving.schemas import (ClassifyResponse, EmbedResponse, JobAccepted, OrganismResponse, ScoreResponse,
                             ScoresResponse, TextEmbedResponse, ZeroShotResult)
from serving.settings import settings

for _package in ("capabilities", "runners", "engines", "jobs", "serving"):  # INFO lines (ready, /ui, job recovery)
    logging.getLogger(_package).setLevel(logging.INFO)

CAPABILITIES = (Species, Aesthetic, Embedding, Retrieval, ZeroShot)
RUNNERS = runners.services()  # catalog key -> runner service
RAW_BODY_ROUTES = tuple(dict.fromkeys(route for cap in CAPABILITIES for route in getattr(cap, "RAW_ROUTES", ())))


def gates() -> dict[str, RunnerGate]:
    """One gate per runner the capabilities call: calls in flight per runner from this worker, a couple of full
    batches, so the runner's queue stays short."""
    needed = dict.fromkeys(entry for cap in CAPABILITIES for entry in cap.needs())
    out = {}
    for entry in needed:
        size, latency_ms = settings.batch(entry)
        out[entry.key] = RunnerGate(settings.runner_queue_batches * size, latency_ms / 1000)
    return out


class Gateway:
    """Public API: POST /classify and /score (raw image bodies), /embed and /embed/text, zero-shot classification
    and image and text embeddings as jobs (FES's routes under /api), GET /ui.

    Its runner dependencies (``species``, ``aesthetic``, ``zero_shot_l14``, ...) and store references are set
    from the catalog below, before BentoML reads the class."""

    def __init__(self) -> None:
        self.gates = gates()

        def runner(key: str) -> Any:  # read at call time, so the dependency proxies (or a test's fakes) are used
            return getattr(self, key)

        self.species_api = Species(runner, self.gates)
        self.aesthetic_api = Aesthetic(runner, self.gates)
        self.zero_shot_api = ZeroShot(runner, self.gates)
        self.embedding_api = Embedding(runner, self.gates)
        self.retrieval_api = Retrieval(runner, self.gates)
        self.class_memo = self.zero_shot_api.class_memo
        tasks = (self.zero_shot_api, self.retrieval_api.image_task, self.retrieval_api.text_task)
        self.jobs = fes.Jobs({task.name: task for task in tasks})
        fes.bind(self.jobs)

    @bentoml.on_startup
    async def start_job_worker(self) -> None:
        self.jobs.start()
        ui.announce()

    @bentoml.on_shutdown
    async def stop_job_worker(self) -> None:
        await self.jobs.stop()

    @bentoml.api(route="/classify")
    async def classify(self, image: bytes, /, ctx: bentoml.Context) -> ClassifyResponse:
        """Top-k iNaturalist 2021 species for a JPEG, PNG or WebP sent as the raw request body, each with its
        common name and lineage, and the answer's ``status`` (identified, uncertain, not_organism) and ``rollup``
        (the deepest rank sure enough, over all classes).

        Query: ``top_k`` (1..10, default 3). The bytes decide the format; the Content-Type may be absent.
        """
        return await self.species_api.classify(image, ctx)

    @bentoml.api(route="/classify/organism")
    async def classify_organism(self, image: bytes, /, ctx: bentoml.Context) -> OrganismResponse:
        """danactive/history's organism classifier answer for a raw image body: ``status``, five candidates with
        ``scientificName``, ``commonName``, ``family``, ``genus``, ``lineage``, ``score`` and ``matchStrength``,
        and ``diagnostics``."""
        return await self.species_api.organism(image, ctx)

    @bentoml.api(route="/classify/batch")
    async def classify_batch(self, images: list[Path], top_k: int | None = None,
                             ctx: bentoml.Context = None) -> dict[str, Any]:
        """Top-k species for up to MAX_BATCH_IMAGES images (multipart/form-data, field ``images``), in order, in one
        runner call: ``{"results": [<the /classify answer, or {"error", "detail"} for a bad image>, ...]}``.
        (Typed as a dict: BentoML's client turned the error slots of a declared union into ``{}``.)"""
        return await self.species_api.classify_batch(images, top_k, ctx)

    @bentoml.api(route="/score/batch")
    async def score_batch(self, images: list[Path], ctx: bentoml.Context = None) -> dict[str, Any]:
        """Aesthetic scores for up to MAX_BATCH_IMAGES images (multipart/form-data, field ``images``), in order:
        ``{"results": [<the /score answer, or {"error", "detail"}>, ...]}``; ``report=1`` (query) gives each its
        photo report, as /scores."""
        return await self.aesthetic_api.score_batch(images, ctx)

    @bentoml.api(route="/score")
    async def score(self, image: bytes, /, ctx: bentoml.Context) -> ScoreResponse:
        """LAION aesthetic score (0-10) for a JPEG, PNG or WebP sent as the raw request body. Query: ``report=1``
        adds the photo report (as ``/scores``)."""
        return await self.aesthetic_api.score(image, ctx)

    @bentoml.api(route="/scores")
    async def scores(self, image: bytes, /, ctx: bentoml.Context) -> ScoresResponse:
        """The /score answer plus the photo report: sharpness, exposure, resolution, rule-of-thirds and visual-interest
        scores (0-10), technical and composition scores, ``overall_score`` (0-100), the original's size and notes;
        ``aesthetic_score`` is the same 0-10 score (danactive/history reads it)."""
        return await self.aesthetic_api.scores(image, ctx)

    @bentoml.api(route="/embed")
    async def embed(self, image: bytes, /, ctx: bentoml.Context) -> EmbedResponse:
        """The L2-normalised CLIP image embedding of a raw image body. Query: ``model``, one of
        clip-vit-b16-openai (b16), clip-vit-large-patch14 (l14), open-clip-vit-b32 (b32), open-clip-vit-b32-laion2b."""
        return await self.embedding_api.embed(image, ctx)

    @bentoml.api(route="/embed/text")
    async def embed_text(self, model: str, texts: list[str], ctx: bentoml.Context = None) -> TextEmbedResponse:
        """L2-normalised CLIP text embeddings of up to EMBED_MAX_TEXTS texts, comparable by dot product with the
        same model's /embed image embeddings; ``truncated`` says which texts were cut to the model's context."""
        return await self.retrieval_api.embed_text(model, texts, ctx)

    @bentoml.api
    async def zero_shot(self, model: str, image: str, classes: list[str], config: ZeroShotConfig | None = None,
                        ctx: bentoml.Context = None) -> ZeroShotResult:
        """Probabilities for one image (data URI) right away, without a job."""
        return await self.zero_shot_api.classify(model, image, classes, config, ctx)

    @bentoml.api
    async def submit_zero_shot(self, model: str, image: str, classes: list[str], config: ZeroShotConfig | None = None,
                               ctx: bentoml.Context = None) -> JobAccepted:
        """Submit a zero-shot job for one image (data URI); poll it with ``zero_shot_job``."""
        body = ZeroShotJobRequest(image=image, classes=classes, config=config or ZeroShotConfig())
        return await self.jobs.submit_api(ZeroShot.name, model, body, False, ctx)

    @bentoml.api
    async def submit_zero_shot_batch(self, model: str, images: list[str], classes: list[str],
                                     config: ZeroShotConfig | None = None, ctx: bentoml.Context = None) -> JobAccepted:
        """Submit one job for several images sharing classes and config."""
        body = BatchedZeroShotJobRequest(image=images, classes=classes, config=config or ZeroShotConfig())
        return await self.jobs.submit_api(ZeroShot.name, model, body, True, ctx)

    @bentoml.api
    async def submit_image_embedding(self, model: str, images: list[str], ctx: bentoml.Context = None) -> JobAccepted:
        """Submit one image-embedding job for images (data URIs); its result has one embedding per image."""
        return await self.jobs.submit_api("image-embedding", model, BatchedImageJobRequest(image=images), True, ctx)

    @bentoml.api
    async def submit_text_embedding(self, model: str, texts: list[str], ctx: bentoml.Context = None) -> JobAccepted:
        """Submit one text-embedding job; its result has one embedding per text."""
        return await self.jobs.submit_api("text-embedding", model, BatchedTextJobRequest(text=texts), True, ctx)

    @bentoml.api
    async def zero_shot_job(self, id: str, wait: float = 0,  # noqa: A002
                            ctx: bentoml.Context = None) -> dict[str, Any]:
        """A job's status (of any task: zero-shot, image or text embedding), and its result once complete;
        ``wait`` seconds (0-30) hold the call until it finishes. The JobStatus shape (typed as a dict: BentoML's
        client turned a result of the union's second type into ``{}``)."""
        return await self.jobs.status_api(id, wait, ctx)

    @bentoml.api
    async def cancel_zero_shot_job(self, id: str, ctx: bentoml.Context = None) -> dict[str, Any]:  # noqa: A002
        """Cancel a queued job at once, or a running one when its current runner call returns; 409 if finished."""
        return await self.jobs.cancel_api(id, ctx)

    @bentoml.api
    async def zero_shot_models(self) -> dict[str, list[dict[str, Any]]]:
        """The zero-shot models this server runs."""
        return await self.zero_shot_api.described()


for _key, _runner in RUNNERS.items():
    setattr(Gateway, _key, bentoml.depends(_runner))
for _entry in catalog.MODELS:  # read for preprocessing configs; the runners load the weights
    setattr(Gateway, f"{_entry.name.replace('-', '_')}_ref", bentoml.models.BentoModel(settings.tag(_entry.name)))
Gateway = bentoml.service(name="VisionGateway", workers=settings.gateway_workers,
                          traffic={"timeout": settings.request_timeout_s})(
    bentoml.asgi_app(fes.rest, path="/api")(
        bentoml.asgi_app(Starlette(routes=[*health.routes, *ui.routes]), path="/")(Gateway)))
forms.install()
Gateway.add_asgi_middleware(RawImageBodyMiddleware, routes=RAW_BODY_ROUTES)
Gateway.add_asgi_middleware(GuardMiddleware, max_body_bytes=settings.max_body_bytes, api_key=settings.api_key or None,
                            max_in_flight=settings.gateway_max_concurrency, open_paths=(health.PATH, *ui.PATHS))
