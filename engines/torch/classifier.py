"""The torch engine for timm classifiers: the iNat21 species model (EVA02-Large/14 @ 336, cc-by-nc-4.0).

Model: ``hf-hub:timm/eva02_large_patch14_clip_336.merged2b_ft_inat21`` (timm, 92.05 % top-1 on iNat21 val). Dev
models (``eva02_tiny_patch14_224``, random weights) share this code.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from engines import EngineOptions
from engines.torch.common import (Precision, TorchEngine, compile_model, default_precision, to_normalised,
                                  warm_up_sizes)
from serving.imaging import PreprocessConfig

if TYPE_CHECKING:
    from model_store import StoredEntry


def load_species(path: Path, device: torch.device) -> tuple[torch.nn.Module, list[str], PreprocessConfig]:
    """Build the timm model from a store folder (config.json + model.safetensors), strictly."""
    import timm

    model = timm.create_model(f"local-dir:{path}", pretrained=True)
    names = model.pretrained_cfg.get("label_names")
    if not isinstance(names, (list, tuple)) or len(names) != model.num_classes:
        raise RuntimeError(f"{path}/config.json lacks {model.num_classes} label_names; re-save the model")
    cfg = PreprocessConfig.model_validate(timm.data.resolve_model_data_config(model))
    return model.eval().to(device), list(names), cfg


def preprocess_batch(images: np.ndarray, cfg: PreprocessConfig, device: torch.device,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Check the batch matches the model's input size and normalise it on the device."""
    if images.shape[1:3] != (cfg.height, cfg.width):
        raise ValueError(f"expected images of {cfg.height}x{cfg.width}, got {images.shape[1]}x{images.shape[2]}")
    return to_normalised(images, cfg.mean, cfg.std, device, dtype)


def softmax(model: torch.nn.Module, cfg: PreprocessConfig, images: np.ndarray, device: torch.device,
            precision: Precision | None = None) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> softmax probabilities ``(N, C)`` on ``device``, taken in fp32 whatever the
    model's precision."""
    precision = precision or default_precision(device)
    with torch.inference_mode(), precision.context():
        logits = model(preprocess_batch(images, cfg, device, precision.dtype))
    return logits.float().softmax(dim=-1)


def top_k(model: torch.nn.Module, cfg: PreprocessConfig, images: np.ndarray, k: int, device: torch.device,
          precision: Precision | None = None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``(N, H, W, 3)`` -> (softmax probabilities, class indices), each ``(N, k)``, best first."""
    probs = softmax(model, cfg, images, device, precision)
    scores, indices = probs.topk(min(k, probs.shape[-1]), dim=-1)
    return scores.cpu().numpy(), indices.cpu().numpy()


class TorchClassifier(TorchEngine):
    """A timm classifier store entry in PyTorch (:class:`engines.Classifier`)."""

    def __init__(self, stored: "StoredEntry", options: EngineOptions) -> None:
        super().__init__(stored, options)
        model, self.labels, _ = load_species(stored.path, self.torch_device)
        self.model = compile_model(self._precision.prepare(model), options.compile)

    def classify(self, images: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return top_k(self.model, self.cfg, images, k, self.torch_device, self._precision)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return softmax(self.model, self.cfg, images, self.torch_device, self._precision).cpu().numpy()

    def warm_up(self) -> None:
        for n in warm_up_sizes(self.compile_mode):
            self.classify(np.zeros((n, self.cfg.height, self.cfg.width, 3), np.uint8), 1)


def load(stored: "StoredEntry", options: EngineOptions) -> TorchClassifier:
    return TorchClassifier(stored, options)
