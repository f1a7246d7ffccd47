"""HTTP gateway: decodes and validates input on the CPU, calls the model runners, shapes responses.

No weights load here; each model runs in its own BentoML service under ``runners/``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Awaitable

import anyio
import bentoml
import numpy as np
from pydantic import BaseModel, Field
from starlette.responses import Response

from runners.aesthetic import SAVE_HINT as AESTHETIC_SAVE_HINT
from runners.aesthetic import AestheticRunner
from runners.species import SAVE_HINT as SPECIES_SAVE_HINT
from runners.species import SpeciesRunner
from serving import model_store
from serving.errors import ServiceError
from serving.imaging import PreprocessConfig, decode_image, preprocess
from serving.middleware import RawImageBodyMiddleware
from serving.settings import settings

logger = logging.getLogger(__name__)

MAX_TOP_K = 10
SCORE_RANGE = (0.0, 10.0)


class Prediction(BaseModel):
    species: str = Field(description="Scientific name, e.g. 'Cardinalis cardinalis'")
    score: float = Field(ge=0, le=1, description="Softmax probability")


class ModelInfo(BaseModel):
    tag: str = Field(description="BentoML model store tag that produced the answer")
    variant: str = Field(description="'release' for real weights, 'dev' for tiny random test models")


class ClassifyResponse(BaseModel):
    predictions: list[Prediction]
    model: ModelInfo


class ScoreModelInfo(ModelInfo):
    head: str = Field(description="Store tag of the LAION aesthetic head")


class ScoreResponse(BaseModel):
    score: float = Field(ge=0, le=10, description="LAION aesthetic rating, clamped to 0-10")
    raw: float = Field(description="The head's unclamped regression output")
    model: ScoreModelInfo


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


def _fail(ctx: bentoml.Context, err: ServiceError) -> Response:
    ctx.response.status_code = err.status  # BentoML copies ctx's status onto returned responses
    return err.to_response()


def _model_headers(ctx: bentoml.Context, info: ModelInfo) -> None:
    ctx.response.headers["X-Model-Tag"] = info.tag
    ctx.response.headers["X-Model-Variant"] = info.variant


@bentoml.service(name="VisionGateway", workers=settings.gateway_workers, traffic={"timeout": 120})
class Gateway:
    """Public API: POST /classify and POST /score (raw image bodies)."""

    species = bentoml.depends(SpeciesRunner)
    aesthetic = bentoml.depends(AestheticRunner)
    # Read for preprocessing configs only; the runners load the weights.
    species_model = bentoml.models.BentoModel(settings.species_model)
    aesthetic_clip_model = bentoml.models.BentoModel(settings.aesthetic_clip_model)

    def __init__(self) -> None:
        species = model_store.require(settings.species_model, SPECIES_SAVE_HINT)
        clip = model_store.require(settings.aesthetic_clip_model, AESTHETIC_SAVE_HINT)
        head = model_store.require(settings.aesthetic_head_model, AESTHETIC_SAVE_HINT)
        self.species_cfg = PreprocessConfig.model_validate(species.info.metadata["preprocess"])
        self.species_info = ModelInfo(**model_store.describe(species))
        self.aesthetic_cfg = PreprocessConfig.model_validate(clip.info.metadata["preprocess"])
        self.aesthetic_info = ScoreModelInfo(**model_store.describe(clip), head=str(head.tag))

    @staticmethod
    async def _pixels(image: bytes, ctx: bentoml.Context, cfg: PreprocessConfig) -> np.ndarray:
        """Decode and preprocess off the event loop; a batch of one uint8 image."""
        data = request_body(image, ctx)
        pixels = await anyio.to_thread.run_sync(lambda: preprocess(decode_image(data, settings.max_image_pixels), cfg))
        return pixels[None]

    @staticmethod
    async def _run(call: Awaitable[Any], model: str) -> Any:
        """Await a runner call; any failure becomes a 503 that names no internals."""
        try:
            return await call
        except Exception:
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
            (top,) = await self._run(self.species.to_async.predict(pixels), "species")
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
            (raw,) = await self._run(self.aesthetic.to_async.score(pixels), "aesthetic")
        except ServiceError as err:
            return _fail(ctx, err)
        raw = float(raw)
        if not math.isfinite(raw):
            logger.error("aesthetic head returned %r", raw)
            return _fail(ctx, ServiceError(503, "inference_failed", "The aesthetic model failed; retry shortly."))
        _model_headers(ctx, self.aesthetic_info)
        return ScoreResponse(score=min(max(raw, SCORE_RANGE[0]), SCORE_RANGE[1]), raw=raw, model=self.aesthetic_info)


Gateway.add_asgi_middleware(RawImageBodyMiddleware, routes=("/classify", "/score"))
