"""Zero-shot classification: probabilities of caller-supplied class names for images.

- :mod:`~capabilities.zero_shot.requests`: request schemas, validation and the probability maths;
- :mod:`~capabilities.zero_shot.inference`: :class:`ZeroShot`, the runner calls (immediate answers, and the
  ``zero-shot-image-classification`` task of the FES jobs in :mod:`capabilities.fes`).
"""

from capabilities.zero_shot.inference import MODELS, TASK, ZeroShot
from capabilities.zero_shot.requests import ZeroShotConfig

__all__ = ["MODELS", "TASK", "ZeroShot", "ZeroShotConfig"]
