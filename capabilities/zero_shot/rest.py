"""REST routes of the zero-shot jobs, mounted under ``/api``, in the layout of vitrivr's feature-extraction-server
(FES, base_api and legacy_api at 0cde687a), so its clients (vitrivr-engine's FES module, FES's own tests) work
unchanged. Where this service deliberately differs from FES (404 for unknown jobs, results re-readable until
retention, ``{"error", "detail"}`` 400s, the models' learned logit scale), the README says so.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse, Response

from capabilities.zero_shot.inference import MODELS
from capabilities.zero_shot.jobs import ZeroShotJobs
from serving.errors import ServiceError
from serving.schemas import JobAccepted, JobStatus, ZeroShotResult
from capabilities.zero_shot.requests import BatchedZeroShotJobRequest, ZeroShotJobRequest

TASK = "zero-shot-image-classification"
rest = FastAPI(title="Zero-shot image classification jobs (vitrivr feature-extraction-server layout)")


@rest.exception_handler(ServiceError)
async def _service_error(request: Request, err: ServiceError) -> Response:
    """A ServiceError raised outside a route's own handling (e.g. by a dependency) keeps its status and body."""
    return err.to_response()


def bind(jobs: ZeroShotJobs) -> None:
    """Serve ``jobs`` (this gateway worker's) on these routes."""
    rest.state.jobs = jobs


def current() -> ZeroShotJobs:
    """The jobs capability bound by the composing service."""
    jobs = getattr(rest.state, "jobs", None)
    if jobs is None:
        raise ServiceError(503, "starting", "The zero-shot jobs are not ready yet; retry shortly.")
    return jobs


def check_task(task: str) -> None:
    if task.replace("_", "-") != TASK:
        raise ServiceError(404, "unknown_task", f"No task {task[:100]!r}; available: {TASK}.")


def _json(payload: Any, status: int = 200) -> Response:
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json", exclude_none=True)
    return JSONResponse(payload, status_code=status)


async def _answer(work: Callable[[], Awaitable[Any]], status: int = 200) -> Response:
    try:
        return _json(await work(), status)
    except ServiceError as err:
        return err.to_response()


async def _body(request: Request, schema: type[BaseModel]) -> Any:
    try:
        return schema.model_validate(json.loads(await request.body()))
    except json.JSONDecodeError as exc:
        raise ServiceError(400, "invalid_json", f"The body is not valid JSON: {exc.msg} at character {exc.pos}.")
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ServiceError(400, "invalid_request", f"{where}: {first['msg']} ({exc.error_count()} error(s)).")


async def _submit(jobs: ZeroShotJobs, task: str, model: str, request: Request, batched: bool) -> JobAccepted:
    check_task(task)
    jobs.zero_shot.check_model(model)
    body = await _body(request, BatchedZeroShotJobRequest if batched else ZeroShotJobRequest)
    images = body.image if batched else [body.image]
    return await jobs.submit(model, images, body.classes, body.config, batched)


async def _status(task: str, job_id: str, wait: str | None, jobs: ZeroShotJobs, per_image: bool) -> JobStatus:
    check_task(task)
    return await jobs.status(job_id, wait, per_image)


async def _checked(check: Callable[[str], Any], value: str, answer: Any) -> Any:
    """``answer`` once ``check(value)`` has passed (it raises ServiceError otherwise)."""
    check(value)
    return answer


# Listings -----------------------------------------------------------------------------------------------------

@rest.get("/tasks")
async def list_tasks() -> list[str]:
    """The tasks this server runs."""
    return [TASK]


@rest.get("/tasks/{task}/models")
async def list_task_models(task: str) -> Response:
    """The models that run ``task``."""
    return await _answer(lambda: _checked(check_task, task, list(MODELS)))


@rest.get("/models")
async def list_models() -> list[str]:
    """Every model this server runs."""
    return list(MODELS)


@rest.get("/models/{model}/tasks")
async def list_model_tasks(model: str, jobs: ZeroShotJobs = Depends(current)) -> Response:
    """The tasks ``model`` runs."""
    return await _answer(lambda: _checked(jobs.zero_shot.check_model, model, [TASK]))


@rest.get("/models/{model}/status")
async def model_status(model: str, jobs: ZeroShotJobs = Depends(current)) -> Response:
    """``{"status": "running" | "starting", "jobs": [{"id", "status"}]}``: the runner's state and the model's
    queued and running jobs."""
    async def work() -> dict[str, Any]:
        name = jobs.zero_shot.check_model(model)
        return {"status": await jobs.zero_shot.runner_state(name), "jobs": await jobs.unfinished(name)}

    return await _answer(work)


@rest.get("/tasks/{task}/models/details")
async def model_details(task: str, jobs: ZeroShotJobs = Depends(current)) -> Response:
    """This service's own listing: each model's store tag, variant, architecture, and the caches' counters."""
    async def work() -> dict[str, Any]:
        check_task(task)
        return await jobs.zero_shot.models()

    return await _answer(work)


# Jobs ---------------------------------------------------------------------------------------------------------

@rest.post("/tasks/{task}/{model}/jobs", response_model=JobAccepted)
async def submit_job(task: str, model: str, request: Request, jobs: ZeroShotJobs = Depends(current)) -> Response:
    """Submit one image: ``{"image": data URI or base64, "classes": [...], "config": {...}}`` (200, as FES)."""
    return await _answer(lambda: _submit(jobs, task, model, request, batched=False))


@rest.post("/tasks/{task}/batched/{model}/jobs", response_model=JobAccepted)
async def submit_batched_job(task: str, model: str, request: Request,
                             jobs: ZeroShotJobs = Depends(current)) -> Response:
    """Submit several images sharing classes and config: ``{"image": [...], "classes": [...]}`` (200, as FES)."""
    return await _answer(lambda: _submit(jobs, task, model, request, batched=True))


@rest.get("/tasks/{task}/jobs/{job_id}", response_model=JobStatus)
async def job(task: str, job_id: str, wait: str | None = None, jobs: ZeroShotJobs = Depends(current)) -> Response:
    """A job's status, with its result once complete; readable until its retention passes. ``?wait=S`` (0 to
    30 s) holds the request until the job is complete or failed."""
    return await _answer(lambda: _status(task, job_id, wait, jobs, per_image=False))


@rest.get("/tasks/{task}/batched/jobs/{job_id}", response_model=JobStatus)
async def batched_job(task: str, job_id: str, wait: str | None = None,
                      jobs: ZeroShotJobs = Depends(current)) -> Response:
    """A batched job's status; its result is a list of ``{"probabilities": [...]}``, one per image."""
    return await _answer(lambda: _status(task, job_id, wait, jobs, per_image=True))


async def _cancel(task: str, job_id: str, jobs: ZeroShotJobs) -> Response:
    try:
        check_task(task)
        status, job = await jobs.cancel(job_id)
    except ServiceError as err:
        return err.to_response()
    return _json(job, status)


@rest.delete("/tasks/{task}/jobs/{job_id}", response_model=JobStatus)
async def cancel_job(task: str, job_id: str, jobs: ZeroShotJobs = Depends(current)) -> Response:
    """Cancel a job: a queued one at once (200, ``cancelled``); a running one when its current runner call returns
    (202, ``running``; its result is never written). A finished job is 409."""
    return await _cancel(task, job_id, jobs)


@rest.delete("/tasks/{task}/batched/jobs/{job_id}", response_model=JobStatus)
async def cancel_batched_job(task: str, job_id: str, jobs: ZeroShotJobs = Depends(current)) -> Response:
    """Cancel a batched job (as ``DELETE .../jobs/{id}``)."""
    return await _cancel(task, job_id, jobs)


@rest.post("/legacy/tasks/{task}/{model}/jobs", response_model=ZeroShotResult)
async def legacy_job(task: str, model: str, request: Request, jobs: ZeroShotJobs = Depends(current)) -> Response:
    """FES's blocking legacy route: one image in, ``{"probabilities": [...]}`` out, no job."""
    async def work() -> ZeroShotResult:
        check_task(task)
        jobs.zero_shot.check_model(model)
        body = await _body(request, ZeroShotJobRequest)
        return await jobs.zero_shot.now(model, body.image, body.classes, body.config)

    return await _answer(work)


@rest.post("/tasks/{task}/{model}/batched/jobs", response_model=JobAccepted, status_code=202, deprecated=True)
async def submit_batched_job_deprecated(task: str, model: str, request: Request,
                                        jobs: ZeroShotJobs = Depends(current)) -> Response:
    """Deprecated (one release): the batched submit route before the FES layout; use ``/batched/{model}/jobs``."""
    return await _answer(lambda: _submit(jobs, task, model, request, batched=True), status=202)
