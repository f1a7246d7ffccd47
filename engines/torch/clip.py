"""The torch engine for CLIP towers (open_clip): image and text embeddings.

Models: OpenAI CLIP ViT-B/16 and ViT-L/14 (MIT), the multilingual OpenCLIP XLM-R ViT-B/32 (LAION-5B, MIT) and the
English OpenCLIP ViT-B/32 (LAION-2B, MIT); see catalog.py.

A store entry is an open_clip ``local-dir`` folder: ``open_clip_config.json`` (model_cfg + preprocess_cfg) and
``open_clip_model.safetensors`` holding either the whole model or only the towers listed in its metadata. A model
whose text tower is a Hugging Face transformer (the multilingual XLM-R ViT-B/32) also keeps that transformer's
``config.json`` and its tokenizer files in the folder, so it builds without the hub.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from engines import EngineOptions
from engines.torch.common import (Precision, TorchEngine, compile_model, default_precision, to_normalised,
                                  warm_up_sizes)
from serving.imaging import PreprocessConfig

if TYPE_CHECKING:
    from model_store import StoredEntry

logger = logging.getLogger(__name__)

CONFIG_FILE = "open_clip_config.json"
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
WEIGHTS_FILE = "open_clip_model.safetensors"
TOWER_PREFIXES = {"visual": ("visual.",), "text": ("transformer.", "token_embedding.", "positional_embedding",
                                                  "ln_final.", "text_projection", "attn_mask", "text.")}


HF_TEXT_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "sentencepiece.bpe.model")  # those present are kept beside the weights


def hf_text_cfg(folder: Path) -> dict[str, Any] | None:
    """For a Hugging Face text tower, its text_cfg pointed at ``folder`` (which holds its config and tokenizer)
    with no weight download (the CLIP weights hold the tower); None for open_clip's own text transformer."""
    text_cfg = json.loads((Path(folder) / CONFIG_FILE).read_text())["model_cfg"].get("text_cfg", {})
    if not text_cfg.get("hf_model_name"):
        return None
    return {**text_cfg, "hf_model_name": str(folder), "hf_tokenizer_name": str(folder), "hf_model_pretrained": False}


def create_open_clip(folder: Path, **kwargs: Any) -> torch.nn.Module:
    """``open_clip.create_model`` on an open_clip folder, with a Hugging Face text tower built from the folder."""
    import open_clip

    if (text_cfg := hf_text_cfg(folder)) is not None:
        kwargs.update(text_cfg=text_cfg, pretrained_text=False)
    return open_clip.create_model(f"local-dir:{folder}", **kwargs)


def preprocess_config(open_clip_cfg: dict[str, Any]) -> PreprocessConfig:
    """open_clip's preprocess dict -> the gateway's PreprocessConfig (open_clip resizes without a crop margin)."""
    size = open_clip_cfg.get("size", 224)
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    mode = open_clip_cfg.get("resize_mode", "shortest")
    if mode not in ("shortest", "squash"):
        raise ValueError(f"open_clip resize_mode {mode!r} is not supported; use 'shortest' or 'squash'")
    return PreprocessConfig(
        input_size=(3, height, width),
        interpolation=open_clip_cfg.get("interpolation", "bicubic"),
        mean=tuple(open_clip_cfg["mean"]),
        std=tuple(open_clip_cfg["std"]),
        crop_pct=1.0,
        crop_mode="center" if mode == "shortest" else "squash",
    )


def tower_state(state: dict[str, torch.Tensor], towers: Sequence[str]) -> dict[str, torch.Tensor]:
    """The part of a full CLIP state dict that belongs to ``towers`` (all of it when both are kept)."""
    if set(towers) >= {"visual", "text"}:
        return dict(state)
    prefixes = tuple(p for t in towers for p in TOWER_PREFIXES[t])
    return {k: v for k, v in state.items() if k.startswith(prefixes)}


def stored_towers(path: Path) -> list[str]:
    """The towers a store folder's weights hold (read from the safetensors index, not the tensors)."""
    from safetensors import safe_open

    with safe_open(str(Path(path) / WEIGHTS_FILE), framework="pt") as weights:
        keys = list(weights.keys())
    return [t for t, prefixes in TOWER_PREFIXES.items() if any(k.startswith(prefixes) for k in keys)]


def load_clip(path: Path, device: torch.device, towers: Sequence[str]) -> tuple[torch.nn.Module, PreprocessConfig]:
    """Build the open_clip model from a store folder and load the saved towers strictly."""
    import open_clip
    from safetensors.torch import load_file

    with _quiet_random_init():  # weights are loaded right below; open_clip's warning would mislead operators
        model = create_open_clip(Path(path), load_weights=False)
    state = load_file(str(Path(path) / WEIGHTS_FILE))
    expected = tower_state(model.state_dict(), towers)
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if missing or unexpected:
        raise RuntimeError(f"{path}: weights do not match towers {list(towers)} "
                           f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    model.load_state_dict(state, strict=False)  # strictness for the kept towers is checked above
    cfg = preprocess_config(open_clip.get_model_preprocess_cfg(model))
    return model.eval().to(device), cfg


def image_embeddings(encode_image: Callable[[torch.Tensor], torch.Tensor], cfg: PreprocessConfig, images: np.ndarray,
                     device: torch.device, precision: Precision | None = None) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> L2-normalised float32 image embeddings ``(N, D)`` on ``device``: what every CLIP
    runner and bulk scoring compute, from an image tower's ``encode_image``."""
    if images.shape[1:3] != (cfg.height, cfg.width):
        raise ValueError(f"expected {cfg.height}x{cfg.width} images, got {images.shape[1]}x{images.shape[2]}")
    precision = precision or default_precision(device)
    with torch.inference_mode(), precision.context():
        features = encode_image(to_normalised(images, cfg.mean, cfg.std, device, precision.dtype))
    return torch.nn.functional.normalize(features.float(), dim=-1)


def load_tokenizer(path: Path, model: torch.nn.Module) -> Any:
    """The tokenizer saved with the weights: CLIP's BPE vocabulary, or the Hugging Face tokenizer files beside a
    Hugging Face text tower (read by open_clip's own tokenizer factory)."""
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    if hf_text_cfg(path) is not None:
        return open_clip.get_tokenizer(f"local-dir:{path}")
    return SimpleTokenizer(bpe_path=str(Path(path) / VOCAB_FILE), context_length=model.context_length)


def truncated(tokenizer: Any, texts: Sequence[str]) -> list[bool]:
    """Per text: whether its tokens (start and end tokens included) exceed the tokenizer's context, so the model
    sees it cut there (both tokenizers cut silently)."""
    from open_clip.tokenizer import SimpleTokenizer

    if isinstance(tokenizer, SimpleTokenizer):
        return [len(tokenizer.encode(t)) + 2 > tokenizer.context_length for t in texts]
    return [len(tokenizer.tokenizer(tokenizer.clean_fn(t))["input_ids"]) > tokenizer.context_length for t in texts]


def load_zero_shot(path: Path, device: torch.device) -> tuple[torch.nn.Module, Any, PreprocessConfig, float]:
    """(CLIP model, tokenizer, preprocess config, exp(logit_scale)) from a store folder with both towers."""
    model, cfg = load_clip(path, device, towers=["visual", "text"])
    return model, load_tokenizer(path, model), cfg, float(model.logit_scale.exp().item())


def text_embeddings(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], device: torch.device,
                    precision: Precision | None = None) -> np.ndarray:
    """Strings -> L2-normalised float32 text embeddings ``(N, D)``."""
    tokens = tokenizer(list(texts)).to(device)
    with torch.inference_mode(), (precision or default_precision(device)).context():
        features = model.encode_text(tokens)
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()


class TorchClip(TorchEngine):
    """A CLIP store entry in PyTorch: :class:`engines.ImageEmbedder`, and :class:`engines.TextEmbedder` when the
    entry keeps the text tower. Preprocessing comes from the entry's metadata, the one saved with the weights.
    On a CPU only the image tower takes bf16 weights: the text tower in bf16 moved zero-shot probabilities past
    2e-3 on the dev ViT-B/16, and prompts are embedded once and cached, as in the OpenVINO engine."""

    def __init__(self, stored: "StoredEntry", options: EngineOptions) -> None:
        super().__init__(stored, options)
        towers = list(stored.meta.towers or stored.entry.towers)
        self.model, _ = load_clip(stored.path, self.torch_device, towers=towers)
        self.model.visual = self._precision.prepare(self.model.visual)  # the text tower stays fp32 (see below)
        self.tokenizer = load_tokenizer(stored.path, self.model) if "text" in towers else None
        self.encode_image = compile_model(self.model.encode_image, options.compile)

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        return image_embeddings(self.encode_image, self.cfg, images, self.torch_device, self._precision).cpu().numpy()

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self.tokenizer is None:
            raise RuntimeError("this CLIP entry was saved without its text tower")
        return text_embeddings(self.model, self.tokenizer, texts, self.torch_device, self._precision)

    def truncated(self, texts: Sequence[str]) -> list[bool]:
        return truncated(self.tokenizer, texts)

    @property
    def context_length(self) -> int:
        return int(self.tokenizer.context_length)

    def warm_up(self) -> None:
        for n in warm_up_sizes(self.compile_mode):
            self.embed_images(np.zeros((n, self.cfg.height, self.cfg.width, 3), np.uint8))
        if self.tokenizer is not None:
            self.embed_texts(["a photo of a warm-up."])


def load(stored: "StoredEntry", options: EngineOptions) -> TorchClip:
    return TorchClip(stored, options)


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(s in message for s in ("initialized randomly", "no CLIP weights found", "initialized partially"))


@contextlib.contextmanager
def _quiet_random_init():
    root, flt = logging.getLogger(), _DropRandomInitWarning()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)
