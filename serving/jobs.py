"""Durable jobs: a SQLite store shared by every gateway worker, and the loop that runs its jobs.

A job is written (with its preprocessed pixels) before its id is returned, so accepted work survives any crash.
Workers claim jobs with a lease they keep renewing; a job whose worker died is claimed again once its lease
lapses, or at once when the dead worker was a process on this host. Finished jobs keep their result for the
retention period, however often they are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import anyio
import numpy as np

from serving.errors import is_overload

logger = logging.getLogger(__name__)

STARTING, RUNNING, COMPLETE, FAILED, CANCELLED = "starting", "running", "complete", "failed", "cancelled"
FINAL = (COMPLETE, FAILED, CANCELLED)

# Pixels live in their own table: SQLite rewrites a whole row on UPDATE, so keeping them in ``jobs`` made every
# claim and lease renewal copy the image (a claim took 3.1 ms with a 224 px image, 0.55 ms without).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, model TEXT NOT NULL, batched INTEGER NOT NULL, status TEXT NOT NULL,
    classes TEXT NOT NULL, templates TEXT NOT NULL, result TEXT, error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, owner TEXT, lease_until REAL, not_before REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, expires_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, created_at);
CREATE TABLE IF NOT EXISTS job_inputs (id TEXT PRIMARY KEY, pixels BLOB NOT NULL);
"""
# Added after the first schema; _add_columns adds them to older stores.
_LATER_COLUMNS = {"cancel_requested": "INTEGER NOT NULL DEFAULT 0"}
_COLUMNS = "id, model, batched, status, classes, templates, result, error, attempts, created_at, updated_at, expires_at"


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


def _pack(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, pixels, allow_pickle=False)
    return buf.getvalue()


def _unpack(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False)


class JobStore:
    """Jobs in one SQLite file (WAL), safe to share between processes on one host."""

    def __init__(self, path: str | Path, retention_s: float, lease_s: float) -> None:
        self.path, self.retention_s, self.lease_s = Path(path), retention_s, lease_s

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def init(self) -> None:
        """Create the file and schema; a RuntimeError that names the setting when the path is unusable."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as conn:
                conn.executescript(_SCHEMA)
                _migrate_inline_pixels(conn)
                _add_columns(conn)
                conn.execute("CREATE TABLE IF NOT EXISTS probe (x)")
                conn.execute("DROP TABLE probe")
        except (OSError, sqlite3.Error) as exc:
            raise RuntimeError(f"The job store {self.path} is not usable ({exc}); set JOB_STORE_PATH to a writable "
                               "file on a local disk with free space.") from None

    def submit(self, model: str, batched: bool, pixels: np.ndarray, classes: list[str], templates: list[str],
               owner: str | None = None) -> Job:
        """Persist a new job and its pixels and return it; both are durable when this returns.

        With ``owner`` the job is written already leased to that worker (as if claimed), which then runs it.
        """
        now, job_id = time.time(), str(uuid.uuid4())
        status, attempts, lease = (RUNNING, 1, now + self.lease_s) if owner else (STARTING, 0, None)
        with self._connect() as conn, _transaction(conn):
            conn.execute("INSERT INTO job_inputs (id, pixels) VALUES (?, ?)", (job_id, _pack(pixels)))
            conn.execute(
                "INSERT INTO jobs (id, model, batched, status, classes, templates, attempts, owner, lease_until,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, model, int(batched), status, json.dumps(classes), json.dumps(templates), attempts, owner,
                 lease, now, now),
            )
        return Job(job_id, model, batched, status, classes, templates, None, None, attempts, now, now, None)

    def get(self, job_id: str) -> Job | None:
        """The job, or None when unknown or past its retention."""
        with self._connect() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ? AND (expires_at IS NULL OR expires_at > ?)",
                               (job_id, time.time())).fetchone()
        return Job.from_row(row) if row else None

    def claim(self, owner: str, limit: int) -> list[tuple[Job, np.ndarray]]:
        """Lease up to ``limit`` runnable jobs (queued, or running under a lapsed lease) to ``owner``."""
        now = time.time()
        with self._connect() as conn:
            with _transaction(conn):  # one write: a cancelled job whose worker is gone is not run again
                _drop_inputs(conn, conn.execute(
                    "UPDATE jobs SET status = ?, owner = NULL, updated_at = ?, expires_at = ? WHERE status = ?"
                    " AND lease_until < ? AND cancel_requested = 1 RETURNING id",
                    (CANCELLED, now, now + self.retention_s, RUNNING, now)).fetchall())
                jobs = [Job.from_row(r) for r in conn.execute(
                    f"UPDATE jobs SET status = ?, owner = ?, lease_until = ?, attempts = attempts + 1, updated_at = ?"
                    f" WHERE id IN (SELECT id FROM jobs WHERE (status = ? AND not_before <= ?)"
                    f" OR (status = ? AND lease_until < ?) ORDER BY created_at LIMIT ?)"
                    f" RETURNING {_COLUMNS}",
                    (RUNNING, owner, now + self.lease_s, now, STARTING, now, RUNNING, now, limit),
                ).fetchall()]
            pixels = dict(conn.execute(f"SELECT id, pixels FROM job_inputs WHERE id IN ({','.join('?' * len(jobs))})",
                                       [j.id for j in jobs]).fetchall()) if jobs else {}
        claimed = []
        for job in jobs:
            if job.id in pixels:
                claimed.append((job, _unpack(pixels[job.id])))
            else:  # cannot happen through this class; a hand-edited store must not wedge the queue
                self.finish(job.id, FAILED, error="The job's image is missing from the job store; submit it again.")
        return claimed

    def renew(self, owner: str, job_ids: list[str]) -> None:
        """Extend the leases ``owner`` holds on ``job_ids``."""
        if job_ids:
            with self._connect() as conn:
                conn.execute(f"UPDATE jobs SET lease_until = ? WHERE owner = ? AND status = ? AND id IN "
                             f"({','.join('?' * len(job_ids))})", (time.time() + self.lease_s, owner, RUNNING, *job_ids))

    def finish(self, job_id: str, status: str, result: Any = None, error: str | None = None) -> None:
        """Mark a running job complete or failed (``cancelled``, with no result, when its cancellation was asked
        for meanwhile); the pixels are dropped and the retention clock starts."""
        now = time.time()
        with self._connect() as conn, _transaction(conn):
            done = conn.execute(
                "UPDATE jobs SET status = CASE cancel_requested WHEN 1 THEN ? ELSE ? END,"
                " result = CASE cancel_requested WHEN 1 THEN NULL ELSE ? END,"
                " error = CASE cancel_requested WHEN 1 THEN NULL ELSE ? END,"
                " owner = NULL, updated_at = ?, expires_at = ? WHERE id = ? AND status = ?",
                (CANCELLED, status, json.dumps(result) if result is not None else None, error, now,
                 now + self.retention_s, job_id, RUNNING),
            ).rowcount
            if done:
                conn.execute("DELETE FROM job_inputs WHERE id = ?", (job_id,))

    def cancel(self, job_id: str) -> tuple[str, Job] | None:
        """Cancel a job: a queued one at once; a running one once its current runner call returns (its result is
        then never written). Returns (the status it had, the job now), or None when unknown."""
        now = time.time()
        with self._connect() as conn, _transaction(conn):
            row = conn.execute("SELECT status FROM jobs WHERE id = ? AND (expires_at IS NULL OR expires_at > ?)",
                               (job_id, now)).fetchone()
            if row is None:
                return None
            if row[0] == STARTING:
                conn.execute("UPDATE jobs SET status = ?, updated_at = ?, expires_at = ? WHERE id = ?",
                             (CANCELLED, now, now + self.retention_s, job_id))
                conn.execute("DELETE FROM job_inputs WHERE id = ?", (job_id,))
            elif row[0] == RUNNING:
                conn.execute("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?", (now, job_id))
            job = Job.from_row(conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone())
        return row[0], job

    def retry_later(self, job_id: str, error: str, delay_s: float, count_attempt: bool = True) -> None:
        """Put a running job back in the queue after ``delay_s``; an uncounted retry gives the attempt back."""
        now = time.time()
        with self._connect() as conn, _transaction(conn):
            _drop_inputs(conn, conn.execute(  # a cancelled job is not retried
                "UPDATE jobs SET status = ?, owner = NULL, updated_at = ?, expires_at = ? WHERE id = ?"
                " AND status = ? AND cancel_requested = 1 RETURNING id",
                (CANCELLED, now, now + self.retention_s, job_id, RUNNING)).fetchall())
            conn.execute("UPDATE jobs SET status = ?, owner = NULL, error = ?, not_before = ?, updated_at = ?,"
                         " attempts = attempts - ? WHERE id = ? AND status = ?",
                         (STARTING, error, now + delay_s, now, 0 if count_attempt else 1, job_id, RUNNING))

    def release_dead_local_owners(self, host: str) -> int:
        """Requeue running jobs whose owner was a process on ``host`` that no longer exists (those whose
        cancellation was asked for become ``cancelled``)."""
        with self._connect() as conn:
            owners = [o for (o,) in conn.execute("SELECT DISTINCT owner FROM jobs WHERE status = ?", (RUNNING,))]
            dead = [o for o in owners if o and o.rsplit(":", 2)[0] == host and not _pid_alive(int(o.rsplit(":", 2)[1]))]
            now = time.time()
            for owner in dead:
                with _transaction(conn):
                    released = conn.execute(
                        "UPDATE jobs SET status = CASE cancel_requested WHEN 1 THEN ? ELSE ? END, owner = NULL,"
                        " expires_at = CASE cancel_requested WHEN 1 THEN ? ELSE NULL END"
                        " WHERE owner = ? AND status = ? RETURNING id, status", (CANCELLED, STARTING,
                                                                                 now + self.retention_s, owner, RUNNING))
                    _drop_inputs(conn, [(i,) for i, status in released.fetchall() if status == CANCELLED])
        return len(dead)

    def purge_expired(self) -> int:
        with self._connect() as conn:
            return conn.execute("DELETE FROM jobs WHERE expires_at IS NOT NULL AND expires_at <= ?",
                                (time.time(),)).rowcount

    def unfinished(self, model: str, limit: int = 1000) -> list[tuple[str, str]]:
        """(id, status) of the model's queued and running jobs, oldest first."""
        with self._connect() as conn:
            return conn.execute("SELECT id, status FROM jobs WHERE model = ? AND status IN (?, ?) "
                                "ORDER BY created_at LIMIT ?", (model, STARTING, RUNNING, limit)).fetchall()

    def counts(self) -> dict[str, int]:
        with self._connect() as conn:
            return dict(conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction (the connections are in autocommit mode)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _drop_inputs(conn: sqlite3.Connection, ids: list[tuple[str]]) -> None:
    """Drop the pixels of jobs that finished (here: were cancelled)."""
    conn.executemany("DELETE FROM job_inputs WHERE id = ?", ids)


def _add_columns(conn: sqlite3.Connection) -> None:
    """Columns added to the schema later, added to an older store once (inside the write lock)."""
    with _transaction(conn):
        have = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
        for name, decl in _LATER_COLUMNS.items():
            if name not in have:
                conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")


def _migrate_inline_pixels(conn: sqlite3.Connection) -> None:
    """Stores written before pixels had their own table: move the pixels of unfinished jobs across, once."""
    with _transaction(conn):  # every gateway worker runs this at start: check inside the lock
        if "pixels" not in [row[1] for row in conn.execute("PRAGMA table_info(jobs)")]:
            return
        moved = conn.execute("INSERT OR IGNORE INTO job_inputs (id, pixels) SELECT id, pixels FROM jobs"
                             " WHERE pixels IS NOT NULL").rowcount
        conn.execute("ALTER TABLE jobs DROP COLUMN pixels")
    logger.info("Job store upgraded: the pixels of %d unfinished job(s) moved to job_inputs", moved)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobWorker:
    """Claims jobs from the store and runs them concurrently with ``execute``; one per gateway worker process."""

    def __init__(self, store: JobStore, execute: Callable[[Job, np.ndarray], Awaitable[Any]], *, concurrency: int,
                 max_attempts: int, ready: Callable[[], Awaitable[None]], poll_s: float = 0.25) -> None:
        self.store, self.execute, self.ready = store, execute, ready
        self.concurrency, self.max_attempts, self.poll_s = concurrency, max_attempts, poll_s
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.active: dict[str, asyncio.Task] = {}
        self._reserved = 0  # slots promised to submissions whose row is being written
        self._started = False  # the runners answered and dead workers' jobs were released
        self._watchers: dict[str, set[asyncio.Future]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def notify(self) -> None:
        """A job was queued: look for work now rather than at the next poll."""
        self._wake.set()

    async def submit(self, model: str, batched: bool, pixels: np.ndarray, classes: list[str],
                     templates: list[str]) -> Job:
        """Persist a job; with a free slot here, lease it to this worker in the same write and start it at once
        (no claim query, no wake-up of the loop), otherwise leave it queued for the first free worker."""
        take = self._started and len(self.active) + self._reserved < self.concurrency
        self._reserved += take
        try:
            job = await anyio.to_thread.run_sync(
                lambda: self.store.submit(model, batched, pixels, classes, templates, self.owner if take else None))
        finally:
            self._reserved -= take
        if take:
            self.active[job.id] = asyncio.create_task(self._run(job, pixels))
        else:
            self.notify()
        return job

    def watch(self, job_id: str) -> asyncio.Future:
        """A future resolved when this worker stops running ``job_id`` (finished, failed or requeued)."""
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
        if self._task:
            self._task.cancel()
        for task in self.active.values():
            task.cancel()

    async def _loop(self) -> None:
        await self.ready()
        released = await anyio.to_thread.run_sync(self.store.release_dead_local_owners, self.host)
        if released:
            logger.info("Resuming the jobs of %d stopped worker(s)", released)
        self._started = True
        last_renew = last_purge = time.monotonic()
        while True:
            try:
                free = self.concurrency - len(self.active) - self._reserved
                claimed = await anyio.to_thread.run_sync(self.store.claim, self.owner, free) if free > 0 else []
                for job, pixels in claimed:
                    self.active[job.id] = asyncio.create_task(self._run(job, pixels))
                now = time.monotonic()
                if now - last_renew > self.store.lease_s / 3:
                    await anyio.to_thread.run_sync(self.store.renew, self.owner, list(self.active))
                    last_renew = now
                if now - last_purge > 60:
                    await anyio.to_thread.run_sync(self.store.purge_expired)
                    await anyio.to_thread.run_sync(self.store.release_dead_local_owners, self.host)
                    last_purge = now
                if not claimed:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), self.poll_s)
                    except asyncio.TimeoutError:
                        pass
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("job loop error; retrying")
                await asyncio.sleep(1)

    async def _run(self, job: Job, pixels: np.ndarray) -> None:
        try:
            if job.attempts > self.max_attempts:  # claimed too often, e.g. it crashed its workers each time
                msg = f"Inference failed {self.max_attempts} times; the job was given up."
                await anyio.to_thread.run_sync(lambda: self.store.finish(job.id, FAILED, error=msg))
                return
            result = await self.execute(job, pixels)
            await anyio.to_thread.run_sync(lambda: self.store.finish(job.id, COMPLETE, result=result))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_overload(exc):  # shed by a busy runner: wait, and keep the attempt
                await anyio.to_thread.run_sync(
                    lambda: self.store.retry_later(job.id, "runner at capacity", 1.0, count_attempt=False))
                return
            logger.exception("job %s attempt %d failed", job.id, job.attempts)
            if job.attempts >= self.max_attempts:
                msg = f"Inference failed after {job.attempts} attempts ({type(exc).__name__})."
                await anyio.to_thread.run_sync(lambda: self.store.finish(job.id, FAILED, error=msg))
            else:
                msg, delay = f"attempt {job.attempts} failed ({type(exc).__name__}); retrying", 2.0 ** job.attempts
                await anyio.to_thread.run_sync(lambda: self.store.retry_later(job.id, msg, delay))
        finally:
            self.active.pop(job.id, None)
            for future in self._watchers.pop(job.id, ()):
                if not future.done():
                    future.set_result(None)


async def wait_until_final(store: JobStore, job_id: str, wait_s: float, worker: JobWorker | None = None) -> Job | None:
    """The job once complete, failed or cancelled, or as it stands after ``wait_s`` (None when unknown).

    Wakes as soon as ``worker`` (this process) finishes the job; jobs run by other processes are re-read with a
    backoff from 5 to 250 ms.
    """
    deadline, delay = time.monotonic() + wait_s, 0.005
    while True:
        future = worker.watch(job_id) if worker else None  # before the read, so a finish in between wakes us
        try:
            job = await anyio.to_thread.run_sync(store.get, job_id)
            left = deadline - time.monotonic()
            if job is None or job.status in FINAL or left <= 0:
                return job
            if future is None:
                await asyncio.sleep(min(delay, left))
            else:
                await asyncio.wait({future}, timeout=min(delay, left))
            delay = min(delay * 2, 0.25)
        finally:
            if future is not None:
                worker.unwatch(job_id, future)

