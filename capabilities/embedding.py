"""Image embeddings: ``POST /embed?model=NAME``, the L2-normalised CLIP image embedding of a raw image body.

The towers are the catalog's CLIP entries with an embedding alias, the ones the other capabilities serve: OpenAI
CLIP ViT-B/16 (the aesthetic runner's), CLIP ViT-L/14 and both OpenCLIP ViT-B/32s (the zero-shot runners'). Bulk
scoring (:mod:`bulk`) writes the same vectors for whole collections, under the short names in ``ALIASES``.
"""

from __future__ import annotations

from typing import Any, Mapping

import bentoml
import numpy as np
from starlette.responses import Response

import catalog
from capabilities.common import RunnerFacts, Runners, fail, image_batch, model_headers, request_body, run_model
from model_store import open_entry
from serving.admission import RunnerGate
from serving.errors import ServiceError
from serving.schemas import EmbedResponse, ModelInfo

TOWERS = {m.name: m for m in catalog.embedding_models()}
ALIASES = catalog.aliases()


def tower_name(raw: str | None) -> str:
    """A tower's model name from a name or short alias (kebab or snake case), or a 400 that lists them."""
    name = (raw or "").strip().replace("_", "-")
    name = ALIASES.get(name, name)
    if name not in TOWERS:
        choices = ", ".join(f"{n} ({a})" for a, n in ALIASES.items())
        raise ServiceError(400, "invalid_parameter", f"model={str(raw)[:100]!r} is not an embedding model; "
                           f"use one of: {choices}.")
    return name


class Embedding:
    """Decodes and preprocesses for the tower's runner and shapes its answer.

    ``runners(key)`` returns the runner client that holds a tower (the catalog entry's key) and ``gates[key]``
    admits calls to it; both are read at call time.
    """

    RAW_ROUTES = ("/embed",)

    @staticmethod
    def needs() -> list[catalog.ModelEntry]:
        """The runners this capability calls, for the gates it needs."""
        return list(TOWERS.values())

    def __init__(self, runners: Runners, gates: Mapping[str, RunnerGate]) -> None:
        self.entries = {name: open_entry(name) for name in TOWERS}
        self.cfgs = {name: e.meta.require_preprocess() for name, e in self.entries.items()}
        self.infos = {name: ModelInfo(**e.describe()) for name, e in self.entries.items()}
        self._runners, self._gates, self.facts = runners, gates, RunnerFacts(runners)

    async def embeddings(self, name: str, pixels: np.ndarray) -> np.ndarray:
        """One runner call: L2-normalised embeddings ``(N, D)`` of preprocessed images for tower ``name``."""
        key = TOWERS[name].key
        call = self._runners(key).to_async.embed_images
        return np.asarray(await run_model(self._gates[key].call(call, pixels), name))

    async def embed(self, image: bytes, ctx: bentoml.Context) -> EmbedResponse | Response:
        try:
            name = tower_name(ctx.request.query_params.get("model"))
            (vector,) = await self.embeddings(name, await image_batch(request_body(image, ctx), self.cfgs[name]))
        except ServiceError as err:
            return fail(ctx, err)
        info = await self.facts.with_precision(self.infos[name], TOWERS[name].key)
        model_headers(ctx, info)
        return EmbedResponse(embedding=vector.tolist(), dim=len(vector), model=info)
