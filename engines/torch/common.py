"""Device, precision and normalisation helpers of the torch engine."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch

from engines.precision import PRECISIONS, cpu_flags, resolve_precision  # noqa: F401 (re-exported)

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
    """The context of :func:`default_precision`: bf16 autocast on CUDA, none on a CPU."""
    return default_precision(device).context()


@dataclass(frozen=True)
class Precision:
    """How a model runs: on CUDA, bf16 is autocast over fp32 weights (as measured on GPUs so far); on a CPU it is
    bf16 weights and inputs, since autocast takes open_clip's attention off its fast path and copies weights per
    token there. fp32 is exact everywhere."""

    name: str
    device: torch.device

    @classmethod
    def of(cls, setting: str, device: torch.device) -> "Precision":
        return cls(resolve_precision(setting, device), device)

    @property
    def cpu_bf16(self) -> bool:
        return self.name == "bf16" and self.device.type != "cuda"

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's inputs."""
        return torch.bfloat16 if self.cpu_bf16 else torch.float32

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model with its weights in this precision."""
        return model.to(torch.bfloat16) if self.cpu_bf16 else model

    def context(self) -> contextlib.AbstractContextManager:
        if self.name == "bf16" and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def default_precision(device: torch.device) -> Precision:
    """The precision of a plain module whose weights were not prepared (the benchmark's peers, callers passing no
    precision): bf16 autocast on CUDA, fp32 on a CPU."""
    return Precision("bf16" if device.type == "cuda" else "fp32", device)


class TorchEngine:
    """What every torch engine sets up from its store entry and options: device, precision, compile mode and the
    preprocessing saved with the weights."""

    backend = "torch"

    def __init__(self, stored: Any, options: Any) -> None:
        self.torch_device = pick_device(options.device)
        self.device = str(self.torch_device)
        self.compile_mode = options.compile
        self.cfg = stored.meta.require_preprocess()
        self._precision = Precision.of(options.precision, self.torch_device)
        self.precision = self._precision.name


def to_normalised(images: np.ndarray, mean: Sequence[float], std: Sequence[float], device: torch.device,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> ``dtype`` ``(N, 3, H, W)`` normalised on ``device``."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected a uint8 (N, H, W, 3) batch, got {images.dtype} {images.shape}")
    batch = torch.from_numpy(np.ascontiguousarray(images))
    if device.type == "cuda":
        batch = batch.pin_memory().to(device, non_blocking=True)
    batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    batch = batch.sub_(mean_t).div_(std_t)
    return batch if dtype == torch.float32 else batch.to(dtype)


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
