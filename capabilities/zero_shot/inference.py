"""Zero-shot classification: probabilities of caller-supplied class names for images, with any zero-shot CLIP
model of the catalog.

The inference part, shared by the immediate ``zero_shot`` API and the FES jobs (:mod:`capabilities.fes`), for
which :class:`ZeroShot` is the ``zero-shot-image-classification`` task.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import anyio
import bentoml
import numpy as np
from starlette.responses import Response

import catalog
from capabilities.common import Runners, answers, fail, gather_or_cancel, run_model, until_answering
from capabilities.zero_shot.requests import (BatchedZeroShotJobRequest, ZeroShotConfig, ZeroShotJobRequest,
                                             check_classes, check_templates, decode_data_uri, probabilities)
from jobs import Job
from model_store import open_entry
from serving.admission import RunnerGate
from serving.cache import LRU
from serving.errors import ServiceError, call_runner
from serving.imaging import prepare
from serving.schemas import ZeroShotResult
from serving.settings import settings

logger = logging.getLogger(__name__)

MODELS = {m.name: m for m in catalog.zero_shot_models()}
TASK = "zero-shot-image-classification"


class ZeroShot:
    """Validates zero-shot requests, preprocesses their images and combines image and class embeddings.

    ``runners(key)`` returns a model's runner client and ``gates[key]`` admits image calls to it (``key`` being
    the catalog entry's); both are read at call time. Each gateway worker remembers the class embeddings of class
    lists it has seen (``class_memo``, on top of the runner's per-class cache). As the FES task
    ``zero-shot-image-classification`` (:class:`capabilities.fes.Task`), jobs store the pixels, classes and
    templates.
    """

    name = TASK

    @staticmethod
    def needs() -> list[catalog.ModelEntry]:
        """The runners this capability calls, for the gates it needs."""
        return list(MODELS.values())

    def __init__(self, runners: Runners, gates: Mapping[str, RunnerGate]) -> None:
        self.entries = {name: open_entry(name) for name in MODELS}
        self.cfgs = {name: entry.meta.require_preprocess() for name, entry in self.entries.items()}
        self.class_memo = {name: LRU(settings.zero_shot_text_cache, weight=len) for name in MODELS}
        self._runners, self._gates = runners, gates

    def _runner(self, name: str) -> Any:
        return self._runners(MODELS[name].key)

    @staticmethod
    def models() -> list[str]:
        return list(MODELS)

    @staticmethod
    def request(batched: bool) -> type[ZeroShotJobRequest] | type[BatchedZeroShotJobRequest]:
        return BatchedZeroShotJobRequest if batched else ZeroShotJobRequest

    async def inputs(self, model: str, body: Any, batched: bool) -> tuple[np.ndarray, list[str], list[str]]:
        return await self.prepare(model, body.image if batched else [body.image], body.classes, body.config)

    async def execute(self, job: Job, pixels: np.ndarray) -> dict[str, Any]:
        probs = await self.infer(job.model, pixels, job.classes, job.templates)
        return {"probabilities": probs.tolist() if job.batched else probs[0].tolist()}

    @staticmethod
    def view(result: Any, batched: bool, per_image: bool) -> ZeroShotResult | list[ZeroShotResult]:
        """``per_image``: one ``{"probabilities": [...]}`` per image; else ``{"probabilities": [...]}``, a list of
        lists for a batched job."""
        probs = result["probabilities"]
        if per_image:
            return [ZeroShotResult(probabilities=p) for p in (probs if batched else [probs])]
        return ZeroShotResult(probabilities=probs)

    async def details(self) -> dict[str, list[dict[str, Any]]]:
        return await self.described()

    @staticmethod
    def check_model(model: str) -> str:
        """The model's name in kebab case (snake case is accepted, as by vitrivr's feature-extraction-server)."""
        name = model.replace("_", "-")
        if name not in MODELS:
            raise ServiceError(404, "unknown_model",
                               f"No zero-shot model {model[:100]!r}; available: {', '.join(MODELS)}.")
        return name

    async def runner_state(self, model: str) -> str:
        """``running`` when the model's runner answers, else ``starting``."""
        return "running" if await answers(self._runner(model)) else "starting"

    async def ready(self) -> None:
        """Wait until every zero-shot runner answers."""
        await until_answering([self._runner(name) for name in MODELS])

    async def prepare(self, model: str, images: list[str], classes: list[str],
                      config: ZeroShotConfig) -> tuple[np.ndarray, list[str], list[str]]:
        """Validate a request and preprocess its images: (uint8 pixels (N, H, W, 3), classes, templates).
        ``model`` is a canonical name (:meth:`check_model`)."""
        classes, templates = check_classes(classes), check_templates(config.templates)
        if not 1 <= len(images) <= settings.zero_shot_max_batch_images:
            raise ServiceError(400, "invalid_images",
                               f"Give 1 to {settings.zero_shot_max_batch_images} images; got {len(images)}. The limit "
                               "is the ZERO_SHOT_MAX_BATCH_IMAGES setting (a vitrivr batchSize above it needs it raised).")
        cfg = self.cfgs[model]
        decoded = [decode_data_uri(uri) for uri in images]

        def stack() -> np.ndarray:
            return np.stack([prepare(data, cfg, settings.max_image_pixels) for data in decoded])

        return await anyio.to_thread.run_sync(stack), classes, templates

    async def infer(self, model: str, pixels: np.ndarray, classes: list[str], templates: list[str]) -> np.ndarray:
        """Probabilities ``(N, C)`` from the runner's image embeddings and the class embeddings.

        Class embeddings depend only on (model, templates, classes), so a class list seen before is read from this
        worker's memo and costs no runner call (about 2 ms of the zero-shot path on the benchmark's 2-core box).
        """
        runner, gate = self._runner(model), self._gates[MODELS[model].key]
        key = (tuple(templates), tuple(classes))
        calls = [gate.call(runner.to_async.embed_images, p[None]) for p in pixels]
        texts = self.class_memo[model].get(key)
        if texts is None:  # image and class embeddings are independent: one round trip
            calls.append(call_runner(runner.to_async.class_embeddings, classes=classes, templates=templates))
        results = await gather_or_cancel(calls)
        if texts is None:
            texts = np.asarray(results.pop())
            if texts.shape[0] != len(classes):
                raise RuntimeError(f"runner returned {texts.shape[0]} class embeddings for {len(classes)} classes")
            texts.setflags(write=False)  # shared by every later request with this class list
            self.class_memo[model].put(key, texts)
        scale = self.entries[model].meta.logit_scale
        return probabilities(np.concatenate(results), texts, scale)

    async def classify(self, model: str, image: str, classes: list[str], config: ZeroShotConfig | None,
                       ctx: bentoml.Context) -> ZeroShotResult | Response:
        """Probabilities for one image (data URI) right away, without a job."""
        try:
            body = ZeroShotJobRequest(image=image, classes=classes, config=config or ZeroShotConfig())
            return await self.now(model, body)
        except ServiceError as err:
            return fail(ctx, err)

    async def now(self, model: str, body: ZeroShotJobRequest) -> ZeroShotResult:
        """One image's probabilities without a job (raises ServiceError)."""
        model = self.check_model(model)
        pixels, classes, templates = await self.prepare(model, [body.image], body.classes, body.config)
        probs = await run_model(self.infer(model, pixels, classes, templates), "zero-shot")
        return ZeroShotResult(probabilities=probs[0].tolist())

    async def described(self) -> dict[str, list[dict[str, Any]]]:
        """Each model with its store entry, this worker's class-list memo counters and, when its runner answers,
        the runner's per-class text-cache counters."""
        models = []
        for name, entry in self.entries.items():
            item = {"id": name, **entry.describe(), "architecture": entry.meta.architecture,
                    "pretrained": entry.meta.pretrained, "logit_scale": entry.meta.logit_scale,
                    "class_memo": self.class_memo[name].stats()}
            try:
                item["text_cache"] = (await self._runner(name).to_async.info())["cache"]
            except Exception:
                logger.warning("%s runner did not answer info()", name)
            models.append(item)
        return {"models": models}
