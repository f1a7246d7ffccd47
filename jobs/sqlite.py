"""The SQLite job store: one file (WAL) shared by the gateway workers of one host; the embedded default."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from jobs.model import (CANCELLED, COLUMNS, FAILED, RUNNING, STARTING, ZERO_SHOT_TASK, Job, JobStoreUnavailable,
                        dead_local_owners, pack, unpack)
from jobs.store import JobStore

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 4  # PRAGMA user_version of a current store; 0: created before versioning (or empty)


def _create(conn: sqlite3.Connection) -> None:
    """1: the tables as first versioned. Pixels live in their own table: SQLite rewrites a whole row on UPDATE, so
    keeping them in ``jobs`` made every claim and lease renewal copy the image (a claim took 3.1 ms with a 224 px
    image, 0.55 ms without). ``IF NOT EXISTS``: a store from before versioning already has some of them."""
    conn.execute("CREATE TABLE IF NOT EXISTS jobs ("
                 " id TEXT PRIMARY KEY, model TEXT NOT NULL, batched INTEGER NOT NULL, status TEXT NOT NULL,"
                 " classes TEXT NOT NULL, templates TEXT NOT NULL, result TEXT, error TEXT,"
                 " attempts INTEGER NOT NULL DEFAULT 0, owner TEXT, lease_until REAL,"
                 " not_before REAL NOT NULL DEFAULT 0, created_at REAL NOT NULL, updated_at REAL NOT NULL,"
                 " expires_at REAL)")
    conn.execute("CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, created_at)")
    conn.execute("CREATE TABLE IF NOT EXISTS job_inputs (id TEXT PRIMARY KEY, pixels BLOB NOT NULL)")


def _move_inline_pixels(conn: sqlite3.Connection) -> None:
    """2: stores written before pixels had their own table: move the pixels of unfinished jobs across."""
    if "pixels" in _columns(conn, "jobs"):
        moved = conn.execute("INSERT OR IGNORE INTO job_inputs (id, pixels) SELECT id, pixels FROM jobs"
                             " WHERE pixels IS NOT NULL").rowcount
        conn.execute("ALTER TABLE jobs DROP COLUMN pixels")
        logger.info("Job store upgraded: the pixels of %d unfinished job(s) moved to job_inputs", moved)


def _add_cancel_requested(conn: sqlite3.Connection) -> None:
    """3: cancellation of running jobs."""
    if "cancel_requested" not in _columns(conn, "jobs"):
        conn.execute("ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0")


def _add_task(conn: sqlite3.Connection) -> None:
    """4: embedding jobs; every job stored before is a zero-shot one."""
    if "task" not in _columns(conn, "jobs"):
        conn.execute(f"ALTER TABLE jobs ADD COLUMN task TEXT NOT NULL DEFAULT '{ZERO_SHOT_TASK}'")


# Version n is reached by _MIGRATIONS[n - 1]; each step is also safe on a store from before versioning.
_MIGRATIONS = (_create, _move_inline_pixels, _add_cancel_requested, _add_task)
assert len(_MIGRATIONS) == SCHEMA_VERSION


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


class SQLiteJobStore(JobStore):
    """Jobs in one SQLite file (WAL), safe to share between the processes of one host."""

    def __init__(self, path: str | Path, retention_s: float, lease_s: float) -> None:
        self.path, self.retention_s, self.lease_s = Path(path), retention_s, lease_s
        self._local = threading.local()  # one open connection per thread, reused

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        deadline = time.monotonic() + 30
        while True:  # switching a file to WAL needs it alone, and SQLite does not wait for that by itself
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    conn.close()
                    raise
                time.sleep(0.05)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection; a locked or failing file is JobStoreUnavailable (503)."""
        try:
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self._connect()
            yield conn
        except sqlite3.OperationalError as exc:
            self._local.conn = None
            raise JobStoreUnavailable(str(exc)) from None

    def init(self) -> None:
        """Create the file, or bring its schema to SCHEMA_VERSION in one transaction under SQLite's write lock (the
        gateway workers of a host start together: one migrates, the others then find it done); a RuntimeError
        that names the setting when the path is unusable or the store is newer than this release."""
        deadline = time.monotonic() + 30
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            while True:  # SQLite can answer "locked" at once, without waiting, while another process sets up WAL
                try:
                    with contextlib.closing(self._connect()) as conn:
                        have = _migrate(conn, self.path)
                        conn.execute("CREATE TABLE IF NOT EXISTS probe (x)")
                        conn.execute("DROP TABLE IF EXISTS probe")  # another starting process may have dropped it
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    logger.info("Job store %s is locked by another process starting up; trying again", self.path)
                    time.sleep(0.1)
        except (OSError, sqlite3.Error) as exc:
            raise RuntimeError(f"The job store {self.path} is not usable ({exc}); set JOB_STORE_URL to "
                               "sqlite:///<path> (or JOB_STORE_PATH to a path) with a writable file on a local disk "
                               "with free space.") from None
        if have > SCHEMA_VERSION:
            raise RuntimeError(f"The job store {self.path} has schema version {have}, newer than this release's "
                               f"{SCHEMA_VERSION}: upgrade the service, or point JOB_STORE_URL at another file "
                               "(sqlite:///<path>).")

    def submit(self, model: str, batched: bool, pixels: np.ndarray, classes: list[str], templates: list[str],
               owner: str | None = None, task: str = ZERO_SHOT_TASK) -> Job:
        now, job_id = time.time(), str(uuid.uuid4())
        status, attempts, lease = (RUNNING, 1, now + self.lease_s) if owner else (STARTING, 0, None)
        with self._db() as conn, _transaction(conn):
            conn.execute("INSERT INTO job_inputs (id, pixels) VALUES (?, ?)", (job_id, pack(pixels)))
            conn.execute(
                "INSERT INTO jobs (id, model, batched, status, classes, templates, attempts, owner, lease_until,"
                " created_at, updated_at, task) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, model, int(batched), status, json.dumps(classes), json.dumps(templates), attempts, owner,
                 lease, now, now, task),
            )
        return Job(job_id, model, batched, status, classes, templates, None, None, attempts, now, now, None, task)

    def get(self, job_id: str) -> Job | None:
        with self._db() as conn:
            row = conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ? AND (expires_at IS NULL OR expires_at > ?)",
                               (job_id, time.time())).fetchone()
        return Job.from_row(row) if row else None

    def claim(self, owner: str, limit: int) -> list[tuple[Job, np.ndarray]]:
        now = time.time()
        with self._db() as conn:
            with _transaction(conn):  # one write: a cancelled job whose worker is gone is not run again
                _drop_inputs(conn, conn.execute(
                    "UPDATE jobs SET status = ?, owner = NULL, updated_at = ?, expires_at = ? WHERE status = ?"
                    " AND lease_until < ? AND cancel_requested = 1 RETURNING id",
                    (CANCELLED, now, now + self.retention_s, RUNNING, now)).fetchall())
                jobs = [Job.from_row(r) for r in conn.execute(
                    f"UPDATE jobs SET status = ?, owner = ?, lease_until = ?, attempts = attempts + 1, updated_at = ?"
                    f" WHERE id IN (SELECT id FROM jobs WHERE (status = ? AND not_before <= ?)"
                    f" OR (status = ? AND lease_until < ?) ORDER BY created_at LIMIT ?)"
                    f" RETURNING {COLUMNS}",
                    (RUNNING, owner, now + self.lease_s, now, STARTING, now, RUNNING, now, limit),
                ).fetchall()]
            pixels = dict(conn.execute(f"SELECT id, pixels FROM job_inputs WHERE id IN ({','.join('?' * len(jobs))})",
                                       [j.id for j in jobs]).fetchall()) if jobs else {}
        claimed = []
        for job in jobs:
            if job.id in pixels:
                claimed.append((job, unpack(pixels[job.id])))
            else:  # cannot happen through this class; a hand-edited store must not wedge the queue
                self.finish(job.id, FAILED, error="The job's image is missing from the job store; submit it again.")
        return claimed

    def renew(self, owner: str, job_ids: list[str]) -> None:
        if job_ids:
            with self._db() as conn:
                conn.execute(f"UPDATE jobs SET lease_until = ? WHERE owner = ? AND status = ? AND id IN "
                             f"({','.join('?' * len(job_ids))})", (time.time() + self.lease_s, owner, RUNNING, *job_ids))

    def finish(self, job_id: str, status: str, result: Any = None, error: str | None = None,
               owner: str | None = None) -> Job | None:
        now = time.time()
        with self._db() as conn, _transaction(conn):
            row = conn.execute(
                "UPDATE jobs SET status = CASE cancel_requested WHEN 1 THEN ? ELSE ? END,"
                " result = CASE cancel_requested WHEN 1 THEN NULL ELSE ? END,"
                " error = CASE cancel_requested WHEN 1 THEN NULL ELSE ? END,"
                " updated_at = ?, expires_at = ? WHERE id = ? AND status = ? AND (? IS NULL OR owner = ?)"
                f" RETURNING {COLUMNS}",
                (CANCELLED, status, json.dumps(result) if result is not None else None, error, now,
                 now + self.retention_s, job_id, RUNNING, owner, owner),
            ).fetchone()
            if row:
                conn.execute("DELETE FROM job_inputs WHERE id = ?", (job_id,))
        return Job.from_row(row) if row else None

    def cancel(self, job_id: str) -> tuple[str, Job] | None:
        now = time.time()
        with self._db() as conn, _transaction(conn):
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
            job = Job.from_row(conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone())
        return row[0], job

    def retry_later(self, job_id: str, error: str, delay_s: float, count_attempt: bool = True,
                    owner: str | None = None) -> None:
        now, held = time.time(), " AND status = ? AND (? IS NULL OR owner = ?)"
        with self._db() as conn, _transaction(conn):
            _drop_inputs(conn, conn.execute(  # a cancelled job is not retried
                "UPDATE jobs SET status = ?, owner = NULL, updated_at = ?, expires_at = ? WHERE id = ?" + held +
                " AND cancel_requested = 1 RETURNING id",
                (CANCELLED, now, now + self.retention_s, job_id, RUNNING, owner, owner)).fetchall())
            conn.execute("UPDATE jobs SET status = ?, owner = NULL, error = ?, not_before = ?, updated_at = ?,"
                         " attempts = attempts - ? WHERE id = ?" + held,
                         (STARTING, error, now + delay_s, now, 0 if count_attempt else 1, job_id, RUNNING, owner,
                          owner))

    def release_dead_local_owners(self, host: str) -> int:
        with self._db() as conn:
            owners = [o for (o,) in conn.execute("SELECT DISTINCT owner FROM jobs WHERE status = ?", (RUNNING,))]
            dead = dead_local_owners(owners, host)
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
        with self._db() as conn:
            return conn.execute("DELETE FROM jobs WHERE expires_at IS NOT NULL AND expires_at <= ?",
                                (time.time(),)).rowcount

    def unfinished(self, model: str, limit: int = 1000) -> list[tuple[str, str]]:
        with self._db() as conn:
            return conn.execute("SELECT id, status FROM jobs WHERE model = ? AND status IN (?, ?) "
                                "ORDER BY created_at LIMIT ?", (model, STARTING, RUNNING, limit)).fetchall()

    def counts(self) -> dict[str, int]:
        with self._db() as conn:
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


def _migrate(conn: sqlite3.Connection, path: Path) -> int:
    """Apply the migrations the store lacks, all or none; the version the store had (unchanged when newer)."""
    with _transaction(conn):
        have = conn.execute("PRAGMA user_version").fetchone()[0]
        if have > SCHEMA_VERSION:
            return have
        todo = _MIGRATIONS[have:]
        if not todo and set(_columns(conn, "jobs")) != set(_current_columns()):
            logger.warning("Job store %s: its tables do not match schema version %d; applying every step again",
                           path, have)
            todo = _MIGRATIONS
        for step in todo:
            step(conn)
        if have != SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            logger.info("Job store %s: schema version %d (was %d)", path, SCHEMA_VERSION, have)
    return have


@functools.cache
def _current_columns() -> list[str]:
    """The columns of ``jobs`` in a store created by this release."""
    with contextlib.closing(sqlite3.connect(":memory:", isolation_level=None)) as conn:
        for step in _MIGRATIONS:
            step(conn)
        return _columns(conn, "jobs")
