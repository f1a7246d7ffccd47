"""Zero-shot jobs shared by two real servers through one real PostgreSQL: races, a SIGKILLed replica, a database
restart, cancellation across replicas, and the job metrics on /metrics."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import encode, photo, postgres_server
from tests.integration.conftest import Server, kill_server, own_home, process_tree, start_server, stop_server

pytestmark = pytest.mark.integration

TASK = "/api/tasks/zero-shot-image-classification"
MODEL = "clip-vit-large-patch14"
CLASSES = ["cat", "cup", "rocket"]
CONCURRENCY = 4
URIS = [f"data:image/jpeg;base64,{base64.b64encode(encode(photo(n))).decode()}"
        for n in ("chelsea", "coffee", "astronaut", "rocket")]


@pytest.fixture(scope="module")
def pg():
    """A server of this module's own: one test stops and starts it."""
    server = postgres_server()
    yield server
    server.close()


def _env(pg, home: str) -> dict[str, str]:
    # Few jobs at a time per server and a 3 s lease: queues form, and a dead server's jobs move on quickly.
    return {"JOB_STORE_URL": pg.url, "JOB_CONCURRENCY": str(CONCURRENCY), "JOB_LEASE_S": "3", "GATEWAY_WORKERS": "1",
            "JOB_STORE_TIMEOUT_MS": "2000", "BENTOML_HOME": home}


@pytest.fixture(scope="module")
def servers(pg, species_dev_model, aesthetic_models, zero_shot_models, tmp_path_factory) -> dict[str, Server]:
    tmp = tmp_path_factory.mktemp("pg-servers")
    started: dict[str, Server] = {}
    try:
        for name in ("a", "b"):
            started[name] = start_server(tmp / f"{name}.log", _env(pg, own_home(tmp / f"home-{name}")))
        yield started
    finally:
        for server in started.values():
            stop_server(server)


def _db(pg, query: str, *params) -> list[tuple]:
    with psycopg.connect(pg.url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def _finished(server: Server) -> float:
    """Jobs this server's worker completed, from its /metrics."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r'vision_job_finished_total\{[^}]*status="complete"[^}]*\} ([0-9.e+]+)',
                                            text))


async def _submit(url: str, n: int, images: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        body = {"image": images, "classes": CLASSES}
        return await asyncio.gather(*(client.post(f"{TASK}/batched/{MODEL}/jobs", json=body) for _ in range(n)))


def _wait_all(server: Server, ids: list[str], timeout: float = 180) -> dict[str, dict]:
    deadline, done = time.monotonic() + timeout, {}
    with httpx.Client(base_url=server.url, timeout=40) as client:
        while len(done) < len(ids) and time.monotonic() < deadline:
            for job_id in ids:
                if job_id not in done:
                    job = client.get(f"{TASK}/jobs/{job_id}", params={"wait": 5}).json()
                    if job["status"] in ("complete", "failed", "cancelled"):
                        done[job_id] = job
    return done


def _valid(job: dict, images: int) -> bool:
    probs = job["result"]["probabilities"]
    return len(probs) == images and all(len(p) == len(CLASSES) and abs(sum(p) - 1) < 1e-5 for p in probs)


def test_two_servers_race_for_queued_jobs_and_run_each_exactly_once(pg, servers) -> None:
    a, b = servers["a"], servers["b"]
    before = {name: _finished(s) for name, s in servers.items()}
    responses = asyncio.run(_submit(a.url, 200, URIS[:1]))  # all to A: B hears of them through NOTIFY
    assert {r.status_code for r in responses} == {200}
    ids = [r.json()["id"] for r in responses]
    done = _wait_all(b, ids)  # every id readable from the other server too
    assert len(done) == 200 and {j["status"] for j in done.values()} == {"complete"}
    assert all(_valid(j, 1) for j in done.values())
    attempts = dict(_db(pg, "SELECT id, attempts FROM jobs WHERE id = ANY(%s)", ids))
    assert set(attempts.values()) == {1}  # no job ran twice
    ran = {name: _finished(s) - before[name] for name, s in servers.items()}
    assert ran["a"] + ran["b"] == 200 and ran["a"] > 0 and ran["b"] > 0, ran


def test_job_metrics_are_on_metrics(pg, servers) -> None:
    a = servers["a"]
    ids = [r.json()["id"] for r in asyncio.run(_submit(a.url, 2, URIS[:1]))]
    assert len(_wait_all(a, ids)) == 2
    time.sleep(6)  # the jobs-by-status gauge is refreshed from the store every 5 s
    text = httpx.get(f"{a.url}/metrics", timeout=10).text
    for name in ("vision_job_queue_wait_seconds_bucket", "vision_job_run_seconds_count", "vision_job_attempts_total",
                 'vision_jobs{status="starting"}'):
        assert name in text, name
    gauge = float(re.search(r'vision_jobs\{status="complete"\} ([0-9.e+]+)', text).group(1))
    assert gauge == _db(pg, "SELECT COUNT(*) FROM jobs WHERE status = 'complete'")[0][0]


def test_a_job_submitted_on_one_server_is_cancelled_on_the_other(servers) -> None:
    a, b = servers["a"], servers["b"]
    ids = [r.json()["id"] for r in asyncio.run(_submit(a.url, 24, URIS * 4))]  # enough work that some still wait
    statuses = [httpx.delete(f"{b.url}{TASK}/jobs/{job_id}", timeout=30) for job_id in ids]
    codes = [r.status_code for r in statuses]
    assert set(codes) <= {200, 202, 409} and 200 in codes, codes  # queued ones at once
    done = _wait_all(a, ids)
    for job_id, response in zip(ids, statuses):
        if response.status_code in (200, 202):
            assert done[job_id]["status"] == "cancelled" and "result" not in done[job_id]
    again = httpx.delete(f"{a.url}{TASK}/jobs/{ids[0]}", timeout=30)
    assert again.status_code == 409 and again.json()["error"] == "job_finished"


def test_a_database_restart_loses_no_accepted_job_and_answers_503_while_down(pg, servers) -> None:
    a, b = servers["a"], servers["b"]
    ids = [r.json()["id"] for r in asyncio.run(_submit(a.url, 30, URIS))]
    pg.stop()
    try:
        down = asyncio.run(_submit(b.url, 2, URIS[:1]))
        status = httpx.get(f"{a.url}{TASK}/jobs/{ids[-1]}", timeout=30)
        for response in (*down, status):
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "job_store_unavailable" and response.headers["Retry-After"]
        assert httpx.post(f"{a.url}/zero_shot", json={"model": MODEL, "image": URIS[0], "classes": CLASSES},
                          timeout=60).status_code == 200  # what needs no job store keeps working
    finally:
        pg.start()
    done = _wait_all(b, ids)
    assert len(done) == 30 and {j["status"] for j in done.values()} == {"complete"}
    assert all(_valid(j, len(URIS)) for j in done.values())
    after = asyncio.run(_submit(a.url, 1, URIS[:1]))  # both recovered without a restart
    assert after[0].status_code == 200 and _wait_all(a, [after[0].json()["id"]])


def test_a_sigkilled_server_leaves_its_jobs_to_the_other_and_picks_up_work_after_restart(pg, servers,
                                                                                         tmp_path: Path) -> None:
    a, b = servers["a"], servers["b"]
    images = URIS * 4  # 16 images a job: long enough to be caught running
    ids = [r.json()["id"] for r in asyncio.run(_submit(a.url, 40, images))]
    pids = {str(p.pid) for p in process_tree(a)}
    deadline, held = time.monotonic() + 60, []
    while not held and time.monotonic() < deadline:
        owners = _db(pg, "SELECT id, owner FROM jobs WHERE status = 'running' AND id = ANY(%s)", ids)
        held = [job_id for job_id, owner in owners if owner and owner.split(":")[1] in pids]
    kill_server(a)
    assert held, "server A never held a running job"
    done = _wait_all(b, ids)
    assert len(done) == 40 and {j["status"] for j in done.values()} == {"complete"}
    assert all(_valid(j, len(images)) for j in done.values())
    attempts = dict(_db(pg, "SELECT id, attempts FROM jobs WHERE id = ANY(%s)", ids))
    assert max(attempts.values()) <= 2  # only the jobs A was running ran again
    assert sum(n > 1 for n in attempts.values()) <= CONCURRENCY

    servers["a"] = again = start_server(tmp_path / "a-again.log", _env(pg, own_home(tmp_path / "home-a2")))
    more = [r.json()["id"] for r in asyncio.run(_submit(again.url, 4, URIS[:1]))]
    assert {j["status"] for j in _wait_all(again, more).values()} == {"complete"}
    assert _finished(again) >= 1  # the restarted server ran new work itself
