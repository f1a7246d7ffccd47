"""Opening the job store a URL names; each backend module is imported only when chosen (PostgreSQL's driver is
then not needed for SQLite)."""

from __future__ import annotations

from urllib.parse import urlsplit

from jobs.model import redact
from jobs.store import JobStore


def open_job_store(url: str, *, retention_s: float, lease_s: float, pool_size: int = 8,
                   timeout_ms: int = 5000) -> JobStore:
    """The store for ``url``: ``sqlite:///relative/path``, ``sqlite:////absolute/path``, or ``postgresql://...``."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from jobs.sqlite import SQLiteJobStore

        return SQLiteJobStore(url.removeprefix("sqlite:///"), retention_s, lease_s)
    if scheme in ("postgresql", "postgres"):
        from jobs.postgres import PostgresJobStore

        return PostgresJobStore(url, retention_s, lease_s, pool_size=pool_size, timeout_ms=timeout_ms)
    raise RuntimeError(f"JOB_STORE_URL={redact(url)!r} is not supported: give sqlite:///path/to/jobs.sqlite or "
                       "postgresql://user:password@host:5432/database.")
