"""Zero-shot jobs: submit image(s) and class names, get a job id, fetch the result; durable in the job store.

Holds the REST routes (``rest``, mounted under ``/api``) and the job handling behind them and behind the
gateway's BentoML job APIs.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import anyio
import bentoml
import numpy as np
from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse, Response

from capabilities.common import fail
from capabilities.zero_shot import ZeroShot
from serving.errors import ServiceError
from serving.jobs import COMPLETE, FAILED, Job, JobStore, JobWorker, wait_until_final
from serving.schemas import JobAccepted, JobStatus, ZeroShotResult
from serving.settings import settings
from serving.zero_shot import BatchedZeroShotJobRequest, ZeroShotConfig, ZeroShotJobRequest, check_wait

TASK = "/tasks/zero-shot-image-classification"
rest = FastAPI(title="Zero-shot image classification jobs")


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


class ZeroShotJobs:
    """Zero-shot requests as durable jobs: the store, this gateway worker's job runner, submission and status."""

    def __init__(self, zero_shot: ZeroShot) -> None:
        self.zero_shot = zero_shot
        self.store = JobStore(settings.job_store_path, settings.job_retention_s, settings.job_lease_s)
        self.store.init()
        self.worker: JobWorker | None = None

    def start(self) -> None:
        """Run queued and interrupted jobs in the background of this gateway worker (once the runners answer, so
        start-up does not burn job attempts)."""
        self.worker = JobWorker(self.store, self._execute, concurrency=settings.job_concurrency,
                                max_attempts=settings.job_max_attempts, ready=self.zero_shot.ready)
        self.worker.start()

    async def stop(self) -> None:
        if self.worker:
            await self.worker.stop()

    async def _execute(self, job: Job, pixels: np.ndarray) -> dict[str, Any]:
        probs = await self.zero_shot.infer(job.model, pixels, job.classes, job.templates)
        return {"probabilities": probs.tolist() if job.batched else probs[0].tolist()}

    async def submit(self, model: str, images: list[str], classes: list[str], config: ZeroShotConfig,
                     batched: bool) -> JobAccepted:
        pixels, classes, templates = await self.zero_shot.inputs(model, images, classes, config)
        if self.worker:
            job = await self.worker.submit(model, batched, pixels, classes, templates)
        else:
            job = await anyio.to_thread.run_sync(lambda: self.store.submit(model, batched, pixels, classes, templates))
        return JobAccepted(id=job.id, status=job.status)

    async def status(self, job_id: str, wait: str | float | None = None) -> JobStatus:
        """The job's status; with ``wait`` seconds, held until the job is complete or failed, or the time is up."""
        try:
            uuid.UUID(job_id)
        except ValueError:
            raise ServiceError(404, "unknown_job", "Job ids are UUIDs as returned on submission.") from None
        job = await wait_until_final(self.store, job_id, check_wait(wait), self.worker)
        if job is None:
            raise ServiceError(404, "unknown_job", f"No job {job_id}; it never existed or its retention has passed.")
        return job_status(job)

    # The BentoML APIs' bodies (for bentoml.SyncHTTPClient / AsyncHTTPClient) ------------------------------------

    async def submit_api(self, model: str, images: list[str], classes: list[str], config: ZeroShotConfig | None,
                         batched: bool, ctx: bentoml.Context) -> JobAccepted | Response:
        try:
            return await self.submit(model, images, classes, config or ZeroShotConfig(), batched)
        except ServiceError as err:
            return fail(ctx, err)

    async def status_api(self, job_id: str, wait: float, ctx: bentoml.Context) -> Response:
        try:
            return JSONResponse((await self.status(job_id, wait)).model_dump(mode="json", exclude_none=True))
        except ServiceError as err:
            return fail(ctx, err)


def current() -> ZeroShotJobs:
    """The serving gateway's jobs capability (for the REST routes)."""
    return bentoml.get_current_service().zero_shot_jobs


async def _json_body(request: Request, schema: type[BaseModel]) -> Any:
    try:
        return schema.model_validate(json.loads(await request.body()))
    except json.JSONDecodeError as exc:
        raise ServiceError(400, "invalid_json", f"The body is not valid JSON: {exc.msg} at character {exc.pos}.")
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ServiceError(400, "invalid_request", f"{where}: {first['msg']} ({exc.error_count()} error(s)).")


async def _rest_submit(jobs: ZeroShotJobs, model: str, request: Request, schema: type[BaseModel],
                       submit: Callable[[Any], Awaitable[JobAccepted]]) -> Response:
    try:
        jobs.zero_shot.check_model(model)
        accepted = await submit(await _json_body(request, schema))
    except ServiceError as err:
        return err.to_response()
    return JSONResponse(accepted.model_dump(), status_code=202)


@rest.post(TASK + "/{model}/jobs", status_code=202, response_model=JobAccepted)
async def rest_submit_job(model: str, request: Request, jobs: ZeroShotJobs = Depends(current)) -> Response:
    """Submit one image: {"image": data URI, "classes": [...], "config": {"templates": [...]}}."""
    return await _rest_submit(jobs, model, request, ZeroShotJobRequest,
                              lambda body: jobs.submit(model, [body.image], body.classes, body.config, False))


@rest.post(TASK + "/{model}/batched/jobs", status_code=202, response_model=JobAccepted)
async def rest_submit_batched_job(model: str, request: Request, jobs: ZeroShotJobs = Depends(current)) -> Response:
    """Submit several images sharing classes and config: {"image": [data URIs], ...}."""
    return await _rest_submit(jobs, model, request, BatchedZeroShotJobRequest,
                              lambda body: jobs.submit(model, body.image, body.classes, body.config, True))


@rest.get(TASK + "/jobs/{job_id}", response_model=JobStatus)
async def rest_job(job_id: str, wait: str | None = None, jobs: ZeroShotJobs = Depends(current)) -> Response:
    """A job's status, with its result once complete; readable until its retention passes.

    ``?wait=S`` (0 to 30 s) holds the request until the job is complete or failed, so a client needs no
    polling loop; it answers with the current status when the time is up.
    """
    try:
        return JSONResponse((await jobs.status(job_id, wait)).model_dump(mode="json", exclude_none=True))
    except ServiceError as err:
        return err.to_response()


@rest.get(TASK + "/models")
async def rest_models(jobs: ZeroShotJobs = Depends(current)) -> dict[str, list[dict[str, Any]]]:
    """The zero-shot models this server runs."""
    return await jobs.zero_shot.models()
