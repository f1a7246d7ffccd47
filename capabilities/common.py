"""Request helpers shared by the capabilities: raw bodies, runner calls, error answers, model headers."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Awaitable, Callable

import anyio
import bentoml
import numpy as np
from starlette.responses import Response

from serving.errors import ServiceError, is_overload, overloaded
from serving.imaging import PreprocessConfig, prepare
from serving.schemas import ErrorBody, ModelInfo
from serving.settings import settings

logger = logging.getLogger(__name__)

Runners = Callable[[str], Any]  # a catalog key ("species", "aesthetic", "zero_shot_l14", ...) -> its runner client


def request_body(image: bytes, ctx: bentoml.Context) -> bytes:
    """The raw body; BentoML hands an empty body over as ``b"{}"``, so the header tells them apart."""
    if image == b"{}" and ctx.request.headers.get("content-length", "0") == "0":
        return b""
    return image


def fail(ctx: bentoml.Context, err: ServiceError) -> Response:
    """The error answer of a BentoML API; BentoML copies ctx's status onto returned responses."""
    ctx.response.status_code = err.status
    return err.to_response()


def model_headers(ctx: bentoml.Context, info: ModelInfo) -> None:
    ctx.response.headers["X-Model-Tag"] = info.tag
    ctx.response.headers["X-Model-Variant"] = info.variant
    if info.precision:
        ctx.response.headers["X-Model-Precision"] = info.precision
    if info.engine:
        ctx.response.headers["X-Model-Engine"] = info.engine


class RunnerFacts:
    """What each runner says of itself in ``info()`` (engine, device, precision), asked once per gateway worker
    and kept once it has answered."""

    def __init__(self, runners: Runners) -> None:
        self._runners, self._known = runners, {}

    async def of(self, key: str) -> dict[str, Any]:
        """What runner ``key`` says of itself, or nothing while it does not say (not ready, or a test's fake)."""
        if key not in self._known:
            try:
                self._known[key] = dict(await self._runners(key).to_async.info())
            except Exception:  # noqa: BLE001 (asked again with the next answer)
                return {}
        return self._known[key]

    async def with_precision(self, info: ModelInfo, key: str) -> ModelInfo:
        """``info`` with the engine and the precision runner ``key`` runs in."""
        facts = await self.of(key)
        return info.model_copy(update={"precision": facts.get("precision"), "engine": facts.get("engine")})


async def answers(runner: Any) -> bool:
    """Whether a runner answers ``info()`` (it is up)."""
    try:
        await runner.to_async.info()
    except Exception:  # noqa: BLE001 (starting, or gone)
        return False
    return True


async def until_answering(runners: list[Any]) -> None:
    """Return once every runner answers, asking each again every second."""
    for runner in runners:
        while not await answers(runner):
            await asyncio.sleep(1)


async def image_batch(data: bytes, cfg: PreprocessConfig) -> np.ndarray:
    """Decode and preprocess off the event loop: a batch of one uint8 image ``(1, H, W, 3)``."""
    pixels = await anyio.to_thread.run_sync(lambda: prepare(data, cfg, settings.max_image_pixels))
    return pixels[None]


async def uploaded(images: list[Path]) -> list[bytes]:
    """The files of a multipart batch request, checked in number against ``MAX_BATCH_IMAGES``."""
    if not 1 <= len(images) <= settings.max_batch_images:
        raise ServiceError(400, "invalid_images", f"Send 1 to {settings.max_batch_images} images in the form field "
                           f"'images'; got {len(images)}. The limit is the MAX_BATCH_IMAGES setting.")
    return await anyio.to_thread.run_sync(lambda: [Path(p).read_bytes() for p in images])


async def decoded_batches(images: list[bytes],
                          decode: Callable[[bytes], Awaitable[Any]]) -> tuple[list[Any], list[ServiceError | None]]:
    """``decode`` each image concurrently: (the decoded good ones, in order; per image its error, or None when it
    is among the good ones)."""
    async def one(data: bytes) -> Any:
        try:
            return await decode(data)
        except ServiceError as err:
            return err

    decoded = await asyncio.gather(*(one(data) for data in images))
    return [d for d in decoded if not isinstance(d, ServiceError)], [
        d if isinstance(d, ServiceError) else None for d in decoded]


async def image_batches(images: list[bytes],
                        cfg: PreprocessConfig) -> tuple[np.ndarray | None, list[ServiceError | None]]:
    """Decode and preprocess each image off the event loop, concurrently: (the good ones stacked in order, or
    None; per image its error, or None when it is in the stack)."""
    good, errors = await decoded_batches(images, lambda data: image_batch(data, cfg))
    return (np.concatenate(good) if good else None), errors


def in_slots(answers: list[Any], errors: list[ServiceError | None]) -> list[Any]:
    """The runner's answers for the good images and the errors of the others, back in request order."""
    if len(answers) != errors.count(None):
        raise ServiceError(503, "inference_failed", "The model answered for the wrong number of images; retry.")
    it = iter(answers)
    return [ErrorBody(error=e.error, detail=e.detail) if e else next(it) for e in errors]


async def answer_batch(images: list[Path], decode: Callable[[bytes], Awaitable[Any]],
                       infer: Callable[[list[Any]], Awaitable[list[Any]]],
                       answer: Callable[[Any, Any], Any]) -> list[Any]:
    """A multipart batch request's results in request order: ``answer(output, decoded)`` of each output of one
    ``infer`` call on the good images (as ``decode`` gave them), or the error of a bad one."""
    good, errors = await decoded_batches(await uploaded(images), decode)
    outputs = await infer(good) if good else []
    return in_slots([answer(output, item) for output, item in zip(outputs, good)], errors)


async def run_model(call: Awaitable[Any], model: str) -> Any:
    """Await a runner call; any failure becomes a 503 that names no internals."""
    try:
        return await call
    except Exception as exc:
        if is_overload(exc):
            raise overloaded(model) from None
        logger.exception("%s runner failed", model)
        raise ServiceError(503, "inference_failed", f"The {model} model failed; retry shortly.") from None


async def gather_or_cancel(calls: list[Awaitable[Any]]) -> list[Any]:
    """Results of all calls, in order; when one fails (e.g. shed), the others are cancelled, not left running."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
