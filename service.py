"""HTTP gateway: decodes and validates input on the CPU, calls the model runners, shapes responses.

No weights load here; each model runs in its own BentoML service under ``runners/``.
"""

from __future__ import annotations

import logging

import anyio
import bentoml
from pydantic import BaseModel, Field
from starlette.responses import Response

from runners.species import SAVE_HINT as SPECIES_SAVE_HINT
from runners.species import SpeciesRunner
from serving import model_store
from serving.errors import ServiceError
from serving.imaging import PreprocessConfig, decode_image, preprocess
from serving.middleware import RawImageBodyMiddleware
from serving.settings import settings

logger = logging.getLogger(__name__)

MAX_TOP_K = 10


class Prediction(BaseModel):
    species: str = Field(description="Scientific name, e.g. 'Cardinalis cardinalis'")
    score: float = Field(ge=0, le=1, description="Softmax probability")


class ModelInfo(BaseModel):
    tag: str = Field(description="BentoML model store tag that produced the answer")
    variant: str = Field(description="'release' for real weights, 'dev' for tiny random test models")


class ClassifyResponse(BaseModel):
    predictions: list[Prediction]
    model: ModelInfo


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


@bentoml.service(name="VisionGateway", workers=settings.gateway_workers, traffic={"timeout": 120})
class Gateway:
    """Public API: POST /classify (raw image body)."""

    species = bentoml.depends(SpeciesRunner)
    species_model = bentoml.models.BentoModel(settings.species_model)  # read for preprocessing config only

    def __init__(self) -> None:
        stored = model_store.require(settings.species_model, SPECIES_SAVE_HINT)
        self.species_cfg = PreprocessConfig.model_validate(stored.info.metadata["preprocess"])
        self.species_info = ModelInfo(**model_store.describe(stored))

    @bentoml.api(route="/classify")
    async def classify(self, image: bytes, /, ctx: bentoml.Context) -> ClassifyResponse:
        """Top-k iNaturalist 2021 species for a JPEG, PNG or WebP sent as the raw request body.

        Query: ``top_k`` (1..10, default 3). The bytes decide the format; the Content-Type may be absent.
        """
        try:
            top_k = parse_top_k(ctx.request.query_params.get("top_k"))
            pixels = await anyio.to_thread.run_sync(self._prepare, request_body(image, ctx), self.species_cfg)
        except ServiceError as err:
            return _fail(ctx, err)
        try:
            result = await self.species.to_async.predict(pixels[None])
        except Exception:
            logger.exception("species runner failed")
            return _fail(ctx, ServiceError(503, "inference_failed", "The species model failed; retry shortly."))
        top = result[0]
        ctx.response.headers["X-Model-Tag"] = self.species_info.tag
        ctx.response.headers["X-Model-Variant"] = self.species_info.variant
        return ClassifyResponse(
            predictions=[Prediction(species=s, score=p) for s, p in zip(top.labels[:top_k], top.scores[:top_k])],
            model=self.species_info,
        )

    @staticmethod
    def _prepare(data: bytes, cfg: PreprocessConfig):
        return preprocess(decode_image(data, settings.max_image_pixels), cfg)


Gateway.add_asgi_middleware(RawImageBodyMiddleware, routes=("/classify",))
