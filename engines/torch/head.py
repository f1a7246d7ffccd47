"""The torch engine for linear heads: LAION's aesthetic predictor ``sa_0_4_vit_b_16_linear.pth`` (MIT).

A ``Linear(512, 1)`` from GitHub LAION-AI/aesthetic-predictor regressing LAION's 0-10 rating scale (unbounded) from
L2-normalised OpenAI CLIP ViT-B/16 image embeddings.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np
import torch

from engines import EngineOptions

if TYPE_CHECKING:
    from model_store import StoredEntry

HEAD_DIM = 512
HEAD_FILE = "head.safetensors"


def load_head(state: Mapping[str, torch.Tensor], dim: int = HEAD_DIM) -> torch.nn.Linear:
    """A ``Linear(dim, 1)`` from a state dict, refusing any other keys or shapes."""
    expected = {"weight": (1, dim), "bias": (1,)}
    got = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__ for k, v in state.items()}
    if got != expected:
        raise ValueError(f"the aesthetic head must be a Linear({dim}, 1) state dict {expected}; this file holds {got}")
    head = torch.nn.Linear(dim, 1)
    head.load_state_dict(dict(state), strict=True)
    return head.eval()


def load_head_entry(head_path: Path, device: torch.device) -> torch.nn.Linear:
    """The LAION head of a store entry, on ``device``."""
    from safetensors.torch import load_file

    return load_head(load_file(str(Path(head_path) / HEAD_FILE))).to(device)


def aesthetic_scores(head: torch.nn.Linear, embeddings: torch.Tensor) -> np.ndarray:
    """L2-normalised CLIP ViT-B/16 embeddings -> raw (unclamped) LAION scores ``(N,)`` float32."""
    with torch.inference_mode():
        return head(embeddings).squeeze(-1).float().cpu().numpy()


class TorchHead:
    """A linear-head store entry in PyTorch (:class:`engines.Head`); it runs on the CPU, where embeddings arrive."""

    backend = "torch"
    device = "cpu"
    precision = "fp32"  # a single Linear on fp32 embeddings

    def __init__(self, stored: "StoredEntry", options: EngineOptions) -> None:
        self.head = load_head_entry(stored.path, torch.device("cpu"))

    def apply(self, embeddings: np.ndarray) -> np.ndarray:
        return aesthetic_scores(self.head, torch.from_numpy(np.ascontiguousarray(embeddings, np.float32)))

    def warm_up(self) -> None:
        self.apply(np.zeros((1, self.head.in_features), np.float32))


def load(stored: "StoredEntry", options: EngineOptions) -> TorchHead:
    return TorchHead(stored, options)


def load_aesthetic(clip_path: Path, head_path: Path, device: torch.device):
    """(CLIP model with the towers stored, head, preprocess config), all on ``device``: the aesthetic model as
    plain torch modules, for tools that run it outside an engine (the benchmark's peers)."""
    from engines.torch.clip import load_clip, stored_towers

    clip, cfg = load_clip(clip_path, device, towers=stored_towers(clip_path))
    return clip, load_head_entry(head_path, device), cfg
