"""Species classifier runner: timm EVA02-Large/14 @ 336 px fine-tuned on iNaturalist 2021 (10,000 species).

Model: ``hf-hub:timm/eva02_large_patch14_clip_336.merged2b_ft_inat21`` (timm, 92.05 % top-1 on iNat21 val).
Licence: cc-by-nc-4.0 (non-commercial). Dev models (``eva02_tiny_patch14_224``, random weights) share this code.
Input: uint8 ``(N, H, W, 3)`` batches resized and cropped by the gateway; normalisation runs on the device.
"""

from __future__ import annotations

import logging
from pathlib import Path

import bentoml
import numpy as np
import torch
from pydantic import BaseModel

from runners._torch import (
    InferenceThread,
    autocast,
    compile_model,
    pick_device,
    runner_config,
    to_normalised,
)
from serving import model_store
from serving.imaging import PreprocessConfig
from serving.settings import settings

logger = logging.getLogger(__name__)

TOP_K = 10  # the runner always returns 10; the gateway trims to the caller's top_k
SAVE_HINT = "python scripts/save_models.py species   (or --dev for a tiny test model)"


class TopK(BaseModel):
    """The best classes for one image, best first."""

    labels: list[str]
    scores: list[float]


def load_species(path: Path, device: torch.device) -> tuple[torch.nn.Module, list[str], PreprocessConfig]:
    """Build the timm model from a store folder (config.json + model.safetensors), strictly."""
    import timm

    model = timm.create_model(f"local-dir:{path}", pretrained=True)
    names = model.pretrained_cfg.get("label_names")
    if not isinstance(names, (list, tuple)) or len(names) != model.num_classes:
        raise RuntimeError(f"{path}/config.json lacks {model.num_classes} label_names; re-save the model")
    cfg = PreprocessConfig.model_validate(timm.data.resolve_model_data_config(model))
    return model.eval().to(device), list(names), cfg


def preprocess_batch(images: np.ndarray, cfg: PreprocessConfig, device: torch.device) -> torch.Tensor:
    """Check the batch matches the model's input size and normalise it on the device."""
    if images.shape[1:3] != (cfg.height, cfg.width):
        raise ValueError(f"expected images of {cfg.height}x{cfg.width}, got {images.shape[1]}x{images.shape[2]}")
    return to_normalised(images, cfg.mean, cfg.std, device)


def predict_species(model: torch.nn.Module, labels: list[str], cfg: PreprocessConfig, images: np.ndarray,
                    device: torch.device) -> list[TopK]:
    """uint8 ``(N, H, W, 3)`` -> the ``TOP_K`` best classes of each image (the runner's and bulk scoring's path)."""
    with torch.inference_mode(), autocast(device):
        logits = model(preprocess_batch(images, cfg, device))
    scores, indices = logits.float().softmax(dim=-1).topk(min(TOP_K, logits.shape[-1]), dim=-1)
    scores, indices = scores.cpu().tolist(), indices.cpu().tolist()
    return [TopK(labels=[labels[i] for i in idx], scores=s) for idx, s in zip(indices, scores)]


@bentoml.service(name="SpeciesRunner", **runner_config())
class SpeciesRunner:
    """Batched top-k species classification."""

    model_ref = bentoml.models.BentoModel(settings.species_model)

    def __init__(self) -> None:
        stored = model_store.require(settings.species_model, SAVE_HINT)
        self.device = pick_device(settings.device)
        self.thread = InferenceThread("species")
        self.model, self.labels, self.cfg = self.thread.call(load_species, Path(stored.path), self.device)
        self.model = compile_model(self.model, settings.torch_compile)
        self.thread.warm_up(self._infer, self.cfg.height, self.cfg.width, settings.torch_compile)
        logger.info("SpeciesRunner ready: %s on %s", stored.tag, self.device)

    def _infer(self, images: np.ndarray) -> list[TopK]:
        return predict_species(self.model, self.labels, self.cfg, images, self.device)

    @bentoml.api(
        batchable=True,
        batch_dim=0,
        max_batch_size=settings.species_max_batch_size,
        max_latency_ms=settings.species_max_latency_ms,
    )
    async def predict(self, images: np.ndarray) -> list[TopK]:
        """uint8 ``(N, H, W, 3)`` -> one ``TopK`` per image, in input order."""
        results = await self.thread.run(self._infer, images)
        if len(results) != len(images):
            raise RuntimeError(f"model returned {len(results)} results for {len(images)} images")
        return results
