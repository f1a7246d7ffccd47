"""Durable zero-shot jobs: the job model, the store (SQLite or PostgreSQL), the worker that runs jobs in each
gateway worker process, and waiting for a job.

Modules: :mod:`jobs.model` (Job, statuses, JobStoreUnavailable), :mod:`jobs.store` (the store interface),
:mod:`jobs.sqlite` and :mod:`jobs.postgres` (the backends), :mod:`jobs.backends` (``open_job_store``),
:mod:`jobs.worker` (JobWorker, ``wait_until_final``), :mod:`jobs.metrics` (Prometheus). Each imports only the
modules listed before it, never this package's face.
"""

from jobs.backends import open_job_store
from jobs.model import (CANCELLED, COMPLETE, FAILED, FINAL, RUNNING, STARTING, Job, JobStoreUnavailable)
from jobs.store import JobStore
from jobs.worker import JobWorker, wait_until_final

__all__ = ["CANCELLED", "COMPLETE", "FAILED", "FINAL", "RUNNING", "STARTING", "Job", "JobStore", "JobStoreUnavailable",
           "JobWorker", "open_job_store", "wait_until_final"]
