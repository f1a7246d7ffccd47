"""Every attention layer of the runners' models runs as one fused PyTorch op (SDPA, or the fused MHA fast path),
not as separate matmul and softmax ops."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch
from torch.profiler import profile

FUSED = ("aten::scaled_dot_product_attention", "aten::_native_multi_head_attention")


def attention_ops(forward) -> dict[str, int]:
    with torch.inference_mode(), profile() as prof:
        forward()
    counts = collections.Counter(event.name for event in prof.events())
    return {name: counts[name] for name in FUSED + ("aten::_softmax",)}


def test_eva02_attention_is_fused(species_dev_model) -> None:
    from engines.torch.classifier import load_species

    model, _, cfg = load_species(Path(species_dev_model.path), torch.device("cpu"))
    ops = attention_ops(lambda: model(torch.randn(2, 3, cfg.height, cfg.width)))
    assert ops["aten::scaled_dot_product_attention"] == len(model.blocks), ops


@pytest.mark.parametrize("name", ["open-clip-vit-b32-laion2b", "open-clip-vit-b32"])
def test_clip_image_and_text_attention_is_fused(zero_shot_models, name: str) -> None:
    """open_clip's own text transformer, and the Hugging Face XLM-R text tower of the multilingual ViT-B/32."""
    from engines.torch.clip import load_zero_shot

    model, tokenizer, cfg, _ = load_zero_shot(Path(zero_shot_models[name].path), torch.device("cpu"))
    image = attention_ops(lambda: model.encode_image(torch.randn(2, 3, cfg.height, cfg.width)))
    text = attention_ops(lambda: model.encode_text(tokenizer(["a cat", "a dog"])))
    assert sum(image[name] for name in FUSED) == len(model.visual.transformer.resblocks), image
    layers = (model.text.transformer.config.num_hidden_layers if hasattr(model, "text")
              else len(model.transformer.resblocks))
    assert text["aten::scaled_dot_product_attention"] == layers, text
