"""Image embeddings: ``POST /embed?model=NAME``, the L2-normalised CLIP image embedding of a raw image body.

The towers are the ones the other capabilities serve: OpenAI CLIP ViT-B/16 (the aesthetic runner's), CLIP
ViT-L/14 and both OpenCLIP ViT-B/32s (the zero-shot runners'). Bulk scoring (:mod:`bulk`) writes the same
vectors for whole collections, under the short names in ``ALIASES``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import bentoml
import numpy as np
from starlette.responses import Response

from capabilities.common import fail, image_batch, model_headers, request_body, run_model
from runners.zero_shot import SAVE_HINT
from serving import model_store
from serving.admission import RunnerGate
from serving.errors import ServiceError
from serving.imaging import PreprocessConfig
from serving.schemas import EmbedResponse, ModelInfo
from serving.settings import (
    AESTHETIC_CLIP_NAME,
    ZERO_SHOT_B32_LAION2B_NAME,
    ZERO_SHOT_B32_NAME,
    ZERO_SHOT_L14_NAME,
    settings,
)

# Model name -> (store tag, the gate and runner that hold the tower, the runner method).
TOWERS = {
    AESTHETIC_CLIP_NAME: (settings.aesthetic_clip_model, "aesthetic", "embed"),
    ZERO_SHOT_L14_NAME: (settings.zero_shot_l14_model, ZERO_SHOT_L14_NAME, "embed_images"),
    ZERO_SHOT_B32_NAME: (settings.zero_shot_b32_model, ZERO_SHOT_B32_NAME, "embed_images"),
    ZERO_SHOT_B32_LAION2B_NAME: (settings.zero_shot_b32_laion2b_model, ZERO_SHOT_B32_LAION2B_NAME, "embed_images"),
}
ALIASES = {"b16": AESTHETIC_CLIP_NAME, "l14": ZERO_SHOT_L14_NAME, "b32": ZERO_SHOT_B32_NAME,
           "b32-laion2b": ZERO_SHOT_B32_LAION2B_NAME}


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

    ``runners[gate]`` returns the runner client that holds a tower ("aesthetic" or a zero-shot model name), and
    ``gates[gate]`` admits calls to it; both are read at call time.
    """

    def __init__(self, runners: Mapping[str, Callable[[], Any]], gates: Mapping[str, RunnerGate]) -> None:
        entries = {name: model_store.require(tag, SAVE_HINT) for name, (tag, _, _) in TOWERS.items()}
        self.cfgs = {name: PreprocessConfig.model_validate(e.info.metadata["preprocess"]) for name, e in entries.items()}
        self.infos = {name: ModelInfo(**model_store.describe(e)) for name, e in entries.items()}
        self._runners, self._gates = runners, gates

    async def embeddings(self, name: str, pixels: np.ndarray) -> np.ndarray:
        """One runner call: L2-normalised embeddings ``(N, D)`` of preprocessed images for tower ``name``."""
        _, gate, method = TOWERS[name]
        call = getattr(self._runners[gate]().to_async, method)
        return np.asarray(await run_model(self._gates[gate].call(call, pixels), name))

    async def embed(self, image: bytes, ctx: bentoml.Context) -> EmbedResponse | Response:
        try:
            name = tower_name(ctx.request.query_params.get("model"))
            (vector,) = await self.embeddings(name, await image_batch(request_body(image, ctx), self.cfgs[name]))
        except ServiceError as err:
            return fail(ctx, err)
        model_headers(ctx, self.infos[name])
        return EmbedResponse(embedding=vector.tolist(), dim=len(vector), model=self.infos[name])
