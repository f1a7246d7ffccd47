"""Durable jobs: the loop that runs the job store's jobs in each gateway worker, and waiting for a job.

A job is written (with its preprocessed pixels) before its id is returned, so accepted work survives any crash.
Workers claim jobs with a lease they keep renewing; a job whose worker died is claimed again once its lease
lapses, or at once when the dead worker was a process on this host. The store is SQLite or PostgreSQL
(:mod:`jobs.store`); with PostgreSQL every replica's workers share the queue, are woken by notifications
and keep retrying their writes while the database is away.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from typing import Any, Awaitable, Callable

import anyio
import numpy as np

import jobs.metrics as job_metrics
from jobs.model import (COMPLETE, FAILED, FINAL, FINISHED, QUEUED, RECONNECTED, ZERO_SHOT_TASK, Job,
                        JobStoreUnavailable)
from jobs.store import JobStore
from serving.errors import is_overload

logger = logging.getLogger(__name__)
COUNTS_EVERY_S = 5.0  # the jobs-by-status gauge is read from the store at most this often


class JobWorker:
    """Claims jobs from the store and runs them concurrently with ``execute``; one per gateway worker process.

    ``poll_s``: how often an idle worker looks for runnable jobs (lapsed leases, retries whose delay passed);
    new jobs wake it at once, from this process or, where the store notifies, from any replica.
    """

    def __init__(self, store: JobStore, execute: Callable[[Job, np.ndarray], Awaitable[Any]], *, concurrency: int,
                 max_attempts: int, ready: Callable[[], Awaitable[None]], poll_s: float | None = None) -> None:
        self.store, self.execute, self.ready = store, execute, ready
        self.concurrency, self.max_attempts = concurrency, max_attempts
        self.poll_s = poll_s if poll_s is not None else (1.0 if store.notifies else 0.25)
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.active: dict[str, asyncio.Task] = {}
        self._reserved = 0  # slots promised to submissions being written and to a claim in flight
        self._started = False  # the runners answered and dead workers' jobs were released
        self._watchers: dict[str, set[asyncio.Future]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._loop_ref: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop_ref = asyncio.get_running_loop()
        if self.store.notifies:
            self.store.listen(self._from_listener)
        self._task = self._loop_ref.create_task(self._loop())

    def notify(self) -> None:
        """A job was queued: look for work now rather than at the next poll."""
        self._wake.set()

    def _from_listener(self, event: str, job_id: str) -> None:
        """The store's listener thread: hand the event to the event loop."""
        if self._loop_ref is not None and not self._loop_ref.is_closed():
            self._loop_ref.call_soon_threadsafe(self._on_event, event, job_id)

    def _on_event(self, event: str, job_id: str) -> None:
        if event == QUEUED:
            self.notify()
        elif event == FINISHED and job_id not in self.active:  # our own: _run hands waiters the finished job
            self._resolve(job_id)
        elif event == RECONNECTED:  # notifications may have been missed: everyone looks again
            self.notify()
            for job in list(self._watchers):
                self._resolve(job)

    def _resolve(self, job_id: str, job: Job | None = None) -> None:
        """Wake the watchers of ``job_id``, with the job as written when this worker just finished it."""
        for future in self._watchers.pop(job_id, ()):
            if not future.done():
                future.set_result(job)

    async def submit(self, model: str, batched: bool, pixels: np.ndarray, classes: list[str],
                     templates: list[str], task: str = ZERO_SHOT_TASK) -> Job:
        """Persist a job; with a free slot here, lease it to this worker in the same write and start it at once
        (no claim query, no wake-up of the loop), otherwise leave it queued for the first free worker."""
        take = self._started and len(self.active) + self._reserved < self.concurrency
        self._reserved += take
        try:
            job = await anyio.to_thread.run_sync(
                lambda: self.store.submit(model, batched, pixels, classes, templates, self.owner if take else None,
                                          task))
        finally:
            self._reserved -= take
        if take:
            self.active[job.id] = asyncio.create_task(self._run(job, pixels))
        else:
            self.notify()
        return job

    def watch(self, job_id: str) -> asyncio.Future:
        """A future resolved when ``job_id`` may have changed: this worker stopped running it (finished, failed or
        requeued; the result is then the finished job, or None) or, where the store notifies, any replica
        finished it (None)."""
        future = asyncio.get_running_loop().create_future()
        self._watchers.setdefault(job_id, set()).add(future)
        return future

    def unwatch(self, job_id: str, future: asyncio.Future) -> None:
        watchers = self._watchers.get(job_id)
        if watchers is not None:
            watchers.discard(future)
            if not watchers:
                del self._watchers[job_id]

    async def stop(self) -> None:
        """Cancel the loop and the running jobs, and return once they have ended (their store calls included),
        so the store can be closed. A cancelled job stays leased to this worker until it is released or its lease
        lapses, and then runs again."""
        tasks = [t for t in (self._task, *self.active.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self) -> None:
        await self.ready()
        while True:  # the store may be away at start-up too
            try:
                released = await anyio.to_thread.run_sync(self.store.release_dead_local_owners, self.host)
                break
            except JobStoreUnavailable as exc:
                logger.warning("%s; the job worker starts once it answers", exc.detail)
                await asyncio.sleep(2)
        if released:
            logger.info("Resuming the jobs of %d stopped worker(s)", released)
        self._started = True
        last_renew = last_purge = last_counts = time.monotonic()
        while True:
            try:
                self._wake.clear()  # before the claim: a job queued while it runs wakes the next wait at once
                free = self.concurrency - len(self.active) - self._reserved
                claimed = await self._claim(free) if free > 0 else []
                now = time.monotonic()
                if now - last_renew > self.store.lease_s / 3:
                    await anyio.to_thread.run_sync(self.store.renew, self.owner, list(self.active))
                    last_renew = now
                if now - last_counts > COUNTS_EVERY_S:
                    job_metrics.set_counts(await anyio.to_thread.run_sync(self.store.counts))
                    last_counts = now
                if now - last_purge > 60:
                    await anyio.to_thread.run_sync(self.store.purge_expired)
                    await anyio.to_thread.run_sync(self.store.release_dead_local_owners, self.host)
                    last_purge = now
                if not claimed:
                    await self._idle()
            except asyncio.CancelledError:
                raise
            except JobStoreUnavailable as exc:
                logger.warning("job loop: %s", exc.detail)
                await asyncio.sleep(1)
            except Exception:
                logger.exception("job loop error; retrying")
                await asyncio.sleep(1)

    async def _idle(self) -> None:
        """Wait for a wake-up or the next poll. Not ``asyncio.wait_for``: before Python 3.12 it can swallow a
        cancellation that arrives as the event is set, and a job ending in ``stop()`` sets it."""
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({waiter}, timeout=self.poll_s)
        finally:
            waiter.cancel()

    async def _claim(self, free: int) -> list[tuple[Job, np.ndarray]]:
        """Claim up to ``free`` jobs and start them. The slots stay reserved while the claim runs on its thread,
        so a submission meanwhile queues its job instead of taking a slot the claim may fill."""
        self._reserved += free
        try:
            claimed = await anyio.to_thread.run_sync(self.store.claim, self.owner, free)
            for job, pixels in claimed:
                self.active[job.id] = asyncio.create_task(self._run(job, pixels))
            return claimed
        finally:
            self._reserved -= free

    async def _write(self, write: Callable[[], Any]) -> Any:
        """A store write from a running job, tried again while the store is unavailable: the job's outcome is
        kept until the database is back (if the lease lapses meanwhile, the store discards it)."""
        delay = 0.25
        while True:
            try:
                return await anyio.to_thread.run_sync(write)
            except JobStoreUnavailable as exc:
                logger.warning("keeping a job's outcome until the store answers: %s", exc.detail)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _finish(self, job: Job, status: str, **fields: Any) -> Job | None:
        """Write the job's outcome as its holder (kept until the store answers) and count it."""
        final = await self._write(lambda: self.store.finish(job.id, status, owner=self.owner, **fields))
        if final:
            job_metrics.finished(job, status)
        return final

    async def _run(self, job: Job, pixels: np.ndarray) -> None:
        store, owner, final = self.store, self.owner, None
        try:
            if job.attempts > self.max_attempts:  # claimed too often, e.g. it crashed its workers each time
                final = await self._finish(job, FAILED, error=f"Inference failed {self.max_attempts} times; the job "
                                                              "was given up.")
                return
            job_metrics.started(job)
            begun = time.monotonic()
            try:
                result = await self.execute(job, pixels)
            finally:
                job_metrics.ran(job, time.monotonic() - begun)
            final = await self._finish(job, COMPLETE, result=result)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_overload(exc):  # shed by a busy runner: wait, and keep the attempt
                job_metrics.retried(job, "overload")
                await self._write(lambda: store.retry_later(job.id, "runner at capacity", 1.0, count_attempt=False,
                                                            owner=owner))
                return
            logger.exception("job %s attempt %d failed", job.id, job.attempts)
            if job.attempts >= self.max_attempts:
                final = await self._finish(
                    job, FAILED, error=f"Inference failed after {job.attempts} attempts ({type(exc).__name__}).")
            else:
                msg, delay = f"attempt {job.attempts} failed ({type(exc).__name__}); retrying", 2.0 ** job.attempts
                job_metrics.retried(job, "error")
                await self._write(lambda: store.retry_later(job.id, msg, delay, owner=owner))
        finally:
            self.active.pop(job.id, None)
            self._resolve(job.id, final)
            self.notify()  # a slot is free: a queued job need not wait for the next poll


async def wait_until_final(store: JobStore, job_id: str, wait_s: float, worker: JobWorker | None = None) -> Job | None:
    """The job once complete, failed or cancelled, or as it stands after ``wait_s`` (None when unknown).

    Wakes as soon as ``worker`` (this process) finishes the job, and then answers with the job as it wrote it,
    or, where the store notifies, as soon as any replica does. Otherwise jobs run by other processes are re-read
    with a backoff from 5 to 250 ms. An unavailable store is read again until the wait is over.
    """
    deadline, delay = time.monotonic() + wait_s, 0.005
    notified = worker is not None and store.notifies
    read = not (worker and job_id in worker.active and wait_s > 0)  # running here: no need to look first
    while True:
        future = worker.watch(job_id) if worker else None  # before the read, so a finish in between wakes us
        try:
            if read:
                try:
                    job = await anyio.to_thread.run_sync(store.get, job_id)
                except JobStoreUnavailable:  # a waiting caller rides out a short outage; the last read decides
                    if time.monotonic() + 0.5 >= deadline:
                        raise
                    await asyncio.sleep(0.5)
                    continue
                left = deadline - time.monotonic()
                if job is None or job.status in FINAL or left <= 0:
                    return job
            woken_here, read, left = not read, True, deadline - time.monotonic()  # woken_here: it runs here
            if future is None:
                await asyncio.sleep(min(delay, left))
            else:
                await asyncio.wait({future}, timeout=left if notified or woken_here else min(delay, left))
                if future.done() and isinstance(future.result(), Job) and future.result().status in FINAL:
                    return future.result()
            delay = min(delay * 2, 0.25)
        finally:
            if future is not None:
                worker.unwatch(job_id, future)
