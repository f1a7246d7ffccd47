"""The job store interface: one small set of operations with a backend per engine.

- ``sqlite:///path/jobs.sqlite`` (:mod:`jobs.sqlite`): the embedded default, for the gateway workers
  of one host;
- ``postgresql://user:pass@host:5432/db`` (:mod:`jobs.postgres`): shared by every replica.

Both give the same semantics: a job is durable before its id is returned; a worker holds a job under a lease it
keeps renewing, and a job whose lease lapsed is claimed again by any worker; a write by a worker that lost its
lease is discarded, so every attempt's result is written at most once; finished jobs keep their result, however
often it is read, until the retention period has passed. Methods block: callers run them in a thread.
"""

from __future__ import annotations

import abc
from typing import Any, Callable

import numpy as np

from jobs.model import ZERO_SHOT_TASK, Job


class JobStore(abc.ABC):
    """Durable jobs (zero-shot classification, image and text embeddings). ``owner`` is a worker's id (``host:pid:nonce``)."""

    notifies = False  # True: listen() reports queued and finished jobs, so nobody needs to poll for them
    retention_s: float
    lease_s: float

    @abc.abstractmethod
    def init(self) -> None:
        """Create or upgrade the schema (safe when several workers or replicas start at once); a RuntimeError
        that names the setting when the store is unusable."""

    @abc.abstractmethod
    def submit(self, model: str, batched: bool, pixels: np.ndarray, classes: list[str], templates: list[str],
               owner: str | None = None, task: str = ZERO_SHOT_TASK) -> Job:
        """Persist a new job and its inputs (``pixels``: uint8 images, or a unicode array of texts for a text task);
        both are durable when this returns. With ``owner`` the job is written already leased to that worker (as
        if claimed), which then runs it."""

    @abc.abstractmethod
    def get(self, job_id: str) -> Job | None:
        """The job, or None when unknown or past its retention."""

    @abc.abstractmethod
    def claim(self, owner: str, limit: int) -> list[tuple[Job, np.ndarray]]:
        """Lease up to ``limit`` runnable jobs (queued, or running under a lapsed lease) to ``owner``; no two
        callers ever get the same attempt. Cancelled jobs whose worker is gone become ``cancelled`` instead. Each
        job is as claimed: its ``updated_at`` is the time of the claim on the store's clock."""

    @abc.abstractmethod
    def renew(self, owner: str, job_ids: list[str]) -> None:
        """Extend the leases ``owner`` holds on ``job_ids``."""

    @abc.abstractmethod
    def finish(self, job_id: str, status: str, result: Any = None, error: str | None = None,
               owner: str | None = None) -> Job | None:
        """Mark a running job complete or failed (``cancelled``, with no result, when its cancellation was asked
        for meanwhile), drop its pixels and start the retention clock. With ``owner``, only while that worker
        still holds the job. The finished job, or None when nothing was written."""

    @abc.abstractmethod
    def cancel(self, job_id: str) -> tuple[str, Job] | None:
        """Cancel a job: a queued one at once, a running one once its current runner call returns (its result is
        then never written). (the status it had, the job now), or None when unknown."""

    @abc.abstractmethod
    def retry_later(self, job_id: str, error: str, delay_s: float, count_attempt: bool = True,
                    owner: str | None = None) -> None:
        """Put a running job back in the queue after ``delay_s``; an uncounted retry gives the attempt back."""

    @abc.abstractmethod
    def release_dead_local_owners(self, host: str) -> int:
        """Requeue running jobs whose owner was a process on ``host`` that no longer exists (those whose
        cancellation was asked for become ``cancelled``); the number of such owners."""

    @abc.abstractmethod
    def purge_expired(self) -> int:
        """Delete the jobs whose retention has passed; how many."""

    @abc.abstractmethod
    def unfinished(self, model: str, limit: int = 1000) -> list[tuple[str, str]]:
        """(id, status) of the model's queued and running jobs, oldest first."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Jobs by status, retained ones included."""

    def listen(self, on_event: Callable[[str, str], None]) -> None:
        """Report (QUEUED, "") / (FINISHED, job id) / (RECONNECTED, "") from any replica to ``on_event``, called in
        a background thread. Only where ``notifies``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections and stop listening."""
