"""The job store, on every backend (SQLite and a real PostgreSQL): durable submission, exclusive claims,
leases, recovery, cancellation and retention; and the worker that runs its jobs."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import os
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from jobs import (CANCELLED, COMPLETE, FAILED, RUNNING, STARTING, JobStore, JobStoreUnavailable, JobWorker,
                  open_job_store, wait_until_final)
from jobs.postgres import PostgresJobStore
from jobs.sqlite import SQLiteJobStore
from tests.conftest import postgres_server

PIXELS = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
_databases = itertools.count()


@pytest.fixture(params=["sqlite", "postgres"])
def make_store(request, tmp_path: Path):
    """``make_store(retention_s=60, lease_s=5)``: a new handle (as another gateway worker or replica would
    have) on this test's own empty store."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    else:
        url = request.getfixturevalue("postgres").new_database(f"t{os.getpid()}_{next(_databases)}")
    handles: list[JobStore] = []

    def make(retention_s: float = 60, lease_s: float = 5) -> JobStore:
        store = open_job_store(url, retention_s=retention_s, lease_s=lease_s)
        store.init()
        handles.append(store)
        return store

    yield make
    for store in handles:
        store.close()


@pytest.fixture
def store(make_store) -> JobStore:
    return make_store()


def _sql(store: JobStore, query: str, *params) -> list[tuple]:
    """Rows of a query on the store's own database (``?`` placeholders)."""
    if isinstance(store, SQLiteJobStore):
        with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as conn:
            return conn.execute(query, params).fetchall()
    import psycopg

    with psycopg.connect(store.url, autocommit=True) as conn:
        cursor = conn.execute(query.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description else []


def _inputs(store: JobStore) -> int:
    return _sql(store, "SELECT COUNT(*) FROM job_inputs")[0][0]


def test_submitted_job_is_readable_and_claimable_once(store: JobStore) -> None:
    job = store.submit("m", True, PIXELS, ["cat", "dog"], ["a {}."])
    assert store.get(job.id).status == STARTING
    claimed = store.claim("host:1:a", 10)
    assert [(j.id, j.status, j.attempts) for j, _ in claimed] == [(job.id, RUNNING, 1)]
    assert np.array_equal(claimed[0][1], PIXELS)
    assert store.claim("host:2:b", 10) == []  # leased to the first owner


def test_a_text_embedding_job_keeps_its_task_and_its_texts_exactly(store: JobStore) -> None:
    texts = np.array(["ein Foto einer Katze", "写真", "a " * 300, "é\u0301"])  # unicode, never pickled
    job = store.submit("m", True, texts, [], [], task="text-embedding")
    assert store.get(job.id).task == "text-embedding"
    (claimed, inputs), = store.claim("host:1:a", 10)
    assert claimed.task == "text-embedding" and inputs.tolist() == texts.tolist()
    assert store.finish(job.id, COMPLETE, result=[{"embedding": [0.6, 0.8]}]).task == "text-embedding"


def test_finished_job_keeps_result_until_retention_passes(make_store) -> None:
    store = make_store(retention_s=0.5)
    job = store.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
    store.claim("h:1:a", 1)
    store.finish(job.id, COMPLETE, result={"probabilities": [1.0]})
    for _ in range(3):  # reading does not consume it
        assert store.get(job.id).result == {"probabilities": [1.0]}
    time.sleep(0.6)
    assert store.get(job.id) is None
    assert store.purge_expired() == 1


def test_lapsed_lease_lets_another_worker_resume(make_store) -> None:
    store = make_store(lease_s=0.2)
    job = store.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
    store.claim("other-host:1:a", 1)
    assert store.claim("h:2:b", 1) == []
    time.sleep(0.3)
    (again, _), = store.claim("h:2:b", 1)
    assert again.id == job.id and again.attempts == 2


def test_jobs_of_a_dead_local_process_are_released_at_once(store: JobStore) -> None:
    job = store.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    store.claim(f"myhost:{int(dead.stdout)}:x", 1)
    store.claim(f"otherhost:{os.getpid()}:y", 1)  # nothing left to claim
    assert store.release_dead_local_owners("myhost") == 1
    assert store.get(job.id).status == STARTING


def test_retry_later_waits_and_failed_jobs_say_why(store: JobStore) -> None:
    job = store.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
    store.claim("h:1:a", 1)
    store.retry_later(job.id, "attempt 1 failed", delay_s=0.3)
    assert store.claim("h:1:a", 1) == []
    time.sleep(0.35)
    store.claim("h:1:a", 1)
    store.finish(job.id, FAILED, error="Inference failed after 2 attempts (RuntimeError).")
    got = store.get(job.id)
    assert got.status == FAILED and "2 attempts" in got.error


def test_unwritable_store_is_a_clear_startup_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RuntimeError, match="JOB_STORE_URL"):
        SQLiteJobStore(blocker / "jobs.sqlite", 60, 5).init()


def test_unreachable_postgres_is_a_clear_startup_error_without_the_password() -> None:
    store = open_job_store("postgresql://vision:s3cret@127.0.0.1:9/jobs", retention_s=60, lease_s=5, timeout_ms=1000)
    with pytest.raises(RuntimeError, match="JOB_STORE_URL") as err:
        store.init()
    assert "s3cret" not in str(err.value) and "vision:***@127.0.0.1:9" in str(err.value)


@pytest.mark.parametrize("url", ["mysql://h/db", "jobs.sqlite"])
def test_an_unsupported_store_url_names_the_two_that_work(url: str) -> None:
    with pytest.raises(RuntimeError, match="sqlite:///.*postgresql://"):
        open_job_store(url, retention_s=60, lease_s=5)


def test_uncounted_retry_gives_the_attempt_back(store: JobStore) -> None:
    job = store.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
    store.claim("h:1:a", 1)
    store.retry_later(job.id, "runner at capacity", delay_s=0, count_attempt=False)
    (again, _), = store.claim("h:1:a", 1)
    assert again.attempts == 1


def test_worker_gives_up_a_job_claimed_more_often_than_allowed(make_store) -> None:
    store = make_store(lease_s=0.01)
    ran = []

    async def execute(job, pixels):
        ran.append(job.id)

    async def ready():
        return None

    worker = JobWorker(store, execute, concurrency=1, max_attempts=2, ready=ready)
    job = store.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
    for _ in range(3):  # three workers died holding it; the third claim is this worker's
        time.sleep(0.02)
        (claimed, pixels), = store.claim(worker.owner, 1)
    asyncio.run(worker._run(claimed, pixels))
    got = store.get(job.id)
    assert ran == [] and got.status == FAILED and "given up" in got.error


def test_finished_jobs_drop_their_pixels_and_resumed_jobs_keep_them(make_store) -> None:
    store = make_store(lease_s=0.2)
    done, resumed = (store.submit("m", False, PIXELS[i:i + 1], ["cat"], ["a {}."]) for i in range(2))
    store.claim("other-host:1:a", 2)
    store.finish(done.id, COMPLETE, result={"probabilities": [1.0]})
    time.sleep(0.3)  # the other host's lease on the second job lapses
    (job, pixels), = store.claim("h:2:b", 5)
    assert job.id == resumed.id and np.array_equal(pixels, PIXELS[1:2])
    assert _sql(store, "SELECT id FROM job_inputs") == [(resumed.id,)]


def test_a_store_from_before_job_inputs_is_upgraded_without_losing_queued_work(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    with sqlite3.connect(path) as conn:  # the schema as released before pixels had their own table
        conn.executescript(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, model TEXT NOT NULL, batched INTEGER NOT NULL, status TEXT NOT"
            " NULL, pixels BLOB, classes TEXT NOT NULL, templates TEXT NOT NULL, result TEXT, error TEXT, attempts"
            " INTEGER NOT NULL DEFAULT 0, owner TEXT, lease_until REAL, not_before REAL NOT NULL DEFAULT 0,"
            " created_at REAL NOT NULL, updated_at REAL NOT NULL, expires_at REAL);"
            "CREATE INDEX jobs_queue ON jobs (status, created_at);")
        buf = io.BytesIO()
        np.save(buf, PIXELS, allow_pickle=False)
        conn.execute("INSERT INTO jobs (id, model, batched, status, pixels, classes, templates, created_at,"
                     " updated_at) VALUES ('00000000-0000-4000-8000-000000000001', 'm', 1, 'starting', ?, '[\"cat\"]',"
                     " '[\"a {}.\"]', 1, 1)", (buf.getvalue(),))
    stores = [SQLiteJobStore(path, retention_s=60, lease_s=5) for _ in range(2)]
    for s in stores:  # every gateway worker runs init(); the second finds the upgrade done
        s.init()
    (job, pixels), = stores[0].claim("h:1:a", 5)
    assert job.classes == ["cat"] and job.batched and np.array_equal(pixels, PIXELS)
    stores[0].finish(job.id, COMPLETE, result={"probabilities": [[1.0], [1.0]]})
    assert stores[1].get(job.id).status == COMPLETE


def test_wait_until_final_wakes_when_this_worker_finishes_the_job(store: JobStore) -> None:
    async def run() -> tuple[str, float, str, float]:
        async def execute(job, pixels):
            await asyncio.sleep(0.3)
            return {"probabilities": [1.0]}

        async def ready() -> None:
            return None

        worker = JobWorker(store, execute, concurrency=2, max_attempts=2, ready=ready, poll_s=0.05)
        worker.start()
        try:
            job = store.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
            worker.notify()
            start = time.monotonic()
            done = await wait_until_final(store, job.id, 10, worker)
            waited = time.monotonic() - start
            slow = store.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
            start = time.monotonic()
            early = await wait_until_final(store, slow.id, 0.1, worker)  # time is up first
            return done.status, waited, early.status, time.monotonic() - start
        finally:
            await worker.stop()

    status, waited, early_status, early_waited = asyncio.run(run())
    assert status == COMPLETE and 0.25 < waited < 1.0
    assert early_status in (STARTING, RUNNING) and early_waited < 0.5


def test_wait_until_final_sees_jobs_finished_by_another_process(make_store) -> None:
    store = make_store()
    job = store.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
    other = make_store()  # another gateway worker's handle on the same store
    other.claim("h:9:z", 1)

    async def run():
        async def finish_soon() -> None:
            await asyncio.sleep(0.2)
            other.finish(job.id, COMPLETE, result={"probabilities": [1.0]})

        task = asyncio.create_task(finish_soon())
        found = await wait_until_final(store, job.id, 5)
        await task
        return found

    start = time.monotonic()
    assert asyncio.run(run()).result == {"probabilities": [1.0]}
    assert time.monotonic() - start < 1.0
    assert asyncio.run(wait_until_final(store, str(uuid.uuid4()), 1)) is None


@contextlib.asynccontextmanager
async def started_worker(store: JobStore, execute, concurrency: int, poll_s: float = 0.05):
    """A JobWorker whose runners are ready at once, yielded once it has started (dead workers' jobs released)."""
    async def ready() -> None:
        return None

    worker = JobWorker(store, execute, concurrency=concurrency, max_attempts=2, ready=ready, poll_s=poll_s)
    worker.start()
    await asyncio.sleep(0.1)
    try:
        yield worker
    finally:
        await asyncio.wait_for(worker.stop(), 10)  # a stop that hangs fails the test


def test_a_worker_with_a_free_slot_runs_what_it_accepts_and_queues_the_rest(store: JobStore) -> None:
    async def run() -> tuple[list[str], list[str], dict]:
        gate = asyncio.Event()

        async def execute(job, pixels):
            assert np.array_equal(pixels, PIXELS[:1])
            await gate.wait()
            return {"probabilities": [1.0]}

        # no polls: only a submission wakes the loop, which is parked once started with no claim in flight
        async with started_worker(store, execute, concurrency=2, poll_s=60) as worker:
            await _until(lambda: worker._started and worker._reserved == 0)
            jobs = [await worker.submit("m", False, PIXELS[:1], ["cat"], ["a {}."]) for _ in range(3)]
            await asyncio.sleep(0.2)  # the third submission's wake-up: the loop finds no free slot
            owners = [_sql(store, "SELECT owner FROM jobs WHERE id = ?", j.id)[0][0] for j in jobs]
            gate.set()
            done = {j.id: (await wait_until_final(store, j.id, 5, worker)).status for j in jobs}
            return [j.status for j in jobs], owners, done

    statuses, owners, done = asyncio.run(run())
    assert statuses == [RUNNING, RUNNING, STARTING]  # two slots: the third waits in the queue
    assert owners[:2] == [owners[0]] * 2 and owners[0] and owners[2] is None
    assert set(done.values()) == {COMPLETE}


def test_submissions_during_a_claim_never_run_more_jobs_than_the_worker_has_slots(store: JobStore) -> None:
    """The loop's claim runs on a thread; jobs submitted meanwhile must not take the slots it is filling."""
    claiming, proceed, real_claim = threading.Event(), threading.Event(), store.claim
    calls = itertools.count()

    def slow_claim(owner: str, limit: int):
        if next(calls) == 1:  # the first claim after start-up waits until the test has submitted
            claiming.set()
            proceed.wait(5)
        return real_claim(owner, limit)

    store.claim = slow_claim

    async def run() -> list:
        gate = asyncio.Event()

        async def execute(job, pixels):
            await gate.wait()
            return {"probabilities": [1.0]}

        async with started_worker(store, execute, concurrency=2, poll_s=0.02) as worker:
            await _until(claiming.is_set)
            jobs = [await worker.submit("m", False, PIXELS[:1], ["cat"], ["a {}."]) for _ in range(3)]
            proceed.set()
            await asyncio.sleep(0.3)  # the claim returns and the loop polls again
            owners = [_sql(store, "SELECT owner FROM jobs WHERE id = ?", j.id)[0][0] for j in jobs]
            running = len(worker.active)
            gate.set()
            for j in jobs:
                assert (await wait_until_final(store, j.id, 5, worker)).status == COMPLETE
            return [running, owners]

    running, owners = asyncio.run(run())
    assert running == 2 and sum(o is not None for o in owners) == 2  # the third waits for a slot
    assert owners[2] is None  # first come, first served


async def _until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def test_a_queued_job_is_cancelled_at_once_and_never_runs(store: JobStore) -> None:
    job = store.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
    before, now = store.cancel(job.id)
    assert (before, now.status) == (STARTING, CANCELLED) and now.expires_at is not None
    assert store.claim("h:1:a", 10) == [] and _inputs(store) == 0
    assert store.get(job.id).status == CANCELLED and store.get(job.id).result is None
    assert store.cancel(job.id)[0] == CANCELLED  # already final: the caller answers 409
    assert store.cancel(str(uuid.uuid4())) is None


def test_a_running_job_is_cancelled_when_its_runner_call_returns_and_its_result_is_never_written(store) -> None:
    job = store.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
    store.claim("h:1:a", 1)
    before, now = store.cancel(job.id)
    assert (before, now.status) == (RUNNING, RUNNING)
    store.finish(job.id, COMPLETE, result={"probabilities": [1.0]})
    got = store.get(job.id)
    assert got.status == CANCELLED and got.result is None and got.error is None and _inputs(store) == 0


@pytest.mark.parametrize("how", ["retry", "lapsed lease", "dead local worker"])
def test_a_cancelled_running_job_is_not_run_again(make_store, how: str) -> None:
    store = make_store(lease_s=0.2)
    job = store.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
    if how == "dead local worker":
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        store.claim(f"myhost:{int(dead.stdout)}:x", 1)
    else:
        store.claim("other-host:1:a", 1)
    store.cancel(job.id)
    if how == "retry":
        store.retry_later(job.id, "attempt 1 failed", delay_s=0)
    elif how == "lapsed lease":
        time.sleep(0.3)
    else:
        store.release_dead_local_owners("myhost")
    assert store.claim("h:2:b", 10) == []
    assert store.get(job.id).status == CANCELLED and _inputs(store) == 0


def test_a_worker_finishing_a_cancelled_job_wakes_waiters_with_cancelled(store: JobStore) -> None:
    async def run() -> tuple[str, str]:
        gate = asyncio.Event()

        async def execute(job, pixels):
            await gate.wait()
            return {"probabilities": [1.0]}

        async with started_worker(store, execute, concurrency=1) as worker:
            job = await worker.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
            before, _ = store.cancel(job.id)
            waiter = asyncio.ensure_future(wait_until_final(store, job.id, 5, worker))
            await asyncio.sleep(0.05)
            gate.set()
            return before, (await waiter).status

    assert asyncio.run(run()) == (RUNNING, CANCELLED)


def test_an_older_store_gets_the_cancel_column(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    SQLiteJobStore(path, retention_s=60, lease_s=5).init()
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE jobs DROP COLUMN cancel_requested")
    store = SQLiteJobStore(path, retention_s=60, lease_s=5)
    store.init()
    job = store.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
    assert store.cancel(job.id)[1].status == CANCELLED


def test_a_worker_that_lost_its_lease_cannot_write_its_outcome(make_store) -> None:
    store = make_store(lease_s=0.2)
    job = store.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
    store.claim("h:1:slow", 1)
    time.sleep(0.3)  # the slow worker's lease lapses and another takes the job over
    (again, _), = store.claim("h:2:fast", 1)
    assert not store.finish(job.id, COMPLETE, result={"probabilities": [0.0]}, owner="h:1:slow")
    store.retry_later(job.id, "late", delay_s=0, owner="h:1:slow")
    assert store.get(job.id).status == RUNNING  # still the second worker's
    assert store.finish(job.id, COMPLETE, result={"probabilities": [1.0]}, owner="h:2:fast")
    got = store.get(job.id)
    assert got.result == {"probabilities": [1.0]} and got.attempts == 2


def test_claims_from_many_handles_at_once_never_share_an_attempt(make_store) -> None:
    handles = [make_store() for _ in range(4)]
    ids = {handles[0].submit("m", False, PIXELS[:1], ["cat"], ["a {}."]).id for _ in range(120)}
    got: dict[str, list[str]] = {}

    def drain(i: int) -> None:
        mine = got.setdefault(f"h:{i}:x", [])
        while batch := handles[i].claim(f"h:{i}:x", 7):
            mine.extend(job.id for job, _ in batch)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [job_id for ids_ in got.values() for job_id in ids_]
    assert sorted(claimed) == sorted(ids)  # each job once, none left
    assert {row[0] for row in _sql(handles[0], "SELECT attempts FROM jobs")} == {1}


def test_postgres_replicas_starting_together_create_the_schema_once(postgres) -> None:
    url = postgres.new_database(f"schema_{os.getpid()}")
    stores = [PostgresJobStore(url, 60, 5) for _ in range(4)]
    errors: list[BaseException] = []

    def init(store: PostgresJobStore) -> None:
        try:
            store.init()
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=init, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert _sql(stores[0], "SELECT component, version FROM schema_version") == [("jobs", 2)]
        _sql(stores[0], "UPDATE schema_version SET version = 99")
        newer = PostgresJobStore(url, 60, 5)
        with pytest.raises(RuntimeError, match="schema version 99"):
            newer.init()
    finally:
        for s in stores:
            s.close()


def _counting(store: JobStore, method: str) -> list[int]:
    """Count the calls of one of ``store``'s methods."""
    calls, original = [0], getattr(store, method)

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    setattr(store, method, counted)
    return calls


def test_postgres_notifications_wake_an_idle_replica_and_waiters_elsewhere(postgres) -> None:
    url = postgres.new_database(f"notify_{os.getpid()}")
    here, there = (open_job_store(url, retention_s=60, lease_s=5) for _ in range(2))
    here.init()
    there.init()

    async def run() -> tuple[str, str, int]:
        async def execute(job, pixels):
            return {"probabilities": [1.0]}

        # poll_s=60: within this test only a notification can make the idle worker look for work
        async with started_worker(here, execute, concurrency=2, poll_s=60) as worker:
            await asyncio.sleep(0.4)  # listening
            queued = there.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])  # another replica's submission
            done = await wait_until_final(there, queued.id, 20)
            # a job another replica runs: this replica's waiter is woken by its finish, without re-reading
            other = there.submit("m", False, PIXELS[:1], ["dog"], ["a {}."], owner="elsewhere:1:x")
            reads = _counting(here, "get")
            waiter = asyncio.ensure_future(wait_until_final(here, other.id, 20, worker))
            await asyncio.sleep(0.3)
            there.finish(other.id, COMPLETE, result={"probabilities": [0.5]}, owner="elsewhere:1:x")
            return done.status, (await waiter).status, reads[0]

    try:
        queued_status, waited_status, reads = asyncio.run(run())
    finally:
        here.close()
        there.close()
    assert queued_status == COMPLETE
    assert waited_status == COMPLETE and reads == 2  # one read before, one after the notification


@pytest.fixture
def own_postgres():
    """A PostgreSQL server of this test's own, to stop and start (the session's server stays up)."""
    server = postgres_server()
    yield server
    server.close()


def test_a_postgres_outage_is_unavailable_then_recovers_and_no_outcome_is_lost(own_postgres) -> None:
    store = open_job_store(own_postgres.url, retention_s=60, lease_s=30, timeout_ms=1000)
    store.init()

    async def run() -> tuple[str, JobStoreUnavailable, list[str]]:
        gate = asyncio.Event()

        async def execute(job, pixels):
            await gate.wait()
            return {"probabilities": [1.0]}

        async with started_worker(store, execute, concurrency=1) as worker:
            running = await worker.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
            queued = await worker.submit("m", False, PIXELS[:1], ["dog"], ["a {}."])
            await asyncio.to_thread(own_postgres.stop)
            with pytest.raises(JobStoreUnavailable) as down:
                await asyncio.to_thread(store.get, running.id)
            gate.set()  # the running job's result arrives while the database is away
            await asyncio.sleep(1.0)
            await asyncio.to_thread(own_postgres.start)
            done = [(await wait_until_final(store, j.id, 20, worker)).status for j in (running, queued)]
            return running.status, down.value, done

    try:
        first, down, done = asyncio.run(run())
    finally:
        store.close()
    assert first == RUNNING and (down.status, down.error) == (503, "job_store_unavailable")
    assert "Retry" in down.detail and down.headers["Retry-After"]
    assert done == [COMPLETE, COMPLETE]


class Relay:
    """A TCP relay in front of PostgreSQL that can fail the way a network path or a middlebox does: ``fail()``
    breaks every open connection (``garble``: the client first gets bytes that are not PostgreSQL's protocol;
    otherwise a reset) and answers new ones the same way; ``heal()`` relays again."""

    def __init__(self, port: int) -> None:
        self.target, self.mode, self._lock, self._socks = ("127.0.0.1", port), None, threading.Lock(), []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, url: str) -> str:
        return url.replace(f":{self.target[1]}/", f":{self.port}/")

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:  # decided and recorded together, so a fail() meanwhile breaks this one too
                if self.mode:
                    self._break(client)
                    continue
                self._socks.append(client)
            server = socket.create_connection(self.target)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _break(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            if self.mode == "garble":
                client.sendall(b"\x00\x00\x00\x00\x07garbage")
            else:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()

    def fail(self, mode: str) -> None:
        with self._lock:
            self.mode = mode
            socks, self._socks = self._socks, []
        for client in socks:
            self._break(client)

    def heal(self) -> None:
        self.mode = None

    def close(self) -> None:
        self._listener.close()
        self.fail("reset")


@pytest.fixture
def relay(postgres):
    """A relayed URL to a fresh database on the session's server, and the relay."""
    url = postgres.new_database(f"relay_{os.getpid()}_{next(_databases)}")
    relay = Relay(int(url.rsplit(":", 1)[1].split("/")[0]))
    yield relay.url(url), relay
    relay.close()


_STORE_CALLS = {
    "submit": lambda s, job: s.submit("m", False, PIXELS[:1], ["cat"], ["a {}."]),
    "submit batched, leased": lambda s, job: s.submit("m", True, PIXELS, ["cat"], ["a {}."], owner="h:1:a"),
    "get": lambda s, job: s.get(job),
    "claim": lambda s, job: s.claim("h:1:a", 4),
    "renew": lambda s, job: s.renew("h:1:a", [job]),
    "finish": lambda s, job: s.finish(job, COMPLETE, result={"probabilities": [1.0]}),
    "cancel": lambda s, job: s.cancel(job),
    "retry_later": lambda s, job: s.retry_later(job, "again", 0),
    "release_dead_local_owners": lambda s, job: s.release_dead_local_owners("h"),
    "purge_expired": lambda s, job: s.purge_expired(),
    "unfinished": lambda s, job: s.unfinished("m"),
    "counts": lambda s, job: s.counts(),
}


def _until_answers(store: JobStore, within_s: float) -> float:
    """Seconds until ``store`` answers again; fails after ``within_s``."""
    start = time.monotonic()
    while True:
        try:
            store.counts()
            return time.monotonic() - start
        except JobStoreUnavailable:
            assert time.monotonic() - start < within_s, f"the store did not answer within {within_s} s"
            time.sleep(0.1)


@pytest.mark.parametrize("how", ["garble", "reset"])
def test_every_store_method_answers_unavailable_when_the_connection_breaks_and_the_pool_recovers(relay, how) -> None:
    url, relay = relay
    store = PostgresJobStore(url, 60, 5, timeout_ms=1000, pool_options={"reconnect_timeout": 1.0})
    store.init()
    try:
        failures = {}
        for name, call in _STORE_CALLS.items():
            relay.heal()
            _until_answers(store, 15)  # a working pooled connection, which then breaks under the call
            job = store.submit("m", True, PIXELS, ["cat"], ["a {}."]).id
            relay.fail(how)
            try:
                call(store, job)
                failures[name] = "answered while the database was unreachable"
            except JobStoreUnavailable as exc:
                assert (exc.status, exc.error, exc.headers["Retry-After"]) == (503, "job_store_unavailable", "2")
            except Exception as exc:  # noqa: BLE001 (what the service would answer with a 500)
                failures[name] = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
        assert failures == {}
        relay.heal()
        _until_answers(store, 15)
        assert store.submit("m", True, PIXELS, ["cat"], ["a {}."], owner="h:1:a").status == RUNNING
    finally:
        store.close()


def test_a_read_only_database_answers_unavailable_for_writes(postgres) -> None:
    url = postgres.new_database(f"readonly_{os.getpid()}")
    store = PostgresJobStore(url, 60, 5, timeout_ms=1000)
    store.init()
    job = store.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
    try:  # as after a failover onto a standby, or a managed database that ran out of disk
        _sql(store, f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET default_transaction_read_only = on")
        _sql(store, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'vision-serve'")
        for call in (lambda: store.submit("m", True, PIXELS, ["cat"], ["a {}."], owner="h:1:a"),
                     lambda: store.claim("h:1:a", 1), lambda: store.cancel(job.id)):
            with pytest.raises(JobStoreUnavailable, match="read-only"):
                call()
        assert store.get(job.id).status == STARTING
    finally:
        store.close()


def test_the_pool_reconnects_soon_after_a_long_postgres_outage(own_postgres) -> None:
    """psycopg_pool's backoff between reconnection attempts grows during an outage; with its default window
    (300 s) the store still answered 503 a minute after a 70 s outage had ended."""
    store = PostgresJobStore(own_postgres.url, 60, 5, timeout_ms=1000)
    store.init()
    try:
        own_postgres.stop()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with pytest.raises(JobStoreUnavailable):
                store.submit("m", True, PIXELS, ["cat"], ["a {}."], owner="h:1:a")
            time.sleep(0.5)
        own_postgres.start()
        assert _until_answers(store, 30) < 5
        assert store.submit("m", True, PIXELS, ["cat"], ["a {}."], owner="h:1:a").status == RUNNING
    finally:
        store.close()


# The SQLite schemas released before versioning, with one queued and one complete job in them.
_OLD_SQLITE = {
    "pixels in jobs": (
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, model TEXT NOT NULL, batched INTEGER NOT NULL, status TEXT NOT NULL,"
        " pixels BLOB, classes TEXT NOT NULL, templates TEXT NOT NULL, result TEXT, error TEXT, attempts INTEGER NOT"
        " NULL DEFAULT 0, owner TEXT, lease_until REAL, not_before REAL NOT NULL DEFAULT 0, created_at REAL NOT NULL,"
        " updated_at REAL NOT NULL, expires_at REAL);"
        "CREATE INDEX jobs_queue ON jobs (status, created_at);"),
    "job_inputs, unversioned": (
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, model TEXT NOT NULL, batched INTEGER NOT NULL, status TEXT NOT NULL,"
        " classes TEXT NOT NULL, templates TEXT NOT NULL, result TEXT, error TEXT, attempts INTEGER NOT NULL DEFAULT"
        " 0, owner TEXT, lease_until REAL, not_before REAL NOT NULL DEFAULT 0, created_at REAL NOT NULL, updated_at"
        " REAL NOT NULL, expires_at REAL, cancel_requested INTEGER NOT NULL DEFAULT 0);"
        "CREATE INDEX jobs_queue ON jobs (status, created_at);"
        "CREATE TABLE job_inputs (id TEXT PRIMARY KEY, pixels BLOB NOT NULL);"),
}
QUEUED_ID, DONE_ID = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"


def _old_sqlite_store(path: Path, schema: str) -> None:
    buf = io.BytesIO()
    np.save(buf, PIXELS, allow_pickle=False)
    inline = schema == "pixels in jobs"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.executescript(_OLD_SQLITE[schema])
        for job_id, status, result, expires in ((QUEUED_ID, STARTING, None, None),
                                                (DONE_ID, COMPLETE, '{"probabilities": [0.25]}', time.time() + 600)):
            conn.execute("INSERT INTO jobs (id, model, batched, status, classes, templates, result, attempts,"
                         " created_at, updated_at, expires_at) VALUES (?, 'm', 1, ?, '[\"cat\"]', '[\"a {}.\"]', ?,"
                         " ?, 1, 1, ?)", (job_id, status, result, int(status == COMPLETE), expires))
        if inline:
            conn.execute("UPDATE jobs SET pixels = ? WHERE id = ?", (buf.getvalue(), QUEUED_ID))
        else:
            conn.execute("INSERT INTO job_inputs VALUES (?, ?)", (QUEUED_ID, buf.getvalue()))


@pytest.mark.parametrize("schema", list(_OLD_SQLITE))
def test_an_unversioned_sqlite_store_is_migrated_in_place_and_keeps_its_jobs(tmp_path: Path, schema: str) -> None:
    path = tmp_path / "jobs.sqlite"
    _old_sqlite_store(path, schema)
    store = SQLiteJobStore(path, retention_s=60, lease_s=5)
    store.init()
    assert _sql(store, "PRAGMA user_version") == [(4,)]
    assert store.get(DONE_ID).result == {"probabilities": [0.25]} and store.get(DONE_ID).status == COMPLETE
    (job, pixels), = store.claim("h:1:a", 5)
    assert job.id == QUEUED_ID and job.classes == ["cat"] and np.array_equal(pixels, PIXELS)
    assert job.task == "zero-shot-image-classification"  # jobs from before tasks existed are zero-shot ones
    assert store.cancel(job.id)[1].status == RUNNING  # the cancellation column is there
    assert store.finish(job.id, COMPLETE, result={"probabilities": [1.0]}).status == CANCELLED


def test_a_sqlite_store_from_a_newer_release_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    store = SQLiteJobStore(path, retention_s=60, lease_s=5)
    store.init()
    job = store.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
    _sql(store, "PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match=r"schema version 99, newer than this release's 4: upgrade the service"):
        SQLiteJobStore(path, retention_s=60, lease_s=5).init()
    assert _sql(store, "PRAGMA user_version") == [(99,)] and store.get(job.id).status == STARTING


def test_gateway_workers_migrating_one_sqlite_store_at_once_do_it_once(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    _old_sqlite_store(path, "pixels in jobs")
    start = time.time() + 2  # every process past its imports, then all at once
    code = ("import sys, time; from jobs.sqlite import SQLiteJobStore; s = SQLiteJobStore(sys.argv[1], 60, 5);"
            "time.sleep(max(0, float(sys.argv[2]) - time.time())); s.init()")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(start)], cwd=Path(__file__).parents[2],
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    store = SQLiteJobStore(path, retention_s=60, lease_s=5)
    assert _sql(store, "PRAGMA user_version") == [(4,)]
    assert _sql(store, "SELECT id FROM job_inputs") == [(QUEUED_ID,)]
    assert {job_id for job_id, in _sql(store, "SELECT id FROM jobs")} == {QUEUED_ID, DONE_ID}


def test_stopping_a_worker_waits_for_its_running_jobs_to_end(store: JobStore) -> None:
    async def run() -> tuple[list[str], dict]:
        started, ended = asyncio.Event(), []

        async def execute(job, pixels):
            started.set()
            try:
                await asyncio.sleep(60)
            finally:  # a runner call being abandoned takes a moment
                await asyncio.shield(asyncio.sleep(0.2))
                ended.append(job.id)

        async with started_worker(store, execute, concurrency=1) as worker:
            job = await worker.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
            await asyncio.wait_for(started.wait(), 5)
        return ended == [job.id], dict(worker.active)

    ended, active = asyncio.run(run())
    assert ended and active == {}


def test_queue_wait_is_measured_on_the_database_clock(postgres, monkeypatch) -> None:
    from prometheus_client import REGISTRY

    store = open_job_store(postgres.new_database(f"clock_{os.getpid()}"), retention_s=60, lease_s=5)
    store.init()
    model = f"clock-{uuid.uuid4().hex[:8]}"
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)  # this replica's clock is an hour ahead

    async def run() -> str:
        async def execute(job, pixels):
            return {"probabilities": [1.0]}

        async with started_worker(store, execute, concurrency=1) as worker:
            job = store.submit(model, False, PIXELS[:1], ["cat"], ["a {}."])  # queued: claimed by the worker
            worker.notify()
            return (await wait_until_final(store, job.id, 10, worker)).status

    try:
        assert asyncio.run(run()) == COMPLETE
    finally:
        store.close()
    labels = {"task": "zero-shot-image-classification", "model": model}
    assert REGISTRY.get_sample_value("vision_job_queue_wait_seconds_count", labels) == 1
    assert 0 <= REGISTRY.get_sample_value("vision_job_queue_wait_seconds_sum", labels) < 5


def test_each_jobs_module_imports_on_its_own_and_none_imports_one_that_imports_it_back() -> None:
    import ast

    root = Path(__file__).parents[2]
    graph = {}
    for path in sorted((root / "jobs").glob("*.py")):
        name = "jobs" if path.stem == "__init__" else f"jobs.{path.stem}"
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):  # lazy imports inside functions too
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "jobs":
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.split(".")[0] == "jobs")
        graph[name] = found - {name}
        code = f"import {name}"
        run = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr

    def below(name: str, seen: set[str]) -> set[str]:
        for dep in graph.get(name, ()):
            if dep not in seen:
                seen.add(dep)
                below(dep, seen)
        return seen

    assert [name for name in graph if name in below(name, set())] == []
    assert not any("jobs" in graph[name] for name in graph if name != "jobs")  # nobody inside uses the face
    serving = [p.name for p in (root / "serving").glob("*.py") if "from jobs" in p.read_text()
               or "import jobs" in p.read_text()]
    assert serving == []
