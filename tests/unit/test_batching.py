"""The runners' batcher through a history of fake runner timings, on a fake clock (no timed assertions): after a
burst and an idle period, a lone request reaches an idle runner at once; under load, batches still form."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from bentoml._internal.marshal.dispatcher import CorkDispatcher

from serving import batching
from serving.batching import IdleAwareDispatcher

TICK = CorkDispatcher.TICKET_INTERVAL


class Clock:
    """Fake ``time.time``: it moves only when the batcher sleeps a tick or the fake runner computes."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake, real_sleep = Clock(), asyncio.sleep

    async def sleep(delay: float, result: Any = None) -> Any:
        fake.now += delay
        await real_sleep(0)
        return result

    monkeypatch.setattr(time, "time", fake)
    monkeypatch.setattr(asyncio, "sleep", sleep)
    fake.real_sleep = real_sleep
    return fake


def _history(kind: type[CorkDispatcher], clock: Clock) -> tuple[list[int], float]:
    """A runner at 20 ms + 5 ms per image; 20 lone requests, a burst of 128 clients sending 5 requests each, 60 s
    idle, then 20 lone requests one by one (as a concurrency-1 client sends them): the batch sizes of the burst and
    the last lone request's hold, in fake seconds from its arrival to the runner."""
    dispatcher = kind(max_latency_in_ms=60_000, max_batch_size=32, fallback=lambda: None,
                      get_batch_size=lambda _: 1)
    sizes: list[int] = []
    started: list[float] = []

    async def runner(batch: tuple[Any, ...]) -> list[Any]:
        started.append(clock.now)
        sizes.append(len(batch))
        clock.now += 0.020 + 0.005 * len(batch)
        await clock.real_sleep(0)
        return list(batch)

    call = dispatcher(runner)

    async def client(requests: int) -> None:
        for i in range(requests):
            await call(i)

    async def scenario() -> float:
        await client(20)  # BentoML's batcher trains on its first requests
        del sizes[:]
        await asyncio.gather(*(client(5) for _ in range(128)))
        burst = len(sizes)
        clock.now += 60
        for i in range(20):
            arrived = clock.now
            await call(i)
        hold = started[-1] - arrived
        del sizes[burst:]
        dispatcher.shutdown()
        return hold

    return sizes, asyncio.run(scenario())


def test_after_a_burst_and_idle_a_lone_request_goes_to_the_idle_runner_at_once(clock) -> None:
    sizes, hold = _history(IdleAwareDispatcher, clock)
    assert hold <= 2 * TICK, f"a lone request was held {hold * 1000:.0f} ms at an idle runner"
    assert max(sizes) == 32 and sum(sizes) == 640, "under the burst, batches should fill from the queue"


def test_bentomls_own_batcher_holds_it_for_what_the_burst_taught_it(clock) -> None:
    """The cause, kept as a check: if a BentoML release stops counting busy-runner time as wait, this fails and
    ``serving.batching`` can go."""
    _, hold = _history(CorkDispatcher, clock)
    assert hold > 50 * TICK


def test_install_makes_bentomls_service_apps_use_it(monkeypatch) -> None:
    from _bentoml_impl.server import app

    monkeypatch.setattr(app, "CorkDispatcher", CorkDispatcher)
    assert batching.install() and app.CorkDispatcher is IdleAwareDispatcher
    monkeypatch.setattr(batching.bentoml, "__version__", "1.5.0")
    monkeypatch.setattr(app, "CorkDispatcher", CorkDispatcher)
    assert not batching.install() and app.CorkDispatcher is CorkDispatcher
