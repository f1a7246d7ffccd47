"""Zero-shot jobs: submit image(s) and class names, get a job id, fetch the result; durable in the job store.

The job handling behind the REST routes (:mod:`capabilities.zero_shot_rest`) and the gateway's BentoML job APIs.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import anyio
import bentoml
import numpy as np
from starlette.responses import JSONResponse, Response

from capabilities.common import fail
from capabilities.zero_shot.inference import ZeroShot
from capabilities.zero_shot.requests import ZeroShotConfig, check_wait
from jobs import COMPLETE, FAILED, FINAL, RUNNING, Job, JobWorker, open_job_store, wait_until_final
from jobs import metrics as job_metrics
from serving.errors import ServiceError
from serving.schemas import JobAccepted, JobStatus, ZeroShotResult
from serving.settings import settings


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat() if ts is not None else None


def job_status(job: Job, per_image: bool = False) -> JobStatus:
    """The public view of a job: result only when complete, error only when failed.

    ``per_image`` (the batched status route, as vitrivr's feature-extraction-server answers it): the result is a
    list of ``{"probabilities": [...]}``, one per image in image order. Otherwise a batched job's result is
    ``{"probabilities": [[...], ...]}``.
    """
    result: ZeroShotResult | list[ZeroShotResult] | None = None
    if job.status == COMPLETE:
        probs = job.result["probabilities"]
        if per_image:
            result = [ZeroShotResult(probabilities=p) for p in (probs if job.batched else [probs])]
        else:
            result = ZeroShotResult(probabilities=probs)
    return JobStatus(id=job.id, model=job.model, status=job.status, created_at=_iso(job.created_at), result=result,
                     error=job.error if job.status == FAILED else None, expires_at=_iso(job.expires_at))


def _check_id(job_id: str) -> None:
    try:
        uuid.UUID(job_id)
    except ValueError:
        raise ServiceError(404, "unknown_job", "Job ids are UUIDs as returned on submission.") from None


def _unknown(job_id: str) -> ServiceError:
    return ServiceError(404, "unknown_job", f"No job {job_id}; it never existed or its retention has passed.")


class ZeroShotJobs:
    """Zero-shot requests as durable jobs: the store, this gateway worker's job runner, submission and status."""

    def __init__(self, zero_shot: ZeroShot) -> None:
        self.zero_shot = zero_shot
        self.store = open_job_store(settings.job_store_url, retention_s=settings.job_retention_s,
                                    lease_s=settings.job_lease_s, pool_size=settings.job_store_pool_size,
                                    timeout_ms=settings.job_store_timeout_ms)
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
        await anyio.to_thread.run_sync(self.store.close)

    async def _execute(self, job: Job, pixels: np.ndarray) -> dict[str, Any]:
        probs = await self.zero_shot.infer(job.model, pixels, job.classes, job.templates)
        return {"probabilities": probs.tolist() if job.batched else probs[0].tolist()}

    async def submit(self, model: str, images: list[str], classes: list[str], config: ZeroShotConfig,
                     batched: bool) -> JobAccepted:
        model = self.zero_shot.check_model(model)
        pixels, classes, templates = await self.zero_shot.inputs(model, images, classes, config)
        if self.worker:
            job = await self.worker.submit(model, batched, pixels, classes, templates)
        else:
            job = await anyio.to_thread.run_sync(lambda: self.store.submit(model, batched, pixels, classes, templates))
        return JobAccepted(id=job.id, status=job.status)

    async def status(self, job_id: str, wait: str | float | None = None, per_image: bool = False) -> JobStatus:
        """The job's status; with ``wait`` seconds, held until the job is finished, or the time is up."""
        _check_id(job_id)
        job = await wait_until_final(self.store, job_id, check_wait(wait), self.worker)
        if job is None:
            raise _unknown(job_id)
        return job_status(job, per_image)

    async def cancel(self, job_id: str) -> tuple[int, JobStatus]:
        """(HTTP status, job): 200 and ``cancelled`` for a queued job; 202 and ``running`` for a running one, which
        becomes ``cancelled`` when its current runner call returns. A finished job is 409, an unknown one 404."""
        _check_id(job_id)
        found = await anyio.to_thread.run_sync(self.store.cancel, job_id)
        if found is None:
            raise _unknown(job_id)
        before, job = found
        if before in FINAL:
            raise ServiceError(409, "job_finished", f"Job {job_id} is already {before}; only queued or running jobs "
                                                    "can be cancelled.")
        job_metrics.cancelled("running" if before == RUNNING else "queued")
        return (202 if before == RUNNING else 200), job_status(job)

    async def unfinished(self, model: str) -> list[dict[str, str]]:
        """The model's queued and running jobs, oldest first."""
        rows = await anyio.to_thread.run_sync(self.store.unfinished, model)
        return [{"id": job_id, "status": status} for job_id, status in rows]

    # The BentoML APIs' bodies (for bentoml.SyncHTTPClient / AsyncHTTPClient) ------------------------------------

    async def submit_api(self, model: str, images: list[str], classes: list[str], config: ZeroShotConfig | None,
                         batched: bool, ctx: bentoml.Context) -> JobAccepted | Response:
        try:
            return await self.submit(model, images, classes, config or ZeroShotConfig(), batched)
        except ServiceError as err:
            return fail(ctx, err)

    async def cancel_api(self, job_id: str, ctx: bentoml.Context) -> Response:
        try:
            status, job = await self.cancel(job_id)
        except ServiceError as err:
            return fail(ctx, err)
        ctx.response.status_code = status
        return JSONResponse(job.model_dump(mode="json", exclude_none=True), status_code=status)

    async def status_api(self, job_id: str, wait: float, ctx: bentoml.Context) -> Response:
        try:
            return JSONResponse((await self.status(job_id, wait)).model_dump(mode="json", exclude_none=True))
        except ServiceError as err:
            return fail(ctx, err)
