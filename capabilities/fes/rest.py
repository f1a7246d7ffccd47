"""REST routes of the FES jobs, mounted under ``/api``, in the layout of vitrivr's feature-extraction-server
(FES, base_api and legacy_api at 0cde687a), so its clients (vitrivr-engine's FES module, FES's own tests) work
unchanged, for every task of :class:`capabilities.fes.Jobs`. Where this service deliberately differs from FES (404
for unknown jobs, results re-readable until retention, ``{"error", "detail"}`` 400s, the models' learned logit
scale), the README says so.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse, Response

from capabilities.fes.jobs import Jobs
from serving.errors import ServiceError, field_path
from serving.schemas import JobAccepted, JobStatus

rest = FastAPI(title="Feature-extraction jobs (vitrivr feature-extraction-server layout): zero-shot image "
                     "classification, image and text embeddings")


@rest.exception_handler(ServiceError)
async def _service_error(request: Request, err: ServiceError) -> Response:
    """A ServiceError raised outside a route's own handling (e.g. by a dependency) keeps its status and body."""
    return err.to_response()


def bind(jobs: Jobs) -> None:
    """Serve ``jobs`` (this gateway worker's) on these routes."""
    rest.state.jobs = jobs


def current() -> Jobs:
    """The jobs capability bound by the composing service."""
    jobs = getattr(rest.state, "jobs", None)
    if jobs is None:
        raise ServiceError(503, "starting", "The jobs are not ready yet; retry shortly.")
    return jobs


def _json(payload: Any, status: int = 200) -> Response:
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json", exclude_none=True)
    elif isinstance(payload, list):
        payload = [p.model_dump(mode="json", exclude_none=True) if isinstance(p, BaseModel) else p for p in payload]
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
    except UnicodeDecodeError:
        raise ServiceError(400, "invalid_json", "The body is not JSON: send UTF-8 JSON with an image as a data URI, "
                                                "not the image's bytes or a form.") from None
    except RecursionError:
        raise ServiceError(400, "invalid_json", "The body's JSON is nested too deeply.") from None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise ServiceError(400, "invalid_request",
                           f"{field_path(first['loc'])}: {first['msg']} ({exc.error_count()} error(s)).")
    except ValueError as exc:  # a number too long to convert, and the like
        raise ServiceError(400, "invalid_json", f"The body's JSON cannot be read: {str(exc)[:200]}.") from None


async def _submit(jobs: Jobs, task: str, model: str, request: Request, batched: bool) -> JobAccepted:
    the_task = jobs.task(task)
    the_task.check_model(model)
    body = await _body(request, the_task.request(batched))
    return await jobs.submit(task, model, body, batched)


async def _status(task: str, job_id: str, wait: str | None, jobs: Jobs, per_image: bool) -> JobStatus:
    jobs.task(task)
    return await jobs.status(job_id, wait, per_image)


def _model_tasks(jobs: Jobs, model: str) -> list[str]:
    """The tasks ``model`` runs, or a 404 that lists the models."""
    name = model.replace("_", "-")
    tasks = [t.name for t in jobs.tasks.values() if name in t.models()]
    if not tasks:
        every = dict.fromkeys(m for t in jobs.tasks.values() for m in t.models())
        raise ServiceError(404, "unknown_model", f"No model {model[:100]!r}; available: {', '.join(every)}.")
    return tasks


# Listings -----------------------------------------------------------------------------------------------------

@rest.get("/tasks")
async def list_tasks(jobs: Jobs = Depends(current)) -> list[str]:
    """The tasks this server runs."""
    return list(jobs.tasks)


@rest.get("/tasks/{task}/models")
async def list_task_models(task: str, jobs: Jobs = Depends(current)) -> Response:
    """The models that run ``task``."""
    async def work() -> list[str]:
        return jobs.task(task).models()

    return await _answer(work)


@rest.get("/models")
async def list_models(jobs: Jobs = Depends(current)) -> list[str]:
    """Every model this server runs a task with."""
    return list(dict.fromkeys(m for t in jobs.tasks.values() for m in t.models()))


@rest.get("/models/{model}/tasks")
async def list_model_tasks(model: str, jobs: Jobs = Depends(current)) -> Response:
    """The tasks ``model`` runs."""
    async def work() -> list[str]:
        return _model_tasks(jobs, model)

    return await _answer(work)


@rest.get("/models/{model}/status")
async def model_status(model: str, jobs: Jobs = Depends(current)) -> Response:
    """``{"status": "running" | "starting", "jobs": [{"id", "status"}]}``: the runner's state and the model's
    queued and running jobs (of every task)."""
    async def work() -> dict[str, Any]:
        task = jobs.task(_model_tasks(jobs, model)[0])
        name = task.check_model(model)
        return {"status": await task.runner_state(name), "jobs": await jobs.unfinished(name)}

    return await _answer(work)


@rest.get("/tasks/{task}/models/details")
async def model_details(task: str, jobs: Jobs = Depends(current)) -> Response:
    """This service's own listing: each model's store tag, variant, architecture, and the caches' counters."""
    async def work() -> dict[str, Any]:
        return await jobs.task(task).details()

    return await _answer(work)


# Jobs ---------------------------------------------------------------------------------------------------------

@rest.post("/tasks/{task}/{model}/jobs", response_model=JobAccepted)
async def submit_job(task: str, model: str, request: Request, jobs: Jobs = Depends(current)) -> Response:
    """Submit one input: ``{"image": data URI or base64, "classes": [...], "config": {...}}`` for zero-shot,
    ``{"image": ...}`` or ``{"text": "..."}`` for the embedding tasks (200, as FES)."""
    return await _answer(lambda: _submit(jobs, task, model, request, batched=False))


@rest.post("/tasks/{task}/batched/{model}/jobs", response_model=JobAccepted)
async def submit_batched_job(task: str, model: str, request: Request, jobs: Jobs = Depends(current)) -> Response:
    """Submit several inputs in one job: ``{"image": [...], ...}`` or ``{"text": [...]}`` (200, as FES)."""
    return await _answer(lambda: _submit(jobs, task, model, request, batched=True))


@rest.get("/tasks/{task}/jobs/{job_id}", response_model=JobStatus)
async def job(task: str, job_id: str, wait: str | None = None, jobs: Jobs = Depends(current)) -> Response:
    """A job's status, with its result once complete; readable until its retention passes. ``?wait=S`` (0 to
    30 s) holds the request until the job is complete or failed."""
    return await _answer(lambda: _status(task, job_id, wait, jobs, per_image=False))


@rest.get("/tasks/{task}/batched/jobs/{job_id}", response_model=JobStatus)
async def batched_job(task: str, job_id: str, wait: str | None = None, jobs: Jobs = Depends(current)) -> Response:
    """A batched job's status; its result is a list, one item per input (``{"probabilities"}``,
    ``{"embedding"}``)."""
    return await _answer(lambda: _status(task, job_id, wait, jobs, per_image=True))


async def _cancel(task: str, job_id: str, jobs: Jobs) -> Response:
    try:
        jobs.task(task)
        status, job = await jobs.cancel(job_id)
    except ServiceError as err:
        return err.to_response()
    return _json(job, status)


@rest.delete("/tasks/{task}/jobs/{job_id}", response_model=JobStatus)
async def cancel_job(task: str, job_id: str, jobs: Jobs = Depends(current)) -> Response:
    """Cancel a job: a queued one at once (200, ``cancelled``); a running one when its current runner call returns
    (202, ``running``; its result is never written). A finished job is 409."""
    return await _cancel(task, job_id, jobs)


@rest.delete("/tasks/{task}/batched/jobs/{job_id}", response_model=JobStatus)
async def cancel_batched_job(task: str, job_id: str, jobs: Jobs = Depends(current)) -> Response:
    """Cancel a batched job (as ``DELETE .../jobs/{id}``)."""
    return await _cancel(task, job_id, jobs)


@rest.post("/legacy/tasks/{task}/{model}/jobs")
async def legacy_job(task: str, model: str, request: Request, jobs: Jobs = Depends(current)) -> Response:
    """FES's blocking legacy route: one input in, its result out (``{"probabilities"}``, ``{"embedding"}``), no
    job."""
    async def work() -> BaseModel:
        the_task = jobs.task(task)
        name = the_task.check_model(model)
        return await the_task.now(name, await _body(request, the_task.request(False)))

    return await _answer(work)


@rest.post("/tasks/{task}/{model}/batched/jobs", response_model=JobAccepted, status_code=202, deprecated=True)
async def submit_batched_job_deprecated(task: str, model: str, request: Request,
                                        jobs: Jobs = Depends(current)) -> Response:
    """Deprecated (one release): the batched submit route before the FES layout; use ``/batched/{model}/jobs``."""
    return await _answer(lambda: _submit(jobs, task, model, request, batched=True), status=202)
