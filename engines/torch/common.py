"""Device, precision and normalisation helpers of the torch engine."""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Sequence, TypeVar

import numpy as np
import torch

logger = logging.getLogger(__name__)
T = TypeVar("T")


def gpu_available() -> bool:
    """True when CUDA is usable in this process."""
    return torch.cuda.is_available()


def pick_device(setting: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; ``cpu``/``cuda`` force one."""
    if setting == "auto":
        setting = "cuda" if gpu_available() else "cpu"
    if setting == "cuda" and not gpu_available():
        raise RuntimeError("DEVICE=cuda but no CUDA device is visible; set DEVICE=auto or cpu")
    return torch.device(setting)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPU, exact fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_normalised(images: np.ndarray, mean: Sequence[float], std: Sequence[float], device: torch.device) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> float ``(N, 3, H, W)`` normalised on ``device``."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected a uint8 (N, H, W, 3) batch, got {images.dtype} {images.shape}")
    batch = torch.from_numpy(np.ascontiguousarray(images))
    if device.type == "cuda":
        batch = batch.pin_memory().to(device, non_blocking=True)
    batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return batch.sub_(mean_t).div_(std_t)


COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_model(fn: Callable[..., T], mode: str) -> Callable[..., T]:
    """``fn`` (a model or its ``encode_image``) through ``torch.compile`` with a dynamic batch dimension, or as it is
    when ``mode`` is "off". "reduce-overhead" adds CUDA graphs, recorded once per batch size on its first use."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"TORCH_COMPILE={mode!r}: use one of {', '.join(COMPILE_MODES)}")
    if mode == "off":
        return fn
    logger.info("torch.compile(mode=%r) for %s", mode, getattr(fn, "__qualname__", type(fn).__name__))
    return torch.compile(fn, mode=mode, dynamic=True)


def warm_up_sizes(mode: str) -> tuple[int, ...]:
    """Batch sizes to warm up with: compiled code specialises batch 1, so batch 2 compiles the dynamic graph."""
    return (1,) if mode == "off" else (1, 2)
