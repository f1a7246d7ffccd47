"""Device, precision and normalisation helpers shared by the runners."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch

logger = logging.getLogger(__name__)
T = TypeVar("T")
BATCHERS = ("idle-aware", "bentoml")


def gpu_available() -> bool:
    """True when CUDA is usable in this process."""
    return torch.cuda.is_available()


GPU_SHARE = 0.2  # five runners share one GPU: BentoML places fractional requests on the same device


def service_resources() -> dict[str, Any]:
    """BentoML ``resources`` for a runner, from RUNNER_GPUS.

    ``auto`` declares a fifth of a GPU when CUDA is visible (so every runner lands on the same GPU instead of
    four of them being handed devices that do not exist), else CPU only. A number declares that many GPUs
    regardless of this machine, e.g. when building a Bento for GPU clouds on a CPU-only machine.
    """
    from serving.settings import settings

    share = GPU_SHARE if settings.runner_gpus == "auto" and gpu_available() else 0.0
    if settings.runner_gpus != "auto":
        try:
            share = float(settings.runner_gpus)
        except ValueError:
            raise ValueError(f"RUNNER_GPUS={settings.runner_gpus!r}: use 'auto' or a number such as 0.2") from None
    return {"gpu": share} if share > 0 else {"cpu": "1"}


def runner_config() -> dict[str, Any]:
    """``@bentoml.service`` options shared by every model runner.

    ``runner_connection``: BentoML 1.4 recycles a caller's connection session after 100 requests or 300 s and
    closes the old one while requests are still in flight on it, which fails them under load; the runners are
    local, so the session is never recycled. ``RUNNER_BATCHER`` picks the adaptive batcher (serving/batching.py).
    """
    from serving import batching
    from serving.settings import settings

    if settings.runner_batcher not in BATCHERS:
        raise ValueError(f"RUNNER_BATCHER={settings.runner_batcher!r}: use one of {', '.join(BATCHERS)}")
    if settings.runner_batcher == "idle-aware":
        batching.install()
    return {
        "resources": service_resources(),
        "workers": 1,
        "traffic": {"timeout": 120},
        "runner_connection": {"max_requests": 2**62, "max_age": 1e12},
    }


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


class InferenceThread:
    """The one thread that does all of a runner's torch work: loading, warm-up and every forward pass.

    Each thread that calls torch on CPU gets its own OpenMP team, and libgomp stops spin-waiting between parallel
    regions once a process holds more OpenMP threads than CPUs. BentoML builds a service on its event loop and
    runs sync APIs on a thread pool, so a runner would hold two teams and every forward would pay for waking
    sleeping threads. Measured on 2 cores (dev EVA02, batch 1): 28.7 ms per forward from one thread, 50 ms as soon
    as a second thread has called torch. Runs are serialised, as BentoML's default of one API thread does.
    """

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the inference thread and wait for it (for constructors)."""
        return self._pool.submit(fn, *args, **kwargs).result()

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the inference thread without blocking the event loop."""
        return await asyncio.wrap_future(self._pool.submit(functools.partial(fn, *args, **kwargs)))

    def warm_up(self, forward: Callable[[np.ndarray], Any], height: int, width: int, compile_mode: str) -> None:
        """Run ``forward`` on black uint8 images on this thread, at each of ``warm_up_sizes(compile_mode)``."""
        for n in warm_up_sizes(compile_mode):
            self.call(forward, np.zeros((n, height, width, 3), np.uint8))
