"""Integration fixtures: one real ``bentoml serve`` for the session, and helpers to load it."""

from __future__ import annotations

import asyncio
import time
import re

import httpx
import pytest

from tests.support.local_server import (  # noqa: F401  (the test modules import these from here)
    BENTOML,
    Server,
    kill_server,
    own_home,
    process_tree,
    start_server,
    stop_server,
)


def burst(server: Server, path: str, body: bytes, n: int) -> list[httpx.Response]:
    """Send ``n`` identical POSTs at once and return the responses in order."""

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            return await asyncio.gather(*(client.post(path, content=body) for _ in range(n)))

    return asyncio.run(run())


def batch_histogram(server: Server, service: str) -> tuple[float, float, float]:
    """(batches, images, batches of one image) run by ``service``'s batchable APIs, from the gateway's /metrics."""
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text

    def total(prefix: str) -> float:
        found = re.findall(prefix + rf'[^\n]*service_name="{service}"[^\n]*\}} ([0-9.e+]+)', metrics)
        return sum(float(v) for v in found)

    return (
        total(r"bentoml_service_adaptive_batch_size_count\{"),
        total(r"bentoml_service_adaptive_batch_size_sum\{"),
        total(r'bentoml_service_adaptive_batch_size_bucket\{le="1.0"'),
    )


@pytest.fixture(scope="session")
def server(species_dev_model, aesthetic_models, zero_shot_models, tmp_path_factory) -> Server:
    # One gateway worker whatever the caller's environment: counters (class_memo) are per worker.
    srv = start_server(tmp_path_factory.mktemp("serve") / "bentoml.log", env={"GATEWAY_WORKERS": "1"})
    yield srv
    stop_server(srv)


def poll_job(client: httpx.Client, path: str, timeout: float = 120) -> dict:
    """vitrivr's and FES's clients' loop: a GET every second until the job is complete; every answer must be 200
    with a status they know (starting, running, complete)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(path)
        assert response.status_code == 200, response.text
        job = response.json()
        assert job["status"] in ("starting", "running", "complete"), job
        if job["status"] == "complete":
            return job
        time.sleep(1)
    raise AssertionError(f"{path} not complete after {timeout} s")
