"""The PostgreSQL job store: one database shared by every replica (psycopg 3 and its connection pool).

Claims take rows with ``FOR UPDATE SKIP LOCKED``, so replicas never wait on each other nor run the same attempt.
Queued and finished jobs are announced with ``NOTIFY``; a listener per process wakes its worker and the waiting
status calls at once. Times come from the database's clock, so replicas whose clocks differ agree on leases.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any, Callable

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout, TooManyRequests

from jobs.model import (CANCELLED, COLUMNS, FAILED, FINISHED, QUEUED, RECONNECTED, RUNNING, STARTING, ZERO_SHOT_TASK,
                        Job, JobStoreUnavailable, dead_local_owners, pack, redact, unpack)
from jobs.store import JobStore

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
_LOCK = 0x7669_7369_6F6E  # advisory lock id held while the schema is created or upgraded
_NOW = "extract(epoch FROM clock_timestamp())"
_CHANNELS = {"vision_jobs_queued": QUEUED, "vision_jobs_finished": FINISHED}
# Errors in a statement itself (a bug, not an outage) when the connection still works: not hidden behind a 503.
_MISTAKES = (psycopg.ProgrammingError, psycopg.IntegrityError, psycopg.DataError, psycopg.NotSupportedError)
# Failures a second try at once would not cure: the statement timed out, or no connection is to be had.
_NO_RETRY = (psycopg.errors.QueryCanceled, PoolTimeout, PoolClosed, TooManyRequests)
# psycopg_pool gives up re-creating a lost connection after this long (then tries again on the next request); its
# default, 300 s, let the backoff between attempts grow to minutes, so a long outage outlived the database's return.
RECONNECT_TIMEOUT_S = 10.0
# Pixels live in job_inputs, so claims and lease renewals never touch them; stored out of line and uncompressed
# (pglz gained little on pixels and cost more CPU than the bytes it saved).
_MIGRATIONS = {
    1: """
CREATE TABLE jobs (
    id text PRIMARY KEY, model text NOT NULL, batched boolean NOT NULL, status text NOT NULL,
    classes text NOT NULL, templates text NOT NULL, result text, error text,
    attempts integer NOT NULL DEFAULT 0, owner text, lease_until double precision,
    not_before double precision NOT NULL DEFAULT 0, cancel_requested boolean NOT NULL DEFAULT false,
    created_at double precision NOT NULL, updated_at double precision NOT NULL, expires_at double precision
);
CREATE INDEX jobs_queue ON jobs (status, created_at);
CREATE INDEX jobs_expiry ON jobs (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE job_inputs (id text PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE, pixels bytea NOT NULL);
ALTER TABLE job_inputs ALTER COLUMN pixels SET STORAGE EXTERNAL;
""",
    2: f"ALTER TABLE jobs ADD COLUMN task text NOT NULL DEFAULT '{ZERO_SHOT_TASK}';",  # embedding jobs
}


class PostgresJobStore(JobStore):
    """Jobs in PostgreSQL, shared by every gateway worker of every replica."""

    notifies = True

    def __init__(self, url: str, retention_s: float, lease_s: float, *, pool_size: int = 8,
                 timeout_ms: int = 5000, pool_options: dict[str, Any] | None = None) -> None:
        """``pool_options``: more ConnectionPool arguments (tests shorten ``reconnect_timeout``, ``max_lifetime``)."""
        self.url, self.retention_s, self.lease_s, self.timeout_ms = url, retention_s, lease_s, timeout_ms
        self.pool = ConnectionPool(
            url, min_size=1, max_size=max(1, pool_size), timeout=timeout_ms / 1000, open=False, name="job-store",
            **{"reconnect_timeout": RECONNECT_TIMEOUT_S, **(pool_options or {})},
            kwargs={"autocommit": True, "connect_timeout": max(1, timeout_ms // 1000),
                    "application_name": "vision-serve",
                    "options": f"-c statement_timeout={timeout_ms} -c idle_in_transaction_session_timeout="
                               f"{timeout_ms * 2}"})
        self._stop = threading.Event()
        self._listeners: list[threading.Thread] = []

    def _call(self, fn: Callable[[psycopg.Connection], Any]) -> Any:
        """``fn`` on a pooled connection (autocommit: each statement is its own transaction unless ``fn`` opens
        one). A connection the server dropped (a restart) is replaced and ``fn`` tried once more on a fresh one;
        every write here is safe to repeat. Any failure of the database or of the way to it is
        JobStoreUnavailable (503), whatever class the driver gives it; a mistake in a statement on a working
        connection is raised as it is."""
        for attempt in (1, 2):
            conn: psycopg.Connection | None = None
            try:
                with self.pool.connection() as conn:
                    return fn(conn)
            except (psycopg.Error, OSError) as exc:
                lost = conn is not None and (conn.broken or conn.closed)
                if isinstance(exc, _MISTAKES) and not lost:
                    raise
                stale = attempt == 1 and (lost or (isinstance(exc, psycopg.OperationalError)
                                                   and not isinstance(exc, _NO_RETRY)))
                if not stale:
                    raise JobStoreUnavailable(f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}") from None

    def init(self) -> None:
        try:
            self.pool.open(wait=True, timeout=max(5.0, self.timeout_ms / 1000))
            with self.pool.connection() as conn, conn.transaction():  # replicas starting together take turns
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (component text PRIMARY KEY,"
                             " version integer NOT NULL)")
                row = conn.execute("SELECT version FROM schema_version WHERE component = 'jobs'").fetchone()
                have = row[0] if row else 0
                for version in range(have + 1, SCHEMA_VERSION + 1):
                    conn.execute(_MIGRATIONS[version])
                    logger.info("Job store %s: schema version %d", redact(self.url), version)
                conn.execute("INSERT INTO schema_version VALUES ('jobs', %s) ON CONFLICT (component) DO UPDATE"
                             " SET version = EXCLUDED.version", (max(have, SCHEMA_VERSION),))
        except psycopg.Error as exc:
            self.pool.close()
            raise RuntimeError(f"The job store at {redact(self.url)} is not usable ({type(exc).__name__}: {exc}); "
                               "check JOB_STORE_URL (postgresql://user:password@host:5432/database), that the "
                               "server is up and that the user may create tables.") from None
        if have > SCHEMA_VERSION:
            self.pool.close()
            raise RuntimeError(f"The job store at {redact(self.url)} has schema version {have}, newer than this "
                               f"release's {SCHEMA_VERSION}: upgrade the service, or point JOB_STORE_URL at another "
                               "database.")

    def submit(self, model: str, batched: bool, pixels: np.ndarray, classes: list[str], templates: list[str],
               owner: str | None = None, task: str = ZERO_SHOT_TASK) -> Job:
        job_id = str(uuid.uuid4())
        status, attempts = (RUNNING, 1) if owner else (STARTING, 0)

        def run(conn: psycopg.Connection) -> float:
            row = conn.execute(  # one statement, one round trip: both rows, and the wake-up of idle workers
                f"WITH job AS (INSERT INTO jobs (id, model, batched, status, classes, templates, attempts, owner,"
                f" lease_until, created_at, updated_at, task) VALUES (%s, %s, %s, %s, %s, %s, %s, %s,"
                f" CASE WHEN %s THEN {_NOW} + %s END, {_NOW}, {_NOW}, %s) ON CONFLICT (id) DO NOTHING"
                f" RETURNING created_at),"
                f" pixels AS (INSERT INTO job_inputs (id, pixels) SELECT %s, %s FROM job)"
                f" SELECT created_at, CASE WHEN %s THEN pg_notify('vision_jobs_queued', '') END FROM job",
                (job_id, model, batched, status, json.dumps(classes), json.dumps(templates), attempts, owner,
                 owner is not None, self.lease_s, task, job_id, pack(pixels), owner is None)).fetchone()
            # None: a retry after a lost answer found the row written the first time
            return (row or conn.execute("SELECT created_at FROM jobs WHERE id = %s", (job_id,)).fetchone())[0]

        now = self._call(run)
        return Job(job_id, model, batched, status, classes, templates, None, None, attempts, now, now, None, task)

    def get(self, job_id: str) -> Job | None:
        row = self._call(lambda conn: conn.execute(
            f"SELECT {COLUMNS} FROM jobs WHERE id = %s AND (expires_at IS NULL OR expires_at > {_NOW})",
            (job_id,)).fetchone())
        return Job.from_row(row) if row else None

    def claim(self, owner: str, limit: int) -> list[tuple[Job, np.ndarray]]:
        def run(conn: psycopg.Connection) -> list[tuple]:
            conn.execute(  # a cancelled job whose worker is gone is not run again
                f"WITH gone AS (UPDATE jobs SET status = %s, owner = NULL, updated_at = {_NOW},"
                f" expires_at = {_NOW} + %s WHERE id IN (SELECT id FROM jobs WHERE status = %s AND lease_until <"
                f" {_NOW} AND cancel_requested FOR UPDATE SKIP LOCKED) RETURNING id)"
                f" DELETE FROM job_inputs WHERE id IN (SELECT id FROM gone)", (CANCELLED, self.retention_s, RUNNING))
            return conn.execute(
                f"WITH taken AS (UPDATE jobs SET status = %s, owner = %s, lease_until = {_NOW} + %s,"
                f" attempts = attempts + 1, updated_at = {_NOW} WHERE id IN (SELECT id FROM jobs WHERE"
                f" (status = %s AND not_before <= {_NOW}) OR (status = %s AND lease_until < {_NOW} AND NOT"
                f" cancel_requested) ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING {COLUMNS})"
                f" SELECT taken.*, job_inputs.pixels FROM taken LEFT JOIN job_inputs USING (id)"
                f" ORDER BY taken.created_at", (RUNNING, owner, self.lease_s, STARTING, RUNNING, limit)).fetchall()

        if limit <= 0:
            return []
        claimed = []
        for row in self._call(run):
            job, pixels = Job.from_row(row[:-1]), row[-1]
            if pixels is not None:
                claimed.append((job, unpack(pixels)))
            else:  # cannot happen through this class; a hand-edited store must not wedge the queue
                self.finish(job.id, FAILED, error="The job's image is missing from the job store; submit it again.")
        return claimed

    def renew(self, owner: str, job_ids: list[str]) -> None:
        if job_ids:
            self._call(lambda conn: conn.execute(
                f"UPDATE jobs SET lease_until = {_NOW} + %s WHERE owner = %s AND status = %s AND id = ANY(%s)",
                (self.lease_s, owner, RUNNING, job_ids)))

    def finish(self, job_id: str, status: str, result: Any = None, error: str | None = None,
               owner: str | None = None) -> Job | None:
        row = self._call(lambda conn: conn.execute(
            f"WITH done AS (UPDATE jobs SET status = CASE WHEN cancel_requested THEN %s ELSE %s END,"
            f" result = CASE WHEN cancel_requested THEN NULL ELSE %s END,"
            f" error = CASE WHEN cancel_requested THEN NULL ELSE %s END,"
            f" updated_at = {_NOW}, expires_at = {_NOW} + %s"
            f" WHERE id = %s AND status = %s AND (%s::text IS NULL OR owner = %s) RETURNING {COLUMNS}),"
            f" pixels AS (DELETE FROM job_inputs WHERE id IN (SELECT id FROM done))"
            f" SELECT *, pg_notify('vision_jobs_finished', id) FROM done",
            (CANCELLED, status, json.dumps(result) if result is not None else None, error, self.retention_s,
             job_id, RUNNING, owner, owner)).fetchone())
        return Job.from_row(row[:-1]) if row else None

    def cancel(self, job_id: str) -> tuple[str, Job] | None:
        def run(conn: psycopg.Connection) -> tuple[str, Job] | None:
            with conn.transaction():
                return locked(conn)

        def locked(conn: psycopg.Connection) -> tuple[str, Job] | None:
            row = conn.execute(f"SELECT status FROM jobs WHERE id = %s AND (expires_at IS NULL OR expires_at >"
                               f" {_NOW}) FOR UPDATE", (job_id,)).fetchone()
            if row is None:
                return None
            if row[0] == STARTING:
                conn.execute(f"UPDATE jobs SET status = %s, updated_at = {_NOW}, expires_at = {_NOW} + %s"
                             f" WHERE id = %s", (CANCELLED, self.retention_s, job_id))
                conn.execute("DELETE FROM job_inputs WHERE id = %s", (job_id,))
                conn.execute("SELECT pg_notify('vision_jobs_finished', %s)", (job_id,))
            elif row[0] == RUNNING:
                conn.execute(f"UPDATE jobs SET cancel_requested = true, updated_at = {_NOW} WHERE id = %s", (job_id,))
            job = Job.from_row(conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = %s", (job_id,)).fetchone())
            return row[0], job

        return self._call(run)

    def retry_later(self, job_id: str, error: str, delay_s: float, count_attempt: bool = True,
                    owner: str | None = None) -> None:
        self._call(lambda conn: conn.execute(  # waiters re-read the job; idle workers look for work
            f"WITH back AS (UPDATE jobs SET status = CASE WHEN cancel_requested THEN %s ELSE %s END,"
            f" owner = NULL, updated_at = {_NOW},"
            f" error = CASE WHEN cancel_requested THEN NULL ELSE %s END,"
            f" expires_at = CASE WHEN cancel_requested THEN {_NOW} + %s END,"
            f" not_before = {_NOW} + %s, attempts = attempts - CASE WHEN cancel_requested OR %s THEN 0 ELSE 1 END"
            f" WHERE id = %s AND status = %s AND (%s::text IS NULL OR owner = %s) RETURNING id, status),"
            f" pixels AS (DELETE FROM job_inputs WHERE id IN (SELECT id FROM back WHERE status = %s))"
            f" SELECT pg_notify('vision_jobs_finished', id), pg_notify('vision_jobs_queued', '') FROM back",
            (CANCELLED, STARTING, error, self.retention_s, delay_s, count_attempt, job_id, RUNNING, owner, owner,
             CANCELLED)))

    def release_dead_local_owners(self, host: str) -> int:
        owners = [o for (o,) in self._call(lambda conn: conn.execute(
            "SELECT DISTINCT owner FROM jobs WHERE status = %s AND owner LIKE %s",
            (RUNNING, host + ":%")).fetchall())]
        dead = dead_local_owners(owners, host)
        for owner in dead:
            self._call(lambda conn, owner=owner: conn.execute(
                f"WITH gone AS (UPDATE jobs SET status = CASE WHEN cancel_requested THEN %s ELSE %s END,"
                f" owner = NULL, expires_at = CASE WHEN cancel_requested THEN {_NOW} + %s END"
                f" WHERE owner = %s AND status = %s RETURNING id, status)"
                f" DELETE FROM job_inputs WHERE id IN (SELECT id FROM gone WHERE status = %s)",
                (CANCELLED, STARTING, self.retention_s, owner, RUNNING, CANCELLED)))
        if dead:
            self._call(lambda conn: conn.execute("SELECT pg_notify('vision_jobs_queued', '')"))
        return len(dead)

    def purge_expired(self) -> int:
        return self._call(lambda conn: conn.execute(
            f"DELETE FROM jobs WHERE expires_at IS NOT NULL AND expires_at <= {_NOW}").rowcount)

    def unfinished(self, model: str, limit: int = 1000) -> list[tuple[str, str]]:
        return [tuple(r) for r in self._call(lambda conn: conn.execute(
            "SELECT id, status FROM jobs WHERE model = %s AND status IN (%s, %s) ORDER BY created_at LIMIT %s",
            (model, STARTING, RUNNING, limit)).fetchall())]

    def counts(self) -> dict[str, int]:
        return dict(self._call(lambda conn: conn.execute(
            "SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()))

    def listen(self, on_event: Callable[[str, str], None]) -> None:
        thread = threading.Thread(target=self._listen, args=(on_event,), name="job-store-listen", daemon=True)
        self._listeners.append(thread)
        thread.start()

    def _listen(self, on_event: Callable[[str, str], None]) -> None:
        """One connection that LISTENs; reconnects with a backoff, and reports RECONNECTED so that anything
        announced meanwhile is read again."""
        delay = 0.2
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5,
                                     application_name="vision-serve-listen") as conn:
                    for channel in _CHANNELS:
                        conn.execute(f"LISTEN {channel}")
                    if delay > 0.2:
                        logger.info("Job store notifications restored")
                    delay = 0.2
                    on_event(RECONNECTED, "")
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            on_event(_CHANNELS.get(note.channel, note.channel), note.payload)
            except (psycopg.Error, OSError) as exc:
                if delay == 0.2:
                    logger.warning("Job store notifications lost (%s); reconnecting", type(exc).__name__)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def close(self) -> None:
        self._stop.set()
        self.pool.close()
        for thread in self._listeners:
            thread.join(timeout=3)
