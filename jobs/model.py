"""The job model shared by every part of the queue: a job, its statuses, the events a store reports, and the
error an unreachable store raises."""

from __future__ import annotations

import io
import json
import os
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from serving.errors import ServiceError

STARTING, RUNNING, COMPLETE, FAILED, CANCELLED = "starting", "running", "complete", "failed", "cancelled"
FINAL = (COMPLETE, FAILED, CANCELLED)
# The task a job runs; every job stored before tasks existed is a zero-shot one.
ZERO_SHOT_TASK = "zero-shot-image-classification"
COLUMNS = ("id, model, batched, status, classes, templates, result, error, attempts, created_at, updated_at, expires_at,"
           " task")
# Events a store with notifications reports to its listener: (channel, job id or "").
QUEUED, FINISHED, RECONNECTED = "queued", "finished", "reconnected"


@dataclass(frozen=True)
class Job:
    """A job as stored. Times are seconds since the epoch on the store's clock; a job just claimed has
    ``updated_at`` = the time of the claim. ``task`` says what the inputs are and what the result holds
    (:data:`ZERO_SHOT_TASK`: images and class names; an embedding task: images, or texts, and no classes)."""

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
    task: str = ZERO_SHOT_TASK

    @classmethod
    def from_row(cls, row: tuple) -> "Job":
        (id_, model, batched, status, classes, templates, result, error, attempts, created, updated, expires, task) = row
        return cls(id_, model, bool(batched), status, json.loads(classes), json.loads(templates),
                   json.loads(result) if result else None, error, attempts, created, updated, expires, task)


class JobStoreUnavailable(ServiceError):
    """The database cannot be reached or did not answer in time: nothing was accepted or changed."""

    def __init__(self, reason: str) -> None:
        super().__init__(503, "job_store_unavailable", f"The job store is not reachable ({reason}); nothing was "
                         "accepted or changed. Retry shortly.", {"Retry-After": "2"})


def pack(inputs: np.ndarray) -> bytes:
    """A job's inputs as stored: uint8 pixels, or a unicode array of texts (``.npy``, never pickled)."""
    buf = io.BytesIO()
    np.save(buf, inputs, allow_pickle=False)
    return buf.getvalue()


# np.load parses the .npy header with ast.literal_eval; on CPython 3.11.7 compile() from several threads at once can
# fail with "SystemError: AST constructor recursion depth mismatch" (seen twice in CI, in concurrent claims).
_NPY_HEADER = threading.Lock()


def unpack(blob: bytes) -> np.ndarray:
    with _NPY_HEADER:
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


def redact(url: str) -> str:
    """``url`` without its password, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
