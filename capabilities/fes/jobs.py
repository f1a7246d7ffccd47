"""FES jobs: submit inputs for a task and a model, get a job id, fetch the result; durable in the job store.

One store and one job worker per gateway worker serve every task (:class:`capabilities.fes.Task`): zero-shot
classification, image and text embeddings. The job handling behind the REST routes (:mod:`capabilities.fes.rest`)
and the gateway's BentoML job APIs.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone
from typing import Any, Mapping

import anyio
import bentoml
import numpy as np
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

from capabilities.common import fail
from capabilities.fes.task import Task
from jobs import COMPLETE, FAILED, FINAL, RUNNING, Job, JobWorker, open_job_store, wait_until_final
from jobs import metrics as job_metrics
from serving.errors import ServiceError
from serving.schemas import JobAccepted, JobStatus
from serving.settings import settings
from capabilities.zero_shot.requests import check_wait


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat() if ts is not None else None


def _check_id(job_id: str) -> None:
    try:
        uuid.UUID(job_id)
    except ValueError:
        raise ServiceError(404, "unknown_job", "Job ids are UUIDs as returned on submission.") from None


def _unknown(job_id: str) -> ServiceError:
    return ServiceError(404, "unknown_job", f"No job {job_id}; it never existed or its retention has passed.")


class Jobs:
    """Requests of every task as durable jobs: the store, this gateway worker's job runner, submission and
    status. ``tasks``: FES task name -> its :class:`Task`."""

    def __init__(self, tasks: Mapping[str, Task]) -> None:
        self.tasks = dict(tasks)
        self.store = open_job_store(settings.job_store_url, retention_s=settings.job_retention_s,
                                    lease_s=settings.job_lease_s, pool_size=settings.job_store_pool_size,
                                    timeout_ms=settings.job_store_timeout_ms)
        self.store.init()
        self.worker: JobWorker | None = None

    def task(self, name: str) -> Task:
        """The task called ``name`` (snake case accepted), or a 404 that lists them."""
        task = self.tasks.get(name.replace("_", "-"))
        if task is None:
            raise ServiceError(404, "unknown_task", f"No task {name[:100]!r}; available: {', '.join(self.tasks)}.")
        return task

    def start(self) -> None:
        """Run queued and interrupted jobs in the background of this gateway worker (once the runners answer, so
        start-up does not burn job attempts)."""
        self.worker = JobWorker(self.store, self._execute, concurrency=settings.job_concurrency,
                                max_attempts=settings.job_max_attempts, ready=self._ready)
        self.worker.start()

    async def _ready(self) -> None:
        await asyncio.gather(*(task.ready() for task in dict.fromkeys(self.tasks.values())))

    async def stop(self) -> None:
        if self.worker:
            await self.worker.stop()
        await anyio.to_thread.run_sync(self.store.close)

    async def _execute(self, job: Job, inputs: np.ndarray) -> Any:
        return await self.task(job.task).execute(job, inputs)

    def view(self, job: Job, per_image: bool = False) -> JobStatus:
        """The public view of a job: result only when complete, error only when failed.

        ``per_image`` (the batched status route, as vitrivr's feature-extraction-server answers it): the result is a
        list with one item per input, in input order; otherwise a batched job's result holds a list per field.
        """
        result = self.task(job.task).view(job.result, job.batched, per_image) if job.status == COMPLETE else None
        return JobStatus(id=job.id, model=job.model, status=job.status, created_at=_iso(job.created_at),
                         result=result, error=job.error if job.status == FAILED else None,
                         expires_at=_iso(job.expires_at))

    async def submit(self, task: str, model: str, body: BaseModel, batched: bool) -> JobAccepted:
        """Validate and persist a job (its inputs preprocessed); its id."""
        the_task = self.task(task)
        model = the_task.check_model(model)
        inputs, classes, templates = await the_task.inputs(model, body, batched)
        if self.worker:
            job = await self.worker.submit(model, batched, inputs, classes, templates, task=the_task.name)
        else:
            job = await anyio.to_thread.run_sync(
                lambda: self.store.submit(model, batched, inputs, classes, templates, task=the_task.name))
        return JobAccepted(id=job.id, status=job.status)

    async def status(self, job_id: str, wait: str | float | None = None, per_image: bool = False) -> JobStatus:
        """The job's status; with ``wait`` seconds, held until the job is finished, or the time is up."""
        _check_id(job_id)
        job = await wait_until_final(self.store, job_id, check_wait(wait), self.worker)
        if job is None:
            raise _unknown(job_id)
        return self.view(job, per_image)

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
        return (202 if before == RUNNING else 200), self.view(job)

    async def unfinished(self, model: str) -> list[dict[str, str]]:
        """The model's queued and running jobs (of every task), oldest first."""
        rows = await anyio.to_thread.run_sync(self.store.unfinished, model)
        return [{"id": job_id, "status": status} for job_id, status in rows]

    # The BentoML APIs' bodies (for bentoml.SyncHTTPClient / AsyncHTTPClient) ------------------------------------

    async def submit_api(self, task: str, model: str, body: BaseModel, batched: bool,
                         ctx: bentoml.Context) -> JobAccepted | Response:
        try:
            return await self.submit(task, model, body, batched)
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
