"""The runners' adaptive batcher: BentoML's ``CorkDispatcher`` with one accounting fix, so that a lone request's
latency does not depend on what the runner went through before.

BentoML's dispatcher holds a queue while the runner is free as long as ``n * (wn + tick + o_a) <= wait * 0.95``,
where ``wait`` is the mean time the first request of the last 50 batches spent queued. That time includes the
time it queued behind a busy runner (its semaphore held), so a burst teaches it a ``wait`` of hundreds of
milliseconds; every later lone request is then held about that long while the runner is idle, which logs about
the same wait again, so the estimate decays only by the 0.95 factor per refresh and survives idle periods
(bentoml/bentoml ``src/bentoml/_internal/marshal/dispatcher.py``, ``CorkDispatcher.controller`` and
``outbound_call``; BentoML 1.4.x).

``IdleAwareDispatcher`` logs as a batch's wait only the part of it the runner was free: the time the batcher
chose to hold the queue, not the time the runner made it wait. Batches still form while the runner is busy
(they take everything queued, up to ``max_batch_size``); a request that arrives at an idle runner is dispatched
as the dispatcher's own history of voluntary holds says, which after a burst is no longer inflated.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import attr
import bentoml
from bentoml._internal.marshal import dispatcher as bentoml_dispatcher

logger = logging.getLogger(__name__)

TESTED = ("1.4.",)


class IdleAwareDispatcher(bentoml_dispatcher.CorkDispatcher):
    """``CorkDispatcher`` whose wait statistic counts only the time a batch's first request waited while the
    runner was free."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.free_since = 0.0  # when the last batch returned (the runner has one batch at a time)

    async def outbound_call(self, inputs_info: tuple[Any, ...], training: bool = False) -> None:
        if inputs_info:
            first = inputs_info[0]
            held_from = max(first.enqueue_time, self.free_since)
            if held_from != first.enqueue_time:  # same data and future; only the wait it reports changes
                inputs_info = (attr.evolve(first, enqueue_time=held_from), *inputs_info[1:])
        try:
            await super().outbound_call(inputs_info, training)
        finally:
            self.free_since = time.time()


def install() -> bool:
    """Make BentoML's service apps build their batchers as ``IdleAwareDispatcher``; True when installed.

    Only on the BentoML versions this was checked against (the patched name is internal)."""
    from _bentoml_impl.server import app

    if not bentoml.__version__.startswith(TESTED):
        logger.warning("BentoML %s: keeping its own batcher (IdleAwareDispatcher is checked on %s)",
                       bentoml.__version__, ", ".join(f"{v}x" for v in TESTED))
        return False
    app.CorkDispatcher = IdleAwareDispatcher
    return True
