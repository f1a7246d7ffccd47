"""Accepted jobs are never lost: SIGKILL the whole server mid-flight, restart it, and every job completes."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import encode, photo
from tests.integration.conftest import kill_server, own_home, process_tree, start_server, stop_server

pytestmark = pytest.mark.integration

TASK = "/api/tasks/zero-shot-image-classification"


def test_jobs_survive_a_sigkill_and_complete_after_restart(
    species_dev_model, aesthetic_models, zero_shot_models, tmp_path: Path
) -> None:
    store = tmp_path / "jobs.sqlite"
    uris = [f"data:image/jpeg;base64,{base64.b64encode(encode(photo(n))).decode()}"
            for n in ("chelsea", "coffee", "astronaut", "rocket")] * 2
    body = {"image": uris, "classes": ["cat", "cup", "rocket"], "config": {"templates": ["a photo of a {}.", "a {}."]}}

    async def submit_all(url: str, n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            models = ("clip-vit-large-patch14", "open-clip-vit-b32")
            return await asyncio.gather(*(client.post(f"{TASK}/batched/{models[i % 2]}/jobs", json=body)
                                          for i in range(n)))

    # One job at a time, so a queue is still waiting when the server dies.
    home = own_home(tmp_path / "home")
    first = start_server(tmp_path / "first.log", {"JOB_STORE_PATH": str(store), "JOB_CONCURRENCY": "1", "BENTOML_HOME": home})
    try:
        responses = asyncio.run(submit_all(first.url, 24))
    finally:
        kill_server(first)
    assert [r.status_code for r in responses] == [200] * len(responses)
    accepted = [r.json()["id"] for r in responses]

    assert process_tree(first) == []
    with sqlite3.connect(store) as conn:
        left = dict(conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())
    assert sum(left.values()) == len(accepted)
    assert left.get("starting", 0) + left.get("running", 0) > 0, f"nothing was in flight at the kill: {left}"

    second = start_server(tmp_path / "second.log", {"JOB_STORE_PATH": str(store), "BENTOML_HOME": home})
    try:
        deadline, results = time.monotonic() + 180, {}
        while len(results) < len(accepted) and time.monotonic() < deadline:
            for job_id in accepted:
                if job_id not in results:
                    job = httpx.get(f"{second.url}{TASK}/jobs/{job_id}", timeout=10).json()
                    if job["status"] in ("complete", "failed"):
                        results[job_id] = job
            time.sleep(0.2)
    finally:
        stop_server(second)
    assert len(results) == len(accepted), f"{len(accepted) - len(results)} jobs never finished; at kill: {left}"
    assert {job["status"] for job in results.values()} == {"complete"}
    with sqlite3.connect(store) as conn:  # at most one claim per server: no attempt failed along the way
        assert conn.execute("SELECT MAX(attempts) FROM jobs").fetchone()[0] <= 2
    for job in results.values():
        probs = job["result"]["probabilities"]
        assert len(probs) == len(uris) and all(len(p) == 3 and abs(sum(p) - 1) < 1e-6 for p in probs)
