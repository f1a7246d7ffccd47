"""Zero-shot classification: probabilities of caller-supplied class names for images.

- :mod:`~capabilities.zero_shot.requests`: request schemas, validation and the probability maths;
- :mod:`~capabilities.zero_shot.inference`: :class:`ZeroShot`, the runner calls (immediate answers and jobs);
- :mod:`~capabilities.zero_shot.jobs`: :class:`ZeroShotJobs`, requests as durable jobs (:mod:`jobs`);
- :mod:`~capabilities.zero_shot.rest`: their REST routes in vitrivr's feature-extraction-server layout (``/api``).
"""

from capabilities.zero_shot.inference import MODELS, ZeroShot
from capabilities.zero_shot.jobs import ZeroShotJobs
from capabilities.zero_shot.requests import ZeroShotConfig
from capabilities.zero_shot.rest import bind, rest

__all__ = ["MODELS", "ZeroShot", "ZeroShotConfig", "ZeroShotJobs", "bind", "rest"]
