"""The OpenVINO engine for timm classifiers: the iNat21 species model (EVA02-Large/14 @ 336, cc-by-nc-4.0), converted
from the store entry's timm weights (see :mod:`engines.torch.classifier`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from engines.openvino.common import OpenVinoEngine, trace

if TYPE_CHECKING:
    from engines import EngineOptions
    from model_store import StoredEntry


def softmax(logits: np.ndarray) -> np.ndarray:
    """fp32 softmax of ``(N, C)`` logits."""
    logits = np.asarray(logits, np.float32)
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def softmax_top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """fp32 softmax of ``(N, C)`` logits -> (probabilities, class indices), each ``(N, k)``, best first."""
    from engines import top_k

    return top_k(softmax(logits), k)


class OpenVinoClassifier(OpenVinoEngine):
    """A timm classifier store entry in OpenVINO (:class:`engines.Classifier`).

    A batch runs ``chunk`` images per inference: OpenVINO's full-size EVA02-L at 336 px takes about 450 MB more per
    image in a batch (peak 2.9 / 3.8 / 5.6 GB at 2 / 4 / 8 images, bf16, measured), so a full adaptive batch of 32
    outgrew 12 GB and the OOM killer ended the runner, again and again, under load. Per image, 4 at a time ran
    within 4% of 8 (1167 vs 1122 ms on a 2-core Zen 4).
    """

    chunk = 4

    def __init__(self, stored: "StoredEntry", options: "EngineOptions") -> None:
        super().__init__(stored, options)
        config = json.loads((stored.path / "config.json").read_text())
        self.labels = list(config.get("label_names") or [])
        if len(self.labels) != config.get("num_classes"):
            raise RuntimeError(f"{stored.path}/config.json lacks {config.get('num_classes')} label_names; re-save it")
        self.model = self.compiled("classifier", self._convert)

    def _convert(self):
        import torch

        from engines.torch.classifier import load_species

        model, _, cfg = load_species(self.stored.path, torch.device("cpu"))
        shape = [3, cfg.height, cfg.width]
        return trace(model, torch.zeros(2, *shape), shape)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Class logits ``(N, C)``, ``chunk`` images per inference."""
        return np.concatenate([self.model(self.normalised(images[i:i + self.chunk]))[0]
                               for i in range(0, len(images), self.chunk)])

    def classify(self, images: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return softmax_top_k(self.logits(images), k)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return softmax(self.logits(images))

    def warm_up(self) -> None:
        self.classify(np.zeros((1, self.cfg.height, self.cfg.width, 3), np.uint8), 1)


def load(stored: "StoredEntry", options: "EngineOptions") -> OpenVinoClassifier:
    return OpenVinoClassifier(stored, options)
