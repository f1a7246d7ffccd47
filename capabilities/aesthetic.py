"""Aesthetic score: ``POST /score``, the LAION aesthetic rating (0-10) of a raw image body.

``POST /score/batch`` scores several images at once. ``POST /scores`` answers the same plus the photo report
(:mod:`capabilities.report`: sharpness, exposure, resolution, composition, an overall score and notes) that
danactive/history's admin page shows; ``report=1`` adds it to ``/score`` and ``/score/batch``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping

import anyio
import bentoml
import numpy as np
from starlette.responses import JSONResponse, Response

import catalog
from capabilities.common import RunnerFacts, Runners, answer_batch, fail, model_headers, request_body, run_model
from capabilities.report import measure, report
from model_store import DEV, RELEASE, open_entry
from serving.admission import RunnerGate
from serving.errors import ServiceError
from serving.imaging import decode_image_sized, draft_size, preprocess
from serving.schemas import Measures, ScoreBatchResponse, ScoreModelInfo, ScoreResponse, ScoresResponse
from serving.settings import settings

logger = logging.getLogger(__name__)

SCORE_RANGE = (0.0, 10.0)


def clamp_score(raw: float) -> float:
    """The head's regression output on LAION's 0-10 scale (the service's ``score``; bulk's ``aesthetic_score``)."""
    return min(max(raw, SCORE_RANGE[0]), SCORE_RANGE[1])


def wants_report(ctx: bentoml.Context) -> bool:
    """The ``report`` query parameter: 1/true/yes or 0/false/no (absent: no); anything else is a 400."""
    value = (ctx.request.query_params.get("report") or "0").strip().lower()
    if value not in ("0", "1", "true", "false", "yes", "no"):
        raise ServiceError(400, "invalid_parameter", f"report={value[:20]!r}: use report=1 for the photo report "
                                                     "(sharpness, exposure, composition, notes) or leave it out.")
    return value in ("1", "true", "yes")


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

    async def _decode(self, data: bytes, with_report: bool) -> tuple[np.ndarray, Measures | None]:
        """Off the event loop: the runner's pixels and, when asked, the photo's measures from the same decode
        (the path of :func:`serving.imaging.prepare`)."""
        def work() -> tuple[np.ndarray, Measures | None]:
            img, size = decode_image_sized(data, settings.max_image_pixels, draft_size(self.cfg))
            return preprocess(img, self.cfg), (measure(img, size) if with_report else None)

        return await anyio.to_thread.run_sync(work)

    @staticmethod
    def _answer(raw: float, info: ScoreModelInfo, measures: Measures | None = None) -> ScoreResponse:
        score = clamp_score(raw)
        if measures is None:
            return ScoreResponse(score=score, raw=raw, model=info)
        return ScoresResponse(score=score, raw=raw, model=info, **report(measures, score).model_dump())

    async def _one(self, image: bytes, ctx: bentoml.Context, with_report: bool) -> ScoreResponse:
        pixels, measures = await self._decode(request_body(image, ctx), with_report)
        (raw,) = await self._raw(pixels[None])
        info = await self.facts.with_precision(self.info, self.model.key)
        model_headers(ctx, info)
        return self._answer(raw, info, measures)

    async def score(self, image: bytes, ctx: bentoml.Context) -> ScoreResponse | Response:
        """``/score``; with ``report=1`` the ``/scores`` answer (sent as it is, so BentoML keeps every field)."""
        try:
            answer = await self._one(image, ctx, wants_report(ctx))
        except ServiceError as err:
            return fail(ctx, err)
        if isinstance(answer, ScoresResponse):
            return JSONResponse(answer.model_dump(mode="json"), headers=dict(ctx.response.headers))
        return answer

    async def scores(self, image: bytes, ctx: bentoml.Context) -> ScoresResponse | Response:
        try:
            return await self._one(image, ctx, with_report=True)
        except ServiceError as err:
            return fail(ctx, err)

    async def score_batch(self, images: list[Path], ctx: bentoml.Context) -> dict[str, Any] | Response:
        """Several images (multipart field ``images``) in one runner call; a bad image gets its error in its slot.
        ``report=1``: each answer carries its photo report."""
        try:
            with_report = wants_report(ctx)
            info = await self.facts.with_precision(self.info, self.model.key)
            results = await answer_batch(images, lambda data: self._decode(data, with_report),
                                         lambda good: self._raw(np.stack([pixels for pixels, _ in good])),
                                         lambda raw, item: self._answer(raw, info, item[1]))
        except ServiceError as err:
            return fail(ctx, err)
        model_headers(ctx, info)
        return ScoreBatchResponse(results=results).model_dump(mode="json")
