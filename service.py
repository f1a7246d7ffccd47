"""HTTP gateway: decodes and validates input on the CPU, calls the model runners, shapes responses.

No weights load here; each model runs in its own BentoML service under ``runners/``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from datetime import datetime, timezone
from typing import Any, Awaitable

import anyio
import bentoml
import numpy as np
from fastapi import FastAPI, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse, Response

from runners.aesthetic import SAVE_HINT as AESTHETIC_SAVE_HINT
from runners.aesthetic import AestheticRunner
from runners.species import SAVE_HINT as SPECIES_SAVE_HINT
from runners.species import SpeciesRunner
from runners.zero_shot import SAVE_HINT as ZERO_SHOT_SAVE_HINT
from runners.zero_shot import ClipL14Runner, OpenClipB32Runner
from serving import model_store
from serving.admission import RunnerGate
from serving.cache import LRU
from serving.errors import ServiceError, call_runner, is_overload, overloaded
from serving.imaging import PreprocessConfig, decode_image, draft_size, preprocess
from serving.jobs import COMPLETE, FAILED, Job, JobStore, JobWorker, wait_until_final
from serving.middleware import GuardMiddleware, RawImageBodyMiddleware
from serving.schemas import (
    ClassifyResponse,
    JobAccepted,
    JobStatus,
    ModelInfo,
    Prediction,
    ScoreModelInfo,
    ScoreResponse,
    ZeroShotResult,
)
from serving.settings import ZERO_SHOT_B32_NAME, ZERO_SHOT_L14_NAME, settings
from serving.zero_shot import (
    BatchedZeroShotJobRequest,
    ZeroShotConfig,
    ZeroShotJobRequest,
    check_classes,
    check_templates,
    check_wait,
    decode_data_uri,
    probabilities,
)

logger = logging.getLogger(__name__)

MAX_TOP_K = 10
SCORE_RANGE = (0.0, 10.0)


ZERO_SHOT_MODELS = {ZERO_SHOT_L14_NAME: settings.zero_shot_l14_model, ZERO_SHOT_B32_NAME: settings.zero_shot_b32_model}
TASK = "/tasks/zero-shot-image-classification"
api = FastAPI(title="Zero-shot image classification jobs")


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat() if ts is not None else None


def job_status(job: Job) -> JobStatus:
    """The public view of a job: result only when complete, error only when failed."""
    return JobStatus(
        id=job.id, model=job.model, status=job.status, created_at=_iso(job.created_at),
        result=ZeroShotResult(**job.result) if job.status == COMPLETE else None,
        error=job.error if job.status == FAILED else None,
        expires_at=_iso(job.expires_at),
    )


def parse_top_k(raw: str | None) -> int:
    """The ``top_k`` query parameter: an integer 1..10, default 3."""
    if raw is None:
        return 3
    if not raw.strip().isdigit() or not 1 <= int(raw) <= MAX_TOP_K:
        raise ServiceError(400, "invalid_parameter", f"top_k must be an integer from 1 to {MAX_TOP_K}; got {raw!r}.")
    return int(raw)


def request_body(image: bytes, ctx: bentoml.Context) -> bytes:
    """The raw body; BentoML hands an empty body over as ``b"{}"``, so the header tells them apart."""
    if image == b"{}" and ctx.request.headers.get("content-length", "0") == "0":
        return b""
    return image


async def gather_or_cancel(calls: list[Awaitable[Any]]) -> list[Any]:
    """Results of all calls, in order; when one fails (e.g. shed), the others are cancelled, not left running."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


def _fail(ctx: bentoml.Context, err: ServiceError) -> Response:
    ctx.response.status_code = err.status  # BentoML copies ctx's status onto returned responses
    return err.to_response()


def _model_headers(ctx: bentoml.Context, info: ModelInfo) -> None:
    ctx.response.headers["X-Model-Tag"] = info.tag
    ctx.response.headers["X-Model-Variant"] = info.variant


@bentoml.service(name="VisionGateway", workers=settings.gateway_workers, traffic={"timeout": 120})
@bentoml.asgi_app(api, path="/api")
class Gateway:
    """Public API: POST /classify and /score (raw image bodies), zero-shot classification as jobs."""

    species = bentoml.depends(SpeciesRunner)
    aesthetic = bentoml.depends(AestheticRunner)
    zero_shot_l14 = bentoml.depends(ClipL14Runner)
    zero_shot_b32 = bentoml.depends(OpenClipB32Runner)
    # Read for preprocessing configs only; the runners load the weights.
    species_model = bentoml.models.BentoModel(settings.species_model)
    aesthetic_clip_model = bentoml.models.BentoModel(settings.aesthetic_clip_model)
    zero_shot_l14_model = bentoml.models.BentoModel(settings.zero_shot_l14_model)
    zero_shot_b32_model = bentoml.models.BentoModel(settings.zero_shot_b32_model)

    def __init__(self) -> None:
        species = model_store.require(settings.species_model, SPECIES_SAVE_HINT)
        clip = model_store.require(settings.aesthetic_clip_model, AESTHETIC_SAVE_HINT)
        head = model_store.require(settings.aesthetic_head_model, AESTHETIC_SAVE_HINT)
        self.species_cfg = PreprocessConfig.model_validate(species.info.metadata["preprocess"])
        self.species_info = ModelInfo(**model_store.describe(species))
        self.aesthetic_cfg = PreprocessConfig.model_validate(clip.info.metadata["preprocess"])
        self.aesthetic_info = ScoreModelInfo(**model_store.describe(clip), head=str(head.tag))
        self.zero_shot_entries = {name: model_store.require(tag, ZERO_SHOT_SAVE_HINT) for name, tag in ZERO_SHOT_MODELS.items()}
        self.zero_shot_cfgs = {name: PreprocessConfig.model_validate(entry.info.metadata["preprocess"])
                               for name, entry in self.zero_shot_entries.items()}
        # Calls in flight per runner from this worker: a couple of full batches, so the runner's queue stays short.
        batches = settings.runner_queue_batches
        self.gates = {
            "species": RunnerGate(batches * settings.species_max_batch_size, settings.species_max_latency_ms / 1000),
            "aesthetic": RunnerGate(batches * settings.aesthetic_max_batch_size,
                                    settings.aesthetic_max_latency_ms / 1000),
            **{name: RunnerGate(batches * settings.zero_shot_max_batch_size, settings.zero_shot_max_latency_ms / 1000)
               for name in ZERO_SHOT_MODELS},
        }
        # Class-embedding rows kept per model, on top of the runner's per-class cache.
        self.class_memo = {name: LRU(settings.zero_shot_text_cache, weight=len) for name in ZERO_SHOT_MODELS}
        self.jobs = JobStore(settings.job_store_path, settings.job_retention_s, settings.job_lease_s)
        self.jobs.init()
        self.worker: JobWorker | None = None

    def _zero_shot_runner(self, model: str) -> Any:
        return {ZERO_SHOT_L14_NAME: self.zero_shot_l14, ZERO_SHOT_B32_NAME: self.zero_shot_b32}[model]

    @bentoml.on_startup
    async def start_job_worker(self) -> None:
        """Run queued and interrupted jobs in the background of every gateway worker."""
        self.worker = JobWorker(self.jobs, self._execute_job, concurrency=settings.job_concurrency,
                                max_attempts=settings.job_max_attempts, ready=self._zero_shot_ready)
        self.worker.start()

    @bentoml.on_shutdown
    async def stop_job_worker(self) -> None:
        if self.worker:
            await self.worker.stop()

    async def _zero_shot_ready(self) -> None:
        """Wait until both zero-shot runners answer, so start-up does not burn job attempts."""
        for name in ZERO_SHOT_MODELS:
            while True:
                try:
                    await self._zero_shot_runner(name).to_async.info()
                    break
                except Exception:
                    await asyncio.sleep(1)

    def _check_model(self, model: str) -> None:
        if model not in ZERO_SHOT_MODELS:
            raise ServiceError(404, "unknown_model",
                               f"No zero-shot model {model[:100]!r}; available: {', '.join(ZERO_SHOT_MODELS)}.")

    async def _zero_shot_inputs(self, model: str, images: list[str], classes: list[str],
                                config: ZeroShotConfig) -> tuple[np.ndarray, list[str], list[str]]:
        """Validate a zero-shot request and preprocess its images: (uint8 pixels (N, H, W, 3), classes, templates)."""
        self._check_model(model)
        classes, templates = check_classes(classes), check_templates(config.templates)
        if not 1 <= len(images) <= settings.zero_shot_max_batch_images:
            raise ServiceError(400, "invalid_images",
                               f"Give 1 to {settings.zero_shot_max_batch_images} images; got {len(images)}.")
        cfg = self.zero_shot_cfgs[model]
        decoded = [decode_data_uri(uri) for uri in images]

        def prepare() -> np.ndarray:
            return np.stack([preprocess(decode_image(data, settings.max_image_pixels, draft_size(cfg)), cfg)
                             for data in decoded])

        return await anyio.to_thread.run_sync(prepare), classes, templates

    async def _infer_zero_shot(self, model: str, pixels: np.ndarray, classes: list[str],
                               templates: list[str]) -> np.ndarray:
        """Probabilities ``(N, C)`` from the runner's image embeddings and the class embeddings.

        Class embeddings depend only on (model, templates, classes), so a class list seen before is read from this
        worker's memo and costs no runner call (about 2 ms of the zero-shot path on the benchmark's 2-core box).
        """
        runner = self._zero_shot_runner(model)
        key = (tuple(templates), tuple(classes))
        calls = [self.gates[model].call(runner.to_async.embed_images, p[None]) for p in pixels]
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
        images = results
        scale = float(self.zero_shot_entries[model].info.metadata["logit_scale"])
        return probabilities(np.concatenate(images), texts, scale)

    async def _execute_job(self, job: Job, pixels: np.ndarray) -> dict[str, Any]:
        probs = await self._infer_zero_shot(job.model, pixels, job.classes, job.templates)
        return {"probabilities": probs.tolist() if job.batched else probs[0].tolist()}

    async def _submit(self, model: str, images: list[str], classes: list[str], config: ZeroShotConfig,
                      batched: bool) -> JobAccepted:
        pixels, classes, templates = await self._zero_shot_inputs(model, images, classes, config)
        if self.worker:
            job = await self.worker.submit(model, batched, pixels, classes, templates)
        else:
            job = await anyio.to_thread.run_sync(lambda: self.jobs.submit(model, batched, pixels, classes, templates))
        return JobAccepted(id=job.id, status=job.status)

    async def _status(self, job_id: str, wait: str | float | None = None) -> JobStatus:
        """The job's status; with ``wait`` seconds, held until the job is complete or failed, or the time is up."""
        try:
            uuid.UUID(job_id)
        except ValueError:
            raise ServiceError(404, "unknown_job", "Job ids are UUIDs as returned on submission.") from None
        job = await wait_until_final(self.jobs, job_id, check_wait(wait), self.worker)
        if job is None:
            raise ServiceError(404, "unknown_job", f"No job {job_id}; it never existed or its retention has passed.")
        return job_status(job)

    async def _models(self) -> dict[str, list[dict[str, Any]]]:
        """Each zero-shot model with its store entry, this worker's class-list memo counters and, when its runner
        answers, the runner's per-class text-cache counters."""
        models = []
        for name, entry in self.zero_shot_entries.items():
            item = {"id": name, **model_store.describe(entry), "architecture": entry.info.metadata["architecture"],
                    "pretrained": entry.info.metadata["pretrained"], "class_memo": self.class_memo[name].stats()}
            try:
                item["text_cache"] = (await self._zero_shot_runner(name).to_async.info())["cache"]
            except Exception:
                logger.warning("%s runner did not answer info()", name)
            models.append(item)
        return {"models": models}

    # REST routes (mounted under /api) ----------------------------------------------------------------------------

    @api.post(TASK + "/{model}/jobs", status_code=202, response_model=JobAccepted)
    async def rest_submit_job(self, model: str, request: Request) -> Response:
        """Submit one image: {"image": data URI, "classes": [...], "config": {"templates": [...]}}."""
        return await self._rest(lambda body: self._submit(model, [body.image], body.classes, body.config, False),
                                request, ZeroShotJobRequest, model, status=202)

    @api.post(TASK + "/{model}/batched/jobs", status_code=202, response_model=JobAccepted)
    async def rest_submit_batched_job(self, model: str, request: Request) -> Response:
        """Submit several images sharing classes and config: {"image": [data URIs], ...}."""
        return await self._rest(lambda body: self._submit(model, body.image, body.classes, body.config, True),
                                request, BatchedZeroShotJobRequest, model, status=202)

    @api.get(TASK + "/jobs/{job_id}", response_model=JobStatus)
    async def rest_job(self, job_id: str, wait: str | None = None) -> Response:
        """A job's status, with its result once complete; readable until its retention passes.

        ``?wait=S`` (0 to 30 s) holds the request until the job is complete or failed, so a client needs no
        polling loop; it answers with the current status when the time is up.
        """
        try:
            return JSONResponse((await self._status(job_id, wait)).model_dump(mode="json", exclude_none=True))
        except ServiceError as err:
            return err.to_response()

    @api.get(TASK + "/models")
    async def rest_models(self) -> dict[str, list[dict[str, Any]]]:
        """The zero-shot models this server runs."""
        return await self._models()

    async def _rest(self, submit, request: Request, schema: type[BaseModel], model: str, status: int) -> Response:
        try:
            self._check_model(model)
            try:
                body = schema.model_validate(json.loads(await request.body()))
            except json.JSONDecodeError as exc:
                raise ServiceError(400, "invalid_json", f"The body is not valid JSON: {exc.msg} at character {exc.pos}.")
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                where = ".".join(str(p) for p in first["loc"]) or "body"
                raise ServiceError(400, "invalid_request", f"{where}: {first['msg']} ({exc.error_count()} error(s)).")
            accepted = await submit(body)
        except ServiceError as err:
            return err.to_response()
        return JSONResponse(accepted.model_dump(), status_code=status)

    @staticmethod
    async def _pixels(image: bytes, ctx: bentoml.Context, cfg: PreprocessConfig) -> np.ndarray:
        """Decode and preprocess off the event loop; a batch of one uint8 image."""
        data = request_body(image, ctx)
        pixels = await anyio.to_thread.run_sync(
            lambda: preprocess(decode_image(data, settings.max_image_pixels, draft_size(cfg)), cfg))
        return pixels[None]

    @staticmethod
    async def _run(call: Awaitable[Any], model: str) -> Any:
        """Await a runner call; any failure becomes a 503 that names no internals."""
        try:
            return await call
        except Exception as exc:
            if is_overload(exc):
                raise overloaded(model) from None
            logger.exception("%s runner failed", model)
            raise ServiceError(503, "inference_failed", f"The {model} model failed; retry shortly.") from None

    @bentoml.api(route="/classify")
    async def classify(self, image: bytes, /, ctx: bentoml.Context) -> ClassifyResponse:
        """Top-k iNaturalist 2021 species for a JPEG, PNG or WebP sent as the raw request body.

        Query: ``top_k`` (1..10, default 3). The bytes decide the format; the Content-Type may be absent.
        """
        try:
            top_k = parse_top_k(ctx.request.query_params.get("top_k"))
            pixels = await self._pixels(image, ctx, self.species_cfg)
            (top,) = await self._run(self.gates["species"].call(self.species.to_async.predict, pixels), "species")
        except ServiceError as err:
            return _fail(ctx, err)
        _model_headers(ctx, self.species_info)
        return ClassifyResponse(
            predictions=[Prediction(species=s, score=p) for s, p in zip(top.labels[:top_k], top.scores[:top_k])],
            model=self.species_info,
        )

    @bentoml.api(route="/score")
    async def score(self, image: bytes, /, ctx: bentoml.Context) -> ScoreResponse:
        """LAION aesthetic score (0-10) for a JPEG, PNG or WebP sent as the raw request body."""
        try:
            pixels = await self._pixels(image, ctx, self.aesthetic_cfg)
            (raw,) = await self._run(self.gates["aesthetic"].call(self.aesthetic.to_async.score, pixels), "aesthetic")
        except ServiceError as err:
            return _fail(ctx, err)
        raw = float(raw)
        if not math.isfinite(raw):
            logger.error("aesthetic head returned %r", raw)
            return _fail(ctx, ServiceError(503, "inference_failed", "The aesthetic model failed; retry shortly."))
        _model_headers(ctx, self.aesthetic_info)
        return ScoreResponse(score=min(max(raw, SCORE_RANGE[0]), SCORE_RANGE[1]), raw=raw, model=self.aesthetic_info)


    # BentoML-native zero-shot APIs (for bentoml.SyncHTTPClient / AsyncHTTPClient) -----------------------------------

    @bentoml.api
    async def zero_shot(self, model: str, image: str, classes: list[str], config: ZeroShotConfig | None = None,
                        ctx: bentoml.Context = None) -> ZeroShotResult:
        """Probabilities for one image (data URI) right away, without a job."""
        try:
            pixels, classes, templates = await self._zero_shot_inputs(model, [image], classes, config or ZeroShotConfig())
            probs = await self._run(self._infer_zero_shot(model, pixels, classes, templates), "zero-shot")
        except ServiceError as err:
            return _fail(ctx, err)
        return ZeroShotResult(probabilities=probs[0].tolist())

    @bentoml.api
    async def submit_zero_shot(self, model: str, image: str, classes: list[str], config: ZeroShotConfig | None = None,
                               ctx: bentoml.Context = None) -> JobAccepted:
        """Submit a zero-shot job for one image (data URI); poll it with ``zero_shot_job``."""
        try:
            return await self._submit(model, [image], classes, config or ZeroShotConfig(), batched=False)
        except ServiceError as err:
            return _fail(ctx, err)

    @bentoml.api
    async def submit_zero_shot_batch(self, model: str, images: list[str], classes: list[str],
                                     config: ZeroShotConfig | None = None, ctx: bentoml.Context = None) -> JobAccepted:
        """Submit one job for several images sharing classes and config."""
        try:
            return await self._submit(model, images, classes, config or ZeroShotConfig(), batched=True)
        except ServiceError as err:
            return _fail(ctx, err)

    @bentoml.api
    async def zero_shot_job(self, id: str, wait: float = 0, ctx: bentoml.Context = None) -> JobStatus:  # noqa: A002
        """A job's status, and its result once complete; ``wait`` seconds (0-30) hold the call until it finishes."""
        try:
            return JSONResponse((await self._status(id, wait)).model_dump(mode="json", exclude_none=True))
        except ServiceError as err:
            return _fail(ctx, err)

    @bentoml.api
    async def zero_shot_models(self) -> dict[str, list[dict[str, Any]]]:
        """The zero-shot models this server runs."""
        return await self._models()


Gateway.add_asgi_middleware(RawImageBodyMiddleware, routes=("/classify", "/score"))
Gateway.add_asgi_middleware(GuardMiddleware, max_body_bytes=settings.max_body_bytes, api_key=settings.api_key or None,
                            max_in_flight=settings.gateway_max_concurrency)
