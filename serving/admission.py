"""Admission to a runner: a bounded number of calls in flight per gateway worker, and a deadline to get in."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, TypeVar

from serving.errors import RunnerBusy, call_runner

__all__ = ["RunnerBusy", "RunnerGate"]
T = TypeVar("T")

class RunnerGate:
    """Lets at most ``limit`` calls into one runner at a time; the rest wait here, first come first served.

    BentoML's batcher sheds the *oldest* queued request whenever its learned per-item cost times the whole queue
    length passes the latency budget, so a deep queue and a noisy estimate shed requests that the next batch would
    have served (64 of a 150-request /classify burst in one CI run). With the queue capped at a couple of batches
    per gateway worker, that estimate stays far below the budget and shedding is decided here instead, by the wait
    each request has actually had: one that cannot get in within ``wait_s`` gets :class:`RunnerBusy`.
    """

    def __init__(self, limit: int, wait_s: float) -> None:
        if limit < 1 or wait_s <= 0:
            raise ValueError(f"a runner gate needs limit >= 1 and wait_s > 0; got {limit} and {wait_s}")
        self.limit, self.wait_s = limit, wait_s
        self._slots = asyncio.Semaphore(limit)
        self.in_flight = 0

    async def call(self, method: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Call a runner API once a slot is free (resending on closed connections, see ``call_runner``)."""
        try:
            await asyncio.wait_for(self._slots.acquire(), self.wait_s)
        except asyncio.TimeoutError:
            raise RunnerBusy(f"no runner slot freed up within {self.wait_s:g} s") from None
        self.in_flight += 1
        try:
            return await call_runner(method, *args, **kwargs)
        finally:
            self.in_flight -= 1
            self._slots.release()
