"""Inference engines: one numpy-level protocol per task, one implementation per backend.

The runners (:mod:`runners`) and bulk scoring's Ray actors (:mod:`bulk.stages`) call engines, never each other:
they hand over uint8 ``(N, H, W, 3)`` images already resized and cropped by :mod:`serving.imaging` (or strings)
and get numpy arrays back. Which engine runs a model is chosen from its store entry and ``ENGINE``
(:func:`choose`): ``torch`` (:mod:`engines.torch`) or ``openvino`` (:mod:`engines.openvino`, the CPU default where
installed), or a backend the entry's metadata names; a further backend is one more package here plus
:func:`register`, with no change to runners or bulk (as immich's ``sessions/`` and infinity's per-task engines).

Tasks and their protocols:
- ``classify`` (:class:`Classifier`): images -> the k best classes with their softmax probabilities;
- ``image-embedding`` (:class:`ImageEmbedder`): images -> L2-normalised embeddings;
- ``text-embedding`` (:class:`TextEmbedder`): strings -> L2-normalised embeddings;
- ``head`` (:class:`Head`): embeddings -> one regression output each.

An engine is loaded per store entry (:func:`load`); a CLIP entry with both towers is one engine object that
implements both embedding protocols, so the weights load once.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from model_store import StoredEntry


@dataclass(frozen=True)
class EngineOptions:
    """How to run: ``engine`` (auto, torch, openvino), ``device`` (auto, cpu, cuda), ``precision`` (auto, fp32,
    bf16), ``compile`` (off or a torch.compile mode), ``threads`` (CPU threads for the engine's own work; 0 leaves the
    backend's default)."""

    device: str = "auto"
    precision: str = ""  # unset: auto
    compile: str = "off"
    threads: int = 0
    engine: str = ""  # ENGINE: auto (unset), torch, openvino


class Engine(Protocol):
    """What every engine has: its backend's name, where it runs and in which precision (fp32, bf16), and a
    warm-up that compiles or caches kernels."""

    backend: str
    device: str
    precision: str

    def warm_up(self) -> None: ...


@runtime_checkable
class Classifier(Protocol):
    labels: list[str]

    def classify(self, images: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 ``(N, H, W, 3)`` -> (probabilities ``(N, k)`` float32, best first; class indices ``(N, k)``)."""

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, 3)`` -> the full softmax ``(N, C)`` float32 (for sums over groups of classes)."""


def top_k(probabilities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(N, C)`` probabilities -> (the k largest, their class indices), each ``(N, k)``, best first (ties: lower
    index first)."""
    probs = np.asarray(probabilities, np.float32)
    k = min(k, probs.shape[-1])
    part = np.argpartition(-probs, k - 1, axis=-1)[:, :k]
    order = np.lexsort((part, np.take_along_axis(-probs, part, axis=-1)), axis=-1)
    indices = np.take_along_axis(part, order, axis=-1)
    return np.take_along_axis(probs, indices, axis=-1), indices


@runtime_checkable
class ImageEmbedder(Protocol):
    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, 3)`` -> L2-normalised float32 ``(N, D)``."""


@runtime_checkable
class TextEmbedder(Protocol):
    context_length: int  # tokens the text tower sees; longer texts are cut

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Strings -> L2-normalised float32 ``(N, D)``."""

    def truncated(self, texts: Sequence[str]) -> list[bool]:
        """Per string: longer than ``context_length`` tokens, so embedded cut to it."""


@runtime_checkable
class Head(Protocol):
    def apply(self, embeddings: np.ndarray) -> np.ndarray:
        """float32 ``(N, D)`` -> float32 ``(N,)``."""


Loader = Callable[["StoredEntry", EngineOptions], Engine]
# (backend, catalog kind) -> loader, or "module:function" imported on first use so that reading this registry
# imports no backend.
_LOADERS: dict[tuple[str, str], Loader | str] = {
    ("torch", "timm-classifier"): "engines.torch.classifier:load",
    ("torch", "clip"): "engines.torch.clip:load",
    ("torch", "linear-head"): "engines.torch.head:load",
    ("openvino", "timm-classifier"): "engines.openvino.classifier:load",
    ("openvino", "clip"): "engines.openvino.clip:load",
}
ENGINES = ("auto", "torch", "openvino")


def register(backend: str, kind: str, loader: Loader) -> None:
    """Make ``backend`` able to run models of catalog ``kind``; entries whose metadata names it then use it."""
    _LOADERS[(backend, kind)] = loader


def backends(kind: str) -> list[str]:
    """The backends that can run ``kind``."""
    return [b for b, k in _LOADERS if k == kind]


def openvino_installed() -> bool:
    """True when the openvino package imports (the openvino extra, installed by ``make install``)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def on_cpu(device: str) -> bool:
    """Whether DEVICE ``device`` means the CPU here (``auto`` does where CUDA is not visible)."""
    if device != "auto":
        return device == "cpu"
    import torch

    return not torch.cuda.is_available()


def choose(stored: "StoredEntry", options: EngineOptions) -> str:
    """The backend that runs a store entry. An entry whose metadata names an engine other than torch gets that
    one. Otherwise ENGINE decides: ``torch`` or ``openvino`` where it can run the entry's kind (other kinds, the
    linear head, stay torch), and ``auto`` (unset) picks OpenVINO on a CPU where it is installed (faster there at
    equal answers in fp32: README, "CPU engines and precision"), torch on CUDA or with TORCH_COMPILE set."""
    setting = options.engine or "auto"
    if setting not in ENGINES:
        raise ValueError(f"ENGINE={setting!r}: use one of {', '.join(ENGINES)}")
    kind = stored.entry.kind
    if stored.meta.engine != "torch":
        return stored.meta.engine
    if setting == "auto":  # TORCH_COMPILE asks for torch
        runs = (("openvino", kind) in _LOADERS and options.compile == "off" and on_cpu(options.device)
                and openvino_installed())
        return "openvino" if runs else "torch"
    if setting == "openvino" and ("openvino", kind) in _LOADERS:
        if not openvino_installed():
            raise RuntimeError("ENGINE=openvino but the openvino package is not installed: run `make install` "
                               "(or pip install openvino), or set ENGINE=auto")
    return setting if (setting, kind) in _LOADERS else "torch"


def load(stored: "StoredEntry", options: EngineOptions) -> Engine:
    """The engine for a store entry: the backend :func:`choose` picks, for the catalog entry's kind."""
    kind, backend = stored.entry.kind, choose(stored, options)
    loader = _LOADERS.get((backend, kind))
    if loader is None:
        raise RuntimeError(f"{stored.tag} asks for the {backend!r} engine, which cannot run {kind} models here; "
                           f"available: {', '.join(backends(kind)) or 'none'}")
    if isinstance(loader, str):
        module, _, name = loader.partition(":")
        loader = getattr(importlib.import_module(module), name)
    return loader(stored, options)
