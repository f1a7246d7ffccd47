"""On CUDA the species runner's bf16 path must agree with the CPU fp32 path. Skipped without a GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from runners._torch import autocast
from runners.species import load_species, preprocess_batch
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
