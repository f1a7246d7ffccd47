"""Species classification: ``POST /classify``, top-k iNaturalist 2021 species for a raw image body, and
``POST /classify/batch`` for several images at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import bentoml
import numpy as np
from starlette.responses import Response

from capabilities.common import answer_batch, fail, image_batch, model_headers, request_body, run_model
from runners.species import SAVE_HINT
from serving import model_store
from serving.admission import RunnerGate
from serving.errors import ServiceError
from serving.imaging import PreprocessConfig
from serving.schemas import ClassifyBatchResponse, ClassifyResponse, ModelInfo, Prediction
from serving.settings import settings

MAX_TOP_K = 10


def parse_top_k(raw: str | None) -> int:
    """The ``top_k`` query parameter: an integer 1..10, default 3."""
    if raw is None:
        return 3
    if not raw.strip().isdigit() or not 1 <= int(raw) <= MAX_TOP_K:
        raise ServiceError(400, "invalid_parameter", f"top_k must be an integer from 1 to {MAX_TOP_K}; got {raw!r}.")
    return int(raw)


class Species:
    """Decodes and preprocesses for the species runner and shapes its answer.

    ``runner`` returns the runner client when called and ``gates["species"]`` admits calls to it; both are read at
    call time, so the composing service (or a test) may swap them.
    """

    def __init__(self, runner: Callable[[], Any], gates: Mapping[str, RunnerGate]) -> None:
        entry = model_store.require(settings.species_model, SAVE_HINT)
        self.cfg = PreprocessConfig.model_validate(entry.info.metadata["preprocess"])
        self.info = ModelInfo(**model_store.describe(entry))
        self._runner, self._gates = runner, gates

    async def _predict(self, pixels: np.ndarray) -> list[Any]:
        """One runner call for the whole batch."""
        return await run_model(self._gates["species"].call(self._runner().to_async.predict, pixels), "species")

    def _answer(self, top: Any, top_k: int) -> ClassifyResponse:
        return ClassifyResponse(predictions=[Prediction(species=s, label=s, score=p)
                                             for s, p in zip(top.labels[:top_k], top.scores[:top_k])],
                                model=self.info)

    async def classify(self, image: bytes, ctx: bentoml.Context) -> ClassifyResponse | Response:
        try:
            top_k = parse_top_k(ctx.request.query_params.get("top_k"))
            (top,) = await self._predict(await image_batch(request_body(image, ctx), self.cfg))
        except ServiceError as err:
            return fail(ctx, err)
        model_headers(ctx, self.info)
        return self._answer(top, top_k)

    async def classify_batch(self, images: list[Path], top_k: int | None,
                             ctx: bentoml.Context) -> dict[str, Any] | Response:
        """Several images (multipart field ``images``) in one runner call; a bad image gets its error in its slot."""
        try:
            k = parse_top_k(str(top_k) if top_k is not None else ctx.request.query_params.get("top_k"))
            results = await answer_batch(images, self.cfg, self._predict, lambda top: self._answer(top, k))
        except ServiceError as err:
            return fail(ctx, err)
        model_headers(ctx, self.info)
        return ClassifyBatchResponse(results=results).model_dump(mode="json")
