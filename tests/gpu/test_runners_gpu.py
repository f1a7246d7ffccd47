"""On CUDA the runners' bf16 paths must agree with their CPU fp32 paths. Skipped without a GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engines.torch.common import autocast, to_normalised
from engines.torch.classifier import load_species, preprocess_batch
from serving.imaging import decode_image, preprocess
from tests.conftest import encode, photo

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def probabilities(path: Path, device: torch.device, batch: np.ndarray) -> torch.Tensor:
    model, _, cfg = load_species(path, device)
    with torch.inference_mode(), autocast(device):
        return model(preprocess_batch(batch, cfg, device)).float().softmax(-1).cpu()


def test_cuda_bf16_matches_cpu_fp32(species_dev_model) -> None:
    path = Path(species_dev_model.path)
    _, _, cfg = load_species(path, torch.device("cpu"))
    batch = np.stack([preprocess(decode_image(encode(photo(n)), 10**8), cfg) for n in ("chelsea", "coffee", "rocket")])
    cpu = probabilities(path, torch.device("cpu"), batch)
    gpu = probabilities(path, torch.device("cuda"), batch)
    assert gpu.shape == cpu.shape
    torch.testing.assert_close(gpu, cpu, rtol=0.05, atol=1e-5)


def test_cuda_aesthetic_scores_match_cpu(aesthetic_models) -> None:
    from engines.torch.head import load_aesthetic

    clip, head = aesthetic_models
    results = []
    for device in (torch.device("cpu"), torch.device("cuda")):
        model, linear, cfg = load_aesthetic(Path(clip.path), Path(head.path), device)
        batch = np.stack([preprocess(decode_image(encode(photo(n)), 10**8), cfg) for n in ("chelsea", "rocket")])
        with torch.inference_mode(), autocast(device):
            emb = model.encode_image(to_normalised(batch, cfg.mean, cfg.std, device)).float()
        results.append(linear(torch.nn.functional.normalize(emb, dim=-1)).squeeze(-1).cpu())
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=0.05)


def test_torch_compile_with_cuda_graphs_answers_like_eager(species_dev_model, monkeypatch) -> None:
    import asyncio
    import dataclasses

    import runners.factory as factory
    from runners import services

    eager = services()["species"].inner()
    batch = np.stack([preprocess(decode_image(encode(photo(n)), 10**8), eager.cfg) for n in ("chelsea", "coffee")])
    expected = asyncio.run(eager.predict(batch))
    monkeypatch.setattr(factory, "settings", dataclasses.replace(factory.settings, torch_compile="reduce-overhead"))
    compiled = services()["species"].inner()
    for images, want in ((batch, expected), (batch[:1], expected[:1]), (batch, expected)):  # graphs replayed
        got = asyncio.run(compiled.predict(images))
        assert [g.labels[0] for g in got] == [w.labels[0] for w in want]
        np.testing.assert_allclose([g.scores for g in got], [w.scores for w in want], rtol=0, atol=0.02)


def test_eva02_attention_uses_a_fused_cuda_kernel_in_bf16(species_dev_model) -> None:
    import collections

    from torch.profiler import profile

    device = torch.device("cuda")
    model, _, cfg = load_species(Path(species_dev_model.path), device)
    with torch.inference_mode(), autocast(device), profile() as prof:
        model(torch.randn(4, 3, cfg.height, cfg.width, device=device))
    names = collections.Counter(event.name for event in prof.events())
    fused = sum(n for name, n in names.items()
                if any(k in name for k in ("flash_attention", "efficient_attention", "cudnn_attention")))
    assert fused >= len(model.blocks) and not any("attention_math" in name for name in names), dict(names)
