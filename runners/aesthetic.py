"""Aesthetic score runner: OpenAI CLIP ViT-B/16 image embedding, L2-normalised, through the LAION linear head.

Image tower: open_clip ``ViT-B-16`` pretrained ``openai`` (MIT). Head: ``sa_0_4_vit_b_16_linear.pth`` from GitHub
LAION-AI/aesthetic-predictor (MIT), a ``Linear(512, 1)`` regressing LAION's 0-10 rating scale (unbounded).
Input: uint8 ``(N, H, W, 3)`` batches resized and cropped by the gateway; normalisation runs on the device.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import bentoml
import numpy as np
import torch

from runners._clip import image_embeddings, load_clip
from runners._torch import InferenceThread, compile_model, pick_device, runner_config
from serving import model_store
from serving.settings import settings

logger = logging.getLogger(__name__)

HEAD_DIM = 512
HEAD_FILE = "head.safetensors"
SAVE_HINT = "python scripts/save_models.py aesthetic   (or --dev for a tiny test image tower)"


def load_head(state: Mapping[str, torch.Tensor], dim: int = HEAD_DIM) -> torch.nn.Linear:
    """A ``Linear(dim, 1)`` from a state dict, refusing any other keys or shapes."""
    expected = {"weight": (1, dim), "bias": (1,)}
    got = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__ for k, v in state.items()}
    if got != expected:
        raise ValueError(f"the aesthetic head must be a Linear({dim}, 1) state dict {expected}; this file holds {got}")
    head = torch.nn.Linear(dim, 1)
    head.load_state_dict(dict(state), strict=True)
    return head.eval()


def aesthetic_scores(head: torch.nn.Linear, embeddings: torch.Tensor) -> np.ndarray:
    """L2-normalised CLIP ViT-B/16 embeddings -> raw (unclamped) LAION scores ``(N,)`` float32."""
    with torch.inference_mode():
        return head(embeddings).squeeze(-1).float().cpu().numpy()


def load_head_entry(head_path: Path, device: torch.device) -> torch.nn.Linear:
    """The LAION head of a store entry, on ``device``."""
    from safetensors.torch import load_file

    return load_head(load_file(str(Path(head_path) / HEAD_FILE))).to(device)


def load_aesthetic(clip_path: Path, head_path: Path, device: torch.device):
    """(CLIP model with its image tower, head, preprocess config), all on ``device``."""
    clip, cfg = load_clip(clip_path, device, towers=["visual"])
    return clip, load_head_entry(head_path, device), cfg


@bentoml.service(name="AestheticRunner", **runner_config())
class AestheticRunner:
    """Batched CLIP image embeddings and LAION aesthetic scores."""

    clip_ref = bentoml.models.BentoModel(settings.aesthetic_clip_model)
    head_ref = bentoml.models.BentoModel(settings.aesthetic_head_model)

    def __init__(self) -> None:
        clip = model_store.require(settings.aesthetic_clip_model, SAVE_HINT)
        head = model_store.require(settings.aesthetic_head_model, SAVE_HINT)
        self.device = pick_device(settings.device)
        self.thread = InferenceThread("aesthetic")
        self.clip, self.head, self.cfg = self.thread.call(load_aesthetic, Path(clip.path), Path(head.path), self.device)
        self.encode_image = compile_model(self.clip.encode_image, settings.torch_compile)
        self.thread.warm_up(self._score, self.cfg.height, self.cfg.width, settings.torch_compile)
        logger.info("AestheticRunner ready: %s + %s on %s", clip.tag, head.tag, self.device)

    def _embed(self, images: np.ndarray) -> torch.Tensor:
        return image_embeddings(self.encode_image, self.cfg, images, self.device)

    def _score(self, images: np.ndarray) -> np.ndarray:
        return aesthetic_scores(self.head, self._embed(images))

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=settings.aesthetic_max_batch_size,
                 max_latency_ms=settings.aesthetic_max_latency_ms)
    async def embed(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, 3)`` -> L2-normalised CLIP ViT-B/16 embeddings ``(N, 512)`` float32."""
        out = await self.thread.run(lambda: self._embed(images).cpu().numpy())
        if len(out) != len(images):
            raise RuntimeError(f"model returned {len(out)} embeddings for {len(images)} images")
        return out

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=settings.aesthetic_max_batch_size,
                 max_latency_ms=settings.aesthetic_max_latency_ms)
    async def score(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, 3)`` -> raw (unclamped) aesthetic scores ``(N,)`` float32."""
        out = await self.thread.run(self._score, images)
        if len(out) != len(images):
            raise RuntimeError(f"model returned {len(out)} scores for {len(images)} images")
        return out
