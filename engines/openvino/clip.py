"""The OpenVINO engine for CLIP towers (open_clip): image and text embeddings, each tower converted from the store
entry's open_clip weights (see :mod:`engines.torch.clip`); tokenising stays open_clip's, in Python."""

from __future__ import annotations

import functools
import json
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from engines.openvino.common import OpenVinoEngine, l2_normalised, trace

if TYPE_CHECKING:
    from engines import EngineOptions
    from model_store import StoredEntry


def tower(model: Any, method: str) -> Any:
    """``model.encode_image`` or ``model.encode_text`` of an open_clip model as a module to trace."""
    import torch

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return getattr(self.model, method)(x)

    return Tower().eval()


class OpenVinoClip(OpenVinoEngine):
    """A CLIP store entry in OpenVINO: :class:`engines.ImageEmbedder`, and :class:`engines.TextEmbedder` when the
    entry keeps the text tower. The text tower always runs in fp32: in bf16 it alone moved zero-shot probabilities by
    up to 1.7e-3 (dev models), past the 1e-3 bound, and its prompts are embedded once and cached."""

    text_precision = "fp32"

    def __init__(self, stored: "StoredEntry", options: "EngineOptions") -> None:
        from engines.torch.clip import CONFIG_FILE, load_tokenizer

        super().__init__(stored, options)
        self.towers = list(stored.meta.towers or stored.entry.towers)
        self.visual = self.compiled("visual", self._convert_visual)
        self.tokenizer = self.text = None
        if "text" in self.towers:
            text_cfg = json.loads((stored.path / CONFIG_FILE).read_text())["model_cfg"].get("text_cfg", {})
            self.tokenizer = load_tokenizer(stored.path, SimpleNamespace(context_length=text_cfg.get("context_length",
                                                                                                      77)))
            self.text = self.compiled("text", self._convert_text, self.text_precision)
        self.__dict__.pop("_torch_model", None)  # loaded only to convert; the compiled towers are all that runs

    @functools.cached_property
    def _torch_model(self) -> Any:
        import torch

        from engines.torch.clip import load_clip

        return load_clip(self.stored.path, torch.device("cpu"), towers=self.towers)[0]

    def _convert_visual(self):
        import torch

        shape = [3, self.cfg.height, self.cfg.width]
        return trace(tower(self._torch_model, "encode_image"), torch.zeros(2, *shape), shape)

    def _convert_text(self):
        tokens = self.tokenizer(["a photo of a cat.", "ein Foto"])
        return trace(tower(self._torch_model, "encode_text"), tokens, [tokens.shape[1]])

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        return l2_normalised(self.visual(self.normalised(images))[0])

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self.text is None:
            raise RuntimeError("this CLIP entry was saved without its text tower")
        return l2_normalised(self.text(self.tokenizer(list(texts)).numpy())[0])

    def truncated(self, texts: Sequence[str]) -> list[bool]:
        from engines.torch.clip import truncated

        return truncated(self.tokenizer, texts)

    @property
    def context_length(self) -> int:
        return int(self.tokenizer.context_length)

    def warm_up(self) -> None:
        self.embed_images(np.zeros((1, self.cfg.height, self.cfg.width, 3), np.uint8))
        if self.text is not None:
            self.embed_texts(["a photo of a warm-up."])


def load(stored: "StoredEntry", options: "EngineOptions") -> OpenVinoClip:
    return OpenVinoClip(stored, options)
