"""The SQLite job store: durable submission, exclusive claims, leases, recovery and retention."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from serving.jobs import CANCELLED, COMPLETE, FAILED, RUNNING, STARTING, JobStore, JobWorker, wait_until_final

PIXELS = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    s = JobStore(tmp_path / "jobs.sqlite", retention_s=60, lease_s=5)
    s.init()
    return s


def test_submitted_job_is_readable_and_claimable_once(store: JobStore) -> None:
    job = store.submit("m", True, PIXELS, ["cat", "dog"], ["a {}."])
    assert store.get(job.id).status == STARTING
    claimed = store.claim("host:1:a", 10)
    assert [(j.id, j.status, j.attempts) for j, _ in claimed] == [(job.id, RUNNING, 1)]
    assert np.array_equal(claimed[0][1], PIXELS)
    assert store.claim("host:2:b", 10) == []  # leased to the first owner


def test_finished_job_keeps_result_until_retention_passes(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite", retention_s=0.5, lease_s=5)
    store.init()
    job = store.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
    store.claim("h:1:a", 1)
    store.finish(job.id, COMPLETE, result={"probabilities": [1.0]})
    for _ in range(3):  # reading does not consume it
        assert store.get(job.id).result == {"probabilities": [1.0]}
    time.sleep(0.6)
    assert store.get(job.id) is None
    assert store.purge_expired() == 1


def test_lapsed_lease_lets_another_worker_resume(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite", retention_s=60, lease_s=0.2)
    store.init()
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
    with pytest.raises(RuntimeError, match="JOB_STORE_PATH"):
        JobStore(blocker / "jobs.sqlite", 60, 5).init()


def test_uncounted_retry_gives_the_attempt_back(store: JobStore) -> None:
    job = store.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
    store.claim("h:1:a", 1)
    store.retry_later(job.id, "runner at capacity", delay_s=0, count_attempt=False)
    (again, _), = store.claim("h:1:a", 1)
    assert again.attempts == 1


def test_worker_gives_up_a_job_claimed_more_often_than_allowed(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite", retention_s=60, lease_s=0.01)
    store.init()
    job = store.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
    for _ in range(3):  # three workers died holding it
        time.sleep(0.02)
        (claimed, pixels), = store.claim("h:1:a", 1)
    ran = []

    async def execute(job, pixels):
        ran.append(job.id)

    async def ready():
        return None

    worker = JobWorker(store, execute, concurrency=1, max_attempts=2, ready=ready)
    asyncio.run(worker._run(claimed, pixels))
    got = store.get(job.id)
    assert ran == [] and got.status == FAILED and "given up" in got.error


def test_finished_jobs_drop_their_pixels_and_resumed_jobs_keep_them(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite", retention_s=60, lease_s=0.2)
    store.init()
    done, resumed = (store.submit("m", False, PIXELS[i:i + 1], ["cat"], ["a {}."]) for i in range(2))
    store.claim("other-host:1:a", 2)
    store.finish(done.id, COMPLETE, result={"probabilities": [1.0]})
    time.sleep(0.3)  # the other host's lease on the second job lapses
    (job, pixels), = store.claim("h:2:b", 5)
    assert job.id == resumed.id and np.array_equal(pixels, PIXELS[1:2])
    with sqlite3.connect(store.path) as conn:
        assert [r[0] for r in conn.execute("SELECT id FROM job_inputs")] == [resumed.id]


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
    stores = [JobStore(path, retention_s=60, lease_s=5) for _ in range(2)]
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


def test_wait_until_final_sees_jobs_finished_by_another_process(store: JobStore) -> None:
    job = store.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
    other = JobStore(store.path, retention_s=60, lease_s=5)  # another gateway worker's handle on the same file
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
async def started_worker(store: JobStore, execute, concurrency: int):
    """A JobWorker whose runners are ready at once, yielded once it has started (dead workers' jobs released)."""
    async def ready() -> None:
        return None

    worker = JobWorker(store, execute, concurrency=concurrency, max_attempts=2, ready=ready, poll_s=0.05)
    worker.start()
    await asyncio.sleep(0.1)
    try:
        yield worker
    finally:
        await worker.stop()


def test_a_worker_with_a_free_slot_runs_what_it_accepts_and_queues_the_rest(store: JobStore) -> None:
    async def run() -> tuple[list[str], list[str], dict]:
        gate = asyncio.Event()

        async def execute(job, pixels):
            assert np.array_equal(pixels, PIXELS[:1])
            await gate.wait()
            return {"probabilities": [1.0]}

        async with started_worker(store, execute, concurrency=2) as worker:
            jobs = [await worker.submit("m", False, PIXELS[:1], ["cat"], ["a {}."]) for _ in range(3)]
            with sqlite3.connect(store.path) as conn:
                owners = [conn.execute("SELECT owner FROM jobs WHERE id = ?", (j.id,)).fetchone()[0] for j in jobs]
            gate.set()
            done = {j.id: (await wait_until_final(store, j.id, 5, worker)).status for j in jobs}
            return [j.status for j in jobs], owners, done

    statuses, owners, done = asyncio.run(run())
    assert statuses == [RUNNING, RUNNING, STARTING]  # two slots: the third waits in the queue
    assert owners[:2] == [owners[0]] * 2 and owners[0] and owners[2] is None
    assert set(done.values()) == {COMPLETE}


def _inputs(store: JobStore) -> int:
    with sqlite3.connect(store.path) as conn:
        return conn.execute("SELECT COUNT(*) FROM job_inputs").fetchone()[0]


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
def test_a_cancelled_running_job_is_not_run_again(tmp_path: Path, how: str) -> None:
    store = JobStore(tmp_path / "jobs.sqlite", retention_s=60, lease_s=0.2)
    store.init()
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
    JobStore(path, retention_s=60, lease_s=5).init()
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE jobs DROP COLUMN cancel_requested")
    store = JobStore(path, retention_s=60, lease_s=5)
    store.init()
    job = store.submit("m", False, PIXELS[:1], ["cat"], ["a {}."])
    assert store.cancel(job.id)[1].status == CANCELLED
