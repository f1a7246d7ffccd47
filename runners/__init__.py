"""The model runners: one BentoML service per served catalog entry, built by :func:`runners.factory.make_runner`.

Importing this package builds nothing and patches nothing: :func:`services` does both, once, for the service
that composes them (``service.py``).
"""

from __future__ import annotations

import functools
from typing import Any

import catalog
from runners.factory import BATCHERS, TOP_K, RankScore, TopK, make_runner

__all__ = ["TOP_K", "RankScore", "TopK", "make_runner", "services"]


@functools.cache
def services() -> dict[str, Any]:
    """Runner services by catalog key (``species``, ``aesthetic``, ``zero_shot_l14``, ...), with the adaptive
    batcher chosen by ``RUNNER_BATCHER`` installed first (serving/batching.py)."""
    from serving import batching
    from serving.settings import settings

    if settings.runner_batcher not in BATCHERS:
        raise ValueError(f"RUNNER_BATCHER={settings.runner_batcher!r}: use one of {', '.join(BATCHERS)}")
    if settings.runner_batcher == "idle-aware":
        batching.install()
    return {entry.key: make_runner(entry) for entry in catalog.served() if entry.key}
