"""Converting a store entry's torch model to OpenVINO IR once, caching it in the entry's folder, compiling it.

The IR is written next to the weights (``<entry>/openvino/<openvino version>/<part>.xml``) on first use, in fp32
(never fp16-compressed), so later starts, other workers and a built Bento read it instead of converting. Where the
folder is read-only the model is converted in memory at each start. Conversion happens while the runner loads,
never in the request path.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from engines.precision import resolve_precision

if TYPE_CHECKING:
    import openvino as ov

    from engines import EngineOptions
    from model_store import StoredEntry

logger = logging.getLogger(__name__)

CACHE_DIR = "openvino"
OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


def ir_folder(stored: "StoredEntry") -> Path:
    import openvino as ov

    return stored.path / CACHE_DIR / ov.get_version().split("-")[0]


def converted(stored: "StoredEntry", part: str, convert: Callable[[], "ov.Model"]) -> "ov.Model | Path":
    """The IR of ``part`` (``classifier``, ``visual``, ``text``) of an entry: the cached file, else ``convert()``
    saved into the cache (atomically, so concurrent starts never read half a file), or kept in memory where the
    entry's folder cannot be written."""
    import openvino as ov

    folder = ir_folder(stored)
    xml = folder / f"{part}.xml"
    if xml.is_file() and xml.with_suffix(".bin").is_file():
        return xml
    started = time.perf_counter()
    model = convert()
    logger.info("%s: converted the %s model to OpenVINO in %.1f s", stored.tag, part, time.perf_counter() - started)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{part}-", dir=folder))
        ov.save_model(model, tmp / xml.name, compress_to_fp16=False)
        for suffix in (".bin", ".xml"):  # the .xml last: its presence means the pair is whole
            os.replace(tmp / xml.with_suffix(suffix).name, xml.with_suffix(suffix))
        shutil.rmtree(tmp, ignore_errors=True)
        return xml
    except OSError as exc:
        logger.warning("%s: cannot cache the OpenVINO %s model in %s (%s); converting at each start", stored.tag,
                       part, folder, exc)
        return model


def compile_ir(model: "ov.Model | Path", precision: str, threads: int = 0) -> Any:
    """The model compiled for the CPU: latency hint (one request runs on every core; the runner hands over whole
    batches), inference precision ``f32`` or ``bf16``."""
    import openvino as ov

    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": OV_PRECISION[precision]}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return ov.Core().compile_model(model, "CPU", config)


class OpenVinoEngine:
    """What every OpenVINO engine sets up: the CPU, the precision, the preprocessing saved with the weights."""

    backend = "openvino"
    device = "cpu"

    def __init__(self, stored: "StoredEntry", options: "EngineOptions") -> None:
        if options.device == "cuda":
            raise RuntimeError("ENGINE=openvino runs on the CPU; set DEVICE=auto or cpu, or ENGINE=torch for CUDA")
        self.stored, self.threads = stored, options.threads
        self.cfg = stored.meta.require_preprocess()
        self.precision = resolve_precision(options.precision, "cpu")

    def compiled(self, part: str, convert: Callable[[], "ov.Model"], precision: str | None = None) -> Any:
        return compile_ir(converted(self.stored, part, convert), precision or self.precision, self.threads)

    def normalised(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, 3)`` of the model's size -> normalised float32 ``(N, 3, H, W)``."""
        cfg = self.cfg
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (cfg.height, cfg.width, 3):
            raise ValueError(f"expected a uint8 (N, {cfg.height}, {cfg.width}, 3) batch, got {images.dtype} "
                             f"{images.shape}")
        mean = np.asarray(cfg.mean, np.float32).reshape(1, 3, 1, 1)
        scale = 1.0 / (255.0 * np.asarray(cfg.std, np.float32).reshape(1, 3, 1, 1))
        return (images.transpose(0, 3, 1, 2).astype(np.float32) - 255.0 * mean) * scale


def trace(module: Any, example: Any, shape: list[int]) -> "ov.Model":
    """``openvino.convert_model`` of a torch module with a dynamic batch dimension."""
    import openvino as ov
    import torch

    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes traced as constants: only the batch varies
        return ov.convert_model(module, example_input=example, input=[(-1, *shape)])


def l2_normalised(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
