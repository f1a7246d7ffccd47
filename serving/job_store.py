"""The job store interface: one small set of operations with a backend per engine.

- ``sqlite:///path/jobs.sqlite`` (:mod:`serving.job_store_sqlite`): the embedded default, for the gateway workers
  of one host;
- ``postgresql://user:pass@host:5432/db`` (:mod:`serving.job_store_postgres`): shared by every replica.

Both give the same semantics: a job is durable before its id is returned; a worker holds a job under a lease it
keeps renewing, and a job whose lease lapsed is claimed again by any worker; a write by a worker that lost its
lease is discarded, so every attempt's result is written at most once; finished jobs keep their result, however
often it is read, until the retention period has passed. Methods block: callers run them in a thread.
"""

from __future__ import annotations

import abc
import io
import json
import os
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from serving.errors import ServiceError

STARTING, RUNNING, COMPLETE, FAILED, CANCELLED = "starting", "running", "complete", "failed", "cancelled"
FINAL = (COMPLETE, FAILED, CANCELLED)
COLUMNS = "id, model, batched, status, classes, templates, result, error, attempts, created_at, updated_at, expires_at"
# Events a store with notifications reports to its listener: (channel, job id or "").
QUEUED, FINISHED, RECONNECTED = "queued", "finished", "reconnected"


@dataclass(frozen=True)
class Job:
    id: str
    model: str
    batched: bool
    status: str
    classes: list[str]
    templates: list[str]
    result: Any
    error: str | None
    attempts: int
    created_at: float
    updated_at: float
    expires_at: float | None

    @classmethod
    def from_row(cls, row: tuple) -> "Job":
        (id_, model, batched, status, classes, templates, result, error, attempts, created, updated, expires) = row
        return cls(id_, model, bool(batched), status, json.loads(classes), json.loads(templates),
                   json.loads(result) if result else None, error, attempts, created, updated, expires)


class JobStoreUnavailable(ServiceError):
    """The database cannot be reached or did not answer in time: nothing was accepted or changed."""

    def __init__(self, reason: str) -> None:
        super().__init__(503, "job_store_unavailable", f"The job store is not reachable ({reason}); nothing was "
                         "accepted or changed. Retry shortly.", {"Retry-After": "2"})


def pack(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, pixels, allow_pickle=False)
    return buf.getvalue()


def unpack(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_local_owners(owners: list[str], host: str) -> list[str]:
    """The owners (``host:pid:nonce``) that were processes on ``host`` that no longer exist."""
    return [o for o in owners if o and o.rsplit(":", 2)[0] == host and not pid_alive(int(o.rsplit(":", 2)[1]))]


class JobStore(abc.ABC):
    """Durable zero-shot jobs. ``owner`` is a worker's id (``host:pid:nonce``)."""

    notifies = False  # True: listen() reports queued and finished jobs, so nobody needs to poll for them
    retention_s: float
    lease_s: float

    @abc.abstractmethod
    def init(self) -> None:
        """Create or upgrade the schema (safe when several workers or replicas start at once); a RuntimeError
        that names the setting when the store is unusable."""

    @abc.abstractmethod
    def submit(self, model: str, batched: bool, pixels: np.ndarray, classes: list[str], templates: list[str],
               owner: str | None = None) -> Job:
        """Persist a new job and its pixels; both are durable when this returns. With ``owner`` the job is
        written already leased to that worker (as if claimed), which then runs it."""

    @abc.abstractmethod
    def get(self, job_id: str) -> Job | None:
        """The job, or None when unknown or past its retention."""

    @abc.abstractmethod
    def claim(self, owner: str, limit: int) -> list[tuple[Job, np.ndarray]]:
        """Lease up to ``limit`` runnable jobs (queued, or running under a lapsed lease) to ``owner``; no two
        callers ever get the same attempt. Cancelled jobs whose worker is gone become ``cancelled`` instead."""

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


def redact(url: str) -> str:
    """``url`` without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def open_job_store(url: str, *, retention_s: float, lease_s: float, pool_size: int = 8,
                   timeout_ms: int = 5000) -> JobStore:
    """The store for ``url``: ``sqlite:///relative/path``, ``sqlite:////absolute/path``, or ``postgresql://...``."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from serving.job_store_sqlite import SQLiteJobStore

        return SQLiteJobStore(url.removeprefix("sqlite:///"), retention_s, lease_s)
    if scheme in ("postgresql", "postgres"):
        from serving.job_store_postgres import PostgresJobStore

        return PostgresJobStore(url, retention_s, lease_s, pool_size=pool_size, timeout_ms=timeout_ms)
    raise RuntimeError(f"JOB_STORE_URL={redact(url)!r} is not supported: give sqlite:///path/to/jobs.sqlite or "
                       "postgresql://user:password@host:5432/database.")
