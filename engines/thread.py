"""The one thread that does all of an engine's work, whichever thread or event loop asks for it."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

T = TypeVar("T")


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
