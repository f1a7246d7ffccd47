"""Aesthetic score: ``POST /score``, the LAION aesthetic rating (0-10) of a raw image body.

``POST /score/batch`` scores several images at once. ``POST /scores`` answers the same plus ``aesthetic_score``,
for clients of the API this service replaces (danactive/history's admin routes).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

import bentoml
import numpy as np
from starlette.responses import Response

import catalog
from capabilities.common import (RunnerFacts, Runners, answer_batch, fail, image_batch, model_headers, request_body,
                                 run_model)
from model_store import DEV, RELEASE, open_entry
from serving.admission import RunnerGate
from serving.errors import ServiceError
from serving.schemas import ScoreBatchResponse, ScoreModelInfo, ScoreResponse, ScoresResponse

logger = logging.getLogger(__name__)

SCORE_RANGE = (0.0, 10.0)


def clamp_score(raw: float) -> float:
    """The head's regression output on LAION's 0-10 scale (the service's ``score``; bulk's ``aesthetic_score``)."""
    return min(max(raw, SCORE_RANGE[0]), SCORE_RANGE[1])


class Aesthetic:
    """Decodes and preprocesses for the aesthetic runner, clamps its regression output and shapes the answer.

    The tower is the catalog entry with a head; ``runners(key)`` and ``gates[key]`` are read at call time, as in
    :class:`capabilities.species.Species`.
    """

    RAW_ROUTES = ("/score", "/scores")

    @staticmethod
    def needs() -> list[catalog.ModelEntry]:
        """The runners this capability calls, for the gates it needs."""
        return [catalog.aesthetic_tower()]

    def __init__(self, runners: Runners, gates: Mapping[str, RunnerGate]) -> None:
        self.model = catalog.aesthetic_tower()
        clip = open_entry(self.model.name)
        head = open_entry(self.model.head)
        self.cfg = clip.meta.require_preprocess()
        tower, head_info = clip.describe(), head.describe()
        dev = DEV in (tower["variant"], head_info["variant"])
        self.info = ScoreModelInfo(tag=tower["tag"], variant=DEV if dev else RELEASE,
                                   head=head_info["tag"], head_variant=head_info["variant"])
        self._runners, self._gates, self.facts = runners, gates, RunnerFacts(runners)

    async def _raw(self, pixels: np.ndarray) -> list[float]:
        """One runner call for the whole batch; the head's outputs, checked to be finite."""
        key = self.model.key
        raws = [float(r) for r in await run_model(
            self._gates[key].call(self._runners(key).to_async.score, pixels), "aesthetic")]
        if not all(math.isfinite(r) for r in raws):
            logger.error("aesthetic head returned %r", raws)
            raise ServiceError(503, "inference_failed", "The aesthetic model failed; retry shortly.")
        return raws

    @staticmethod
    def _answer(raw: float, info: ScoreModelInfo) -> ScoreResponse:
        return ScoreResponse(score=clamp_score(raw), raw=raw, model=info)

    async def score(self, image: bytes, ctx: bentoml.Context) -> ScoreResponse | Response:
        try:
            (raw,) = await self._raw(await image_batch(request_body(image, ctx), self.cfg))
        except ServiceError as err:
            return fail(ctx, err)
        info = await self.facts.with_precision(self.info, self.model.key)
        model_headers(ctx, info)
        return self._answer(raw, info)

    async def score_batch(self, images: list[Path], ctx: bentoml.Context) -> dict[str, Any] | Response:
        """Several images (multipart field ``images``) in one runner call; a bad image gets its error in its slot."""
        try:
            info = await self.facts.with_precision(self.info, self.model.key)
            results = await answer_batch(images, self.cfg, self._raw, lambda raw: self._answer(raw, info))
        except ServiceError as err:
            return fail(ctx, err)
        model_headers(ctx, info)
        return ScoreBatchResponse(results=results).model_dump(mode="json")

    async def scores(self, image: bytes, ctx: bentoml.Context) -> ScoresResponse | Response:
        answer = await self.score(image, ctx)
        if not isinstance(answer, ScoreResponse):
            return answer
        return ScoresResponse(**answer.model_dump(), aesthetic_score=answer.score)
