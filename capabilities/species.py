"""Species classification: ``POST /classify``, top-k iNaturalist 2021 species for a raw image body, and
``POST /classify/batch`` for several images at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import bentoml
import numpy as np
from starlette.responses import Response

import catalog
from capabilities.common import (RunnerFacts, Runners, answer_batch, fail, image_batch, model_headers, request_body,
                                 run_model)
from model_store import open_entry
from serving.admission import RunnerGate
from serving.errors import ServiceError
from serving.schemas import ClassifyBatchResponse, ClassifyResponse, ModelInfo, Prediction

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

    ``runners(key)`` returns the classifier's runner client and ``gates[key]`` admits calls to it (``key`` being
    the catalog entry's, ``species``); both are read at call time, so the composing service (or a test) may swap
    them.
    """

    RAW_ROUTES = ("/classify",)

    @staticmethod
    def needs() -> list[catalog.ModelEntry]:
        """The runners this capability calls, for the gates it needs."""
        return [catalog.species_model()]

    def __init__(self, runners: Runners, gates: Mapping[str, RunnerGate]) -> None:
        self.model = catalog.species_model()
        entry = open_entry(self.model.name)
        self.cfg = entry.meta.require_preprocess()
        self.info = ModelInfo(**entry.describe())
        self._runners, self._gates, self.facts = runners, gates, RunnerFacts(runners)

    async def _predict(self, pixels: np.ndarray) -> list[Any]:
        """One runner call for the whole batch."""
        key = self.model.key
        return await run_model(self._gates[key].call(self._runners(key).to_async.predict, pixels), "species")

    def _answer(self, top: Any, top_k: int, info: ModelInfo) -> ClassifyResponse:
        return ClassifyResponse(predictions=[Prediction(species=s, label=s, score=p)
                                             for s, p in zip(top.labels[:top_k], top.scores[:top_k])],
                                model=info)

    async def classify(self, image: bytes, ctx: bentoml.Context) -> ClassifyResponse | Response:
        try:
            top_k = parse_top_k(ctx.request.query_params.get("top_k"))
            (top,) = await self._predict(await image_batch(request_body(image, ctx), self.cfg))
        except ServiceError as err:
            return fail(ctx, err)
        info = await self.facts.with_precision(self.info, self.model.key)
        model_headers(ctx, info)
        return self._answer(top, top_k, info)

    async def classify_batch(self, images: list[Path], top_k: int | None,
                             ctx: bentoml.Context) -> dict[str, Any] | Response:
        """Several images (multipart field ``images``) in one runner call; a bad image gets its error in its slot."""
        try:
            k = parse_top_k(str(top_k) if top_k is not None else ctx.request.query_params.get("top_k"))
            info = await self.facts.with_precision(self.info, self.model.key)
            results = await answer_batch(images, self.cfg, self._predict, lambda top: self._answer(top, k, info))
        except ServiceError as err:
            return fail(ctx, err)
        model_headers(ctx, info)
        return ClassifyBatchResponse(results=results).model_dump(mode="json")
