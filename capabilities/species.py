"""Species classification: ``POST /classify``, top-k iNaturalist 2021 species for a raw image body, with lineage,
common names, a roll-up and a status (:mod:`capabilities.taxa`); ``POST /classify/batch`` for several images at
once; ``POST /classify/organism`` in danactive/history's organism shape.

The organism gate runs on the aesthetic CLIP tower (``SPECIES_GATE``): one image embedding beside the species call,
and the gate prompts' text embeddings, asked once per gateway worker.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import anyio
import bentoml
import numpy as np
from starlette.responses import JSONResponse, Response

import catalog
from capabilities import taxa
from capabilities.common import (RunnerFacts, Runners, answer_batch, fail, gather_or_cancel, model_headers,
                                 request_body, run_model)
from model_store import open_entry, taxonomy
from serving.admission import RunnerGate
from serving.errors import ServiceError, call_runner
from serving.imaging import PreprocessConfig, decode_image, draft_size, preprocess
from serving.schemas import (ClassifyBatchResponse, ClassifyResponse, Gate, ModelInfo, OrganismPrediction,
                             OrganismResponse, RankBest)
from serving.settings import settings

logger = logging.getLogger(__name__)

MAX_TOP_K = 10
ORGANISM_TOP_K = 5  # danactive/history's organism classifier answers five candidates
METADATA_HEADERS = ("x-photo-date", "x-photo-latitude", "x-photo-longitude", "x-photo-city", "x-photo-location")


def parse_top_k(raw: str | None) -> int:
    """The ``top_k`` query parameter: an integer 1..10, default 3."""
    if raw is None:
        return 3
    if not raw.strip().isdigit() or not 1 <= int(raw) <= MAX_TOP_K:
        raise ServiceError(400, "invalid_parameter", f"top_k must be an integer from 1 to {MAX_TOP_K}; got {raw!r}.")
    return int(raw)


def species_draft(cfg: PreprocessConfig, gate_cfg: PreprocessConfig | None) -> int:
    """The reduced-scale decode of an image for the species model: its own, or the gate tower's when smaller."""
    return min(draft_size(cfg), draft_size(gate_cfg)) if gate_cfg is not None else draft_size(cfg)


class Species:
    """Decodes and preprocesses for the species runner (and the gate's tower), and shapes the answers.

    ``runners(key)`` returns a runner client and ``gates[key]`` admits calls to it (``key`` being the catalog
    entry's: ``species``, and ``aesthetic`` for the gate); both are read at call time, so the composing service (or
    a test) may swap them.
    """

    RAW_ROUTES = ("/classify", "/classify/organism")

    @staticmethod
    def needs() -> list[catalog.ModelEntry]:
        """The runners this capability calls, for the gates it needs."""
        gate = [catalog.aesthetic_tower()] if settings.species_gate == "on" else []
        return [catalog.species_model(), *gate]

    def __init__(self, runners: Runners, gates: Mapping[str, RunnerGate]) -> None:
        if settings.species_gate not in ("on", "off"):
            raise ValueError(f"SPECIES_GATE={settings.species_gate!r}: use on or off")
        self.model = catalog.species_model()
        entry = open_entry(self.model.name)
        self.cfg = entry.meta.require_preprocess()
        self.info = ModelInfo(**entry.describe())
        self.revision = entry.meta.revision
        self.taxonomy = taxonomy.read_stored(entry.path)
        if self.taxonomy is None:
            logger.warning("%s was stored without a taxonomy: answers carry no lineage, roll-up or common names "
                           "(save it again with --taxonomy)", entry.tag)
        self.limits = taxa.Thresholds.from_settings(settings)
        self.gate_tower = catalog.aesthetic_tower() if settings.species_gate == "on" else None
        self.gate_entry = open_entry(self.gate_tower.name) if self.gate_tower else None
        if self.gate_entry is not None and "text" not in (self.gate_entry.meta.towers or ()):
            logger.warning("%s has no text tower: the organism gate is off until it is saved again",
                           self.gate_entry.tag)
            self.gate_tower = self.gate_entry = None
        self.gate_cfg = self.gate_entry.meta.require_preprocess() if self.gate_entry else None
        # One decode for both models, at the smaller reduced scale (the gate tower's: what /embed and /score
        # decode), so the gate sees what they see; bulk decodes its species rows the same way.
        self.draft = species_draft(self.cfg, self.gate_cfg)
        self._prompts: np.ndarray | None = None
        self._runners, self._gates, self.facts = runners, gates, RunnerFacts(runners)

    # -- inference -----------------------------------------------------------------------------------------------

    async def _decode(self, data: bytes) -> tuple[np.ndarray, np.ndarray | None]:
        """Off the event loop: the species pixels and, with the gate, its tower's pixels, from one decode."""
        def work() -> tuple[np.ndarray, np.ndarray | None]:
            img = decode_image(data, settings.max_image_pixels, self.draft)
            return preprocess(img, self.cfg), (preprocess(img, self.gate_cfg) if self.gate_cfg else None)

        return await anyio.to_thread.run_sync(work)

    async def _prompt_embeddings(self) -> np.ndarray:
        if self._prompts is None:
            runner = self._runners(self.gate_tower.key)
            prompts = np.asarray(await call_runner(runner.to_async.class_embeddings, classes=list(taxa.GATE_PROMPTS),
                                                   templates=["{}"]))
            if prompts.shape[0] != len(taxa.GATE_PROMPTS):
                raise RuntimeError(f"gate runner returned {prompts.shape[0]} prompt embeddings")
            self._prompts = prompts
        return self._prompts

    async def _gate(self, pixels: np.ndarray) -> list[Gate | None]:
        """The gate's answer per image; a failing gate leaves the species answer standing, without a gate."""
        key = self.gate_tower.key
        try:
            embedded, prompts = await gather_or_cancel([
                self._gates[key].call(self._runners(key).to_async.embed_images, pixels), self._prompt_embeddings()])
            embedded = np.asarray(embedded)
            if len(embedded) != len(pixels):
                raise RuntimeError(f"gate runner returned {len(embedded)} embeddings for {len(pixels)} images")
        except Exception:  # noqa: BLE001 (logged; the answer says gate: null)
            logger.warning("the organism gate failed; answering without it", exc_info=True)
            return [None] * len(pixels)
        scale = self.gate_entry.meta.logit_scale or 100.0
        return [taxa.gate(e, prompts, scale) for e in embedded]

    async def _infer(self, species_pixels: np.ndarray,
                     gate_pixels: np.ndarray | None) -> list[tuple[Any, Gate | None]]:
        """One species runner call (and one gate call) for the whole batch: (TopK, gate answer) per image."""
        key = self.model.key
        calls = [self._gates[key].call(self._runners(key).to_async.predict, species_pixels)]
        if gate_pixels is not None:
            calls.append(self._gate(gate_pixels))
        results = await run_model(gather_or_cancel(calls), "species")
        tops, gates = results[0], (results[1] if len(results) > 1 else [None] * len(results[0]))
        if len(tops) != len(species_pixels) or len(gates) != len(species_pixels):
            raise ServiceError(503, "inference_failed", "The species model answered for the wrong number of images.")
        return list(zip(tops, gates))

    # -- answers -------------------------------------------------------------------------------------------------

    def _answer(self, top: Any, gate: Gate | None, top_k: int, info: ModelInfo) -> ClassifyResponse:
        return ClassifyResponse(predictions=taxa.predictions(top, top_k, self.taxonomy), model=info,
                                status=taxa.status(top.scores, gate, self.limits),
                                rollup=taxa.rollup(top, self.taxonomy, self.limits.rollup_min), gate=gate,
                                ranks=[RankBest(rank=r.rank, name=r.name, score=r.score) for r in top.ranks]
                                if self.taxonomy is not None and top.ranks else None)

    def _organism(self, top: Any, gate: Gate | None, info: ModelInfo, headers: Any) -> OrganismResponse:
        answer = self._answer(top, gate, ORGANISM_TOP_K, info)
        found = []
        for n, (p, index) in enumerate(zip(answer.predictions, top.indices[:ORGANISM_TOP_K] or [-1] * ORGANISM_TOP_K)):
            path = p.lineage or []
            rank = dict(zip(taxonomy.RANKS, path))
            found.append(OrganismPrediction(
                taxonId=f"inat21-{index}", scientificName=p.species, commonName=p.common_name,
                kingdom=rank.get("kingdom"), family=rank.get("family"), genus=rank.get("genus"), lineage=path,
                score=p.score, matchStrength=taxa.match_strength(n, p.score, answer.status,
                                                                  settings.species_possible_min)))
        paths = [p.lineage or [] for p in answer.predictions[:2]]
        same = [len(paths) == 2 and len(paths[0]) > r and len(paths[1]) > r and paths[0][r] == paths[1][r]
                for r in (4, 5)]  # family, genus
        scores = [p.score for p in answer.predictions]
        diagnostics = {
            "candidateCount": self.model.save.num_classes, "cropCount": 1,
            "cropAgreement": 1.0, "topMargin": scores[0] - (scores[1] if len(scores) > 1 else 0.0),
            "organismScore": gate.organism if gate else None, "nonOrganismScore": gate.not_organism if gate else None,
            "topTwoSameFamily": same[0], "topTwoSameGenus": same[1],
            "rollupRank": answer.rollup.rank if answer.rollup else None,
            "rollupName": answer.rollup.name if answer.rollup else None,
            "rollupScore": answer.rollup.score if answer.rollup else None,
            "metadataAvailable": any(headers.get(h) for h in METADATA_HEADERS), "metadataApplied": False}
        return OrganismResponse(status=answer.status, predictions=found, diagnostics=diagnostics,
                                model={"id": info.tag, "revision": self.revision,
                                       "taxonomy": self.taxonomy.source if self.taxonomy else None})

    async def _one(self, image: bytes, ctx: bentoml.Context) -> tuple[Any, Gate | None, ModelInfo]:
        species_pixels, gate_pixels = await self._decode(request_body(image, ctx))
        ((top, gate),) = await self._infer(species_pixels[None], None if gate_pixels is None else gate_pixels[None])
        info = await self.facts.with_precision(self.info, self.model.key)
        model_headers(ctx, info)
        return top, gate, info

    async def classify(self, image: bytes, ctx: bentoml.Context) -> ClassifyResponse | Response:
        try:
            top_k = parse_top_k(ctx.request.query_params.get("top_k"))
            top, gate, info = await self._one(image, ctx)
        except ServiceError as err:
            return fail(ctx, err)
        return self._answer(top, gate, top_k, info)

    async def organism(self, image: bytes, ctx: bentoml.Context) -> Response:
        try:
            top, gate, info = await self._one(image, ctx)
        except ServiceError as err:
            return fail(ctx, err)
        answer = self._organism(top, gate, info, ctx.request.headers)
        return JSONResponse(answer.model_dump(mode="json"), headers=dict(ctx.response.headers))

    async def classify_batch(self, images: list[Path], top_k: int | None,
                             ctx: bentoml.Context) -> dict[str, Any] | Response:
        """Several images (multipart field ``images``) in one runner call; a bad image gets its error in its slot."""
        def infer(good: list[tuple[np.ndarray, np.ndarray | None]]) -> Any:
            gate_pixels = np.stack([g for _, g in good]) if self.gate_cfg else None
            return self._infer(np.stack([s for s, _ in good]), gate_pixels)

        try:
            k = parse_top_k(str(top_k) if top_k is not None else ctx.request.query_params.get("top_k"))
            info = await self.facts.with_precision(self.info, self.model.key)
            results = await answer_batch(images, self._decode, infer,
                                         lambda found, _: self._answer(found[0], found[1], k, info))
        except ServiceError as err:
            return fail(ctx, err)
        model_headers(ctx, info)
        return ClassifyBatchResponse(results=results).model_dump(mode="json")
