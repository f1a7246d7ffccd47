"""Zero-shot runners: CLIP image and text embeddings for caller-supplied class names.

Models: OpenAI CLIP ViT-L/14 (open_clip ``ViT-L-14`` / ``openai``, MIT) as ``clip-vit-large-patch14``; the
multilingual OpenCLIP ViT-B/32 with an XLM-RoBERTa-base text tower trained on LAION-5B (open_clip
``xlm-roberta-base-ViT-B-32`` / ``laion5b_s13b_b90k``, MIT) as ``open-clip-vit-b32``, as in vitrivr's
feature-extraction-server; and the English OpenCLIP ViT-B/32 trained on LAION-2B (``ViT-B-32`` /
``laion2b_s34b_b79k``, MIT) as ``open-clip-vit-b32-laion2b``.
Each store entry holds both towers, the model's learned logit scale and its tokenizer (CLIP's BPE vocabulary, or
the Hugging Face tokenizer files of the XLM-R tower).
Class embeddings follow CLIP's zero-shot recipe (mean of normalised prompt embeddings, renormalised) and are
kept in a bounded LRU keyed by (template set, class name), so repeated class lists cost no text-tower work.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import bentoml
import numpy as np
import torch

from runners._clip import hf_text_cfg, image_embeddings, load_clip
from runners._torch import InferenceThread, autocast, compile_model, pick_device, runner_config
from serving import model_store
from serving.cache import LRU
from serving.imaging import PreprocessConfig
from serving.settings import settings

logger = logging.getLogger(__name__)

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
SAVE_HINT = "python scripts/save_models.py zero-shot   (or --dev for tiny test models)"


def load_zero_shot(path: Path, device: torch.device) -> tuple[torch.nn.Module, Any, PreprocessConfig, float]:
    """(CLIP model, tokenizer, preprocess config, exp(logit_scale)) from a store folder with both towers.

    The tokenizer is the one saved with the weights: CLIP's BPE vocabulary, or the Hugging Face tokenizer files
    beside a Hugging Face text tower (read by open_clip's own tokenizer factory)."""
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    model, cfg = load_clip(path, device, towers=["visual", "text"])
    if hf_text_cfg(path) is not None:
        tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
    else:
        tokenizer = SimpleTokenizer(bpe_path=str(Path(path) / VOCAB_FILE), context_length=model.context_length)
    return model, tokenizer, cfg, float(model.logit_scale.exp().item())


def prompts_for(classes: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every template filled with every class name, class-major. ``{}`` is replaced literally, never formatted."""
    return [t.replace("{}", c) for c in classes for t in templates]


def make_zero_shot_runner(service_name: str, tag: str, max_batch_size: int, max_latency_ms: int) -> Any:
    """A BentoML service for one zero-shot CLIP model (one per model, so each has its own batching)."""

    @bentoml.service(name=service_name, **runner_config())
    class ZeroShotRunner:
        model_ref = bentoml.models.BentoModel(tag)

        def __init__(self) -> None:
            stored = model_store.require(tag, SAVE_HINT)
            self.device = pick_device(settings.device)
            self.thread = InferenceThread(service_name)
            self.model, self.tokenizer, self.cfg, self.logit_scale = self.thread.call(
                load_zero_shot, Path(stored.path), self.device)
            self.cache = LRU(settings.zero_shot_text_cache)
            self.described = {**model_store.describe(stored), "logit_scale": self.logit_scale,
                              "preprocess": self.cfg.model_dump(mode="json")}
            self.encode_image = compile_model(self.model.encode_image, settings.torch_compile)
            self.thread.warm_up(self._encode_images, self.cfg.height, self.cfg.width, settings.torch_compile)
            self.thread.call(self._encode_texts, ["a photo of a warm-up."])  # warm-up of both towers
            logger.info("%s ready: %s on %s", service_name, stored.tag, self.device)

        def _encode_texts(self, texts: list[str]) -> np.ndarray:
            tokens = self.tokenizer(texts).to(self.device)
            with torch.inference_mode(), autocast(self.device):
                features = self.model.encode_text(tokens)
            return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()

        def _encode_images(self, images: np.ndarray) -> np.ndarray:
            return image_embeddings(self.encode_image, self.cfg, images, self.device).cpu().numpy()

        @bentoml.api(batchable=True, batch_dim=0, max_batch_size=max_batch_size, max_latency_ms=max_latency_ms)
        async def embed_images(self, images: np.ndarray) -> np.ndarray:
            """uint8 ``(N, H, W, 3)`` -> L2-normalised image embeddings ``(N, D)`` float32."""
            out = await self.thread.run(self._encode_images, images)
            if len(out) != len(images):
                raise RuntimeError(f"model returned {len(out)} embeddings for {len(images)} images")
            return out

        @bentoml.api(batchable=True, batch_dim=0, max_batch_size=max_batch_size, max_latency_ms=max_latency_ms)
        async def embed_texts(self, texts: list[str]) -> np.ndarray:
            """Strings -> L2-normalised text embeddings ``(N, D)`` float32."""
            out = await self.thread.run(self._encode_texts, list(texts))
            if len(out) != len(texts):
                raise RuntimeError(f"model returned {len(out)} embeddings for {len(texts)} texts")
            return out

        @bentoml.api
        async def class_embeddings(self, classes: list[str], templates: list[str]) -> np.ndarray:
            """One L2-normalised embedding per class: the mean of its normalised prompt embeddings, renormalised."""
            return await self.thread.run(self._class_embeddings, classes, templates)

        def _class_embeddings(self, classes: list[str], templates: list[str]) -> np.ndarray:
            key_base = tuple(templates)
            found = {c: self.cache.get((key_base, c)) for c in classes}
            missing = [c for c, v in found.items() if v is None]
            if missing:
                prompts = self._encode_texts(prompts_for(missing, templates)).reshape(len(missing), len(templates), -1)
                means = prompts.mean(axis=1)
                means /= np.linalg.norm(means, axis=-1, keepdims=True)
                for c, emb in zip(missing, means):
                    self.cache.put((key_base, c), emb)
                    found[c] = emb
            return np.stack([found[c] for c in classes])

        @bentoml.api
        def info(self) -> dict[str, Any]:
            """Store tag, variant, learned logit scale, preprocessing and text-cache counters."""
            return {**self.described, "cache": self.cache.stats()}

    return ZeroShotRunner


ClipL14Runner = make_zero_shot_runner(
    "ClipL14Runner", settings.zero_shot_l14_model, settings.zero_shot_max_batch_size, settings.zero_shot_max_latency_ms
)
OpenClipB32Runner = make_zero_shot_runner(
    "OpenClipB32Runner", settings.zero_shot_b32_model, settings.zero_shot_max_batch_size,
    settings.zero_shot_max_latency_ms,
)
OpenClipB32Laion2bRunner = make_zero_shot_runner(
    "OpenClipB32Laion2bRunner", settings.zero_shot_b32_laion2b_model, settings.zero_shot_max_batch_size,
    settings.zero_shot_max_latency_ms,
)
